"""Keys planted everywhere an agent can put them never come out anywhere agentprobe writes."""

from __future__ import annotations

import base64
import dataclasses
import json
import random
import re
import string
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from urllib.parse import quote, unquote

import sqlite_utils


from agentprobe.capture.exchange import Capture
from agentprobe.capture.redact import REDACTED, SHAPES
from agentprobe.capture.rows import RowBuilder
from agentprobe.providers import detect

from otlp_receiver import Receiver
from proxy_fixtures import Recorded, run_cli

# Every planted value holds MARK, so one substring search finds any of them whole, in any output,
# and in its URL-encoded form (MARK is letters and digits); MARK_B64 are the base64 forms MARK takes
# inside the base64 of any text holding it, whatever its offset there.
MARK = "PLANTED42"
MARK_B64 = sorted({
    encode(b"\0" * offset + MARK.encode() + b"\0\0\0").decode()[4 * -(-offset // 3): 4 * ((offset + 9) // 3)]
    for offset in range(3) for encode in (base64.b64encode, base64.urlsafe_b64encode)})


class Plant:
    """Planted values, each unique and named by where it was put, so a leak says which one leaked."""

    def __init__(self) -> None:
        self.rng = random.Random(42)
        self.where: dict[str, str] = {}

    def _fill(self, n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
        return "".join(self.rng.choice(alphabet) for _ in range(n))

    def key(self, shape: str, place: str) -> str:
        t = MARK + self._fill(4, string.ascii_uppercase + string.digits)
        f = self._fill
        value = {
            "anthropic": lambda: f"sk-ant-api03-{t}{f(40)}",
            "openai_project": lambda: f"sk-proj-{t}{f(40)}",
            "openai": lambda: f"sk-{t}{f(32)}",
            "google": lambda: f"AIza{t}{f(26)}",
            "github": lambda: f"ghp_{t}{f(23)}",
            "github_fine_grained": lambda: f"github_pat_{t}{f(9)}_{f(59)}",
            "groq": lambda: f"gsk_{t}{f(39)}",
            "huggingface": lambda: f"hf_{t}{f(21)}",
            "aws_access_key_id": lambda: f"AKIA{t}{f(3, string.ascii_uppercase + string.digits)}",
            "slack": lambda: f"xoxb-{f(12, string.digits)}-{f(13, string.digits)}-{t}{f(11)}",
            "jwt": lambda: "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhZ2VudCJ9." + t + f(30),
            "pem_private_key": lambda: (f"-----BEGIN RSA PRIVATE KEY-----\nMIIEow{t}{f(50)}\n{f(64)}\n"
                                        "-----END RSA PRIVATE KEY-----"),
            "bearer": lambda: f"Bearer {t}{f(24)}",
        }[shape]()
        shape_re = next(s.regex for s in SHAPES if s.name == shape)
        assert re.fullmatch(shape_re, value), (shape, value)
        self.where[value] = f"{shape} key in {place}"
        return value

    def plain(self, place: str, short: bool = False) -> str:
        """A value of no known shape, for places its name alone must protect (a field, a header);
        a short one is shorter than any key, so that only a header's form can keep it out."""
        value = MARK + self._fill(3) if short else f"plain{MARK}{self._fill(12)}"
        self.where[value] = f"plain value in {place}"
        return value

    def every(self, place: str, *, headers: bool = False) -> list[str]:
        """One key of every shape (PEM blocks, being several lines, go nowhere a header value goes)."""
        return [self.key(s.name, f"{place}") for s in SHAPES if not (headers and s.name == "pem_private_key")]

    @staticmethod
    def ident(value: str) -> str:
        """The part of a planted value that survives any quoting: MARK and the characters after it."""
        at = value.index(MARK)
        return value[at:at + len(MARK) + 3]

    @staticmethod
    def answered(where: str) -> bool:
        """Whether the value was planted in an answer (or outside any request) rather than sent."""
        return any(w in where for w in ("answer", "error message", "record --upstream", "refused"))

    def b64(self, text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


DIALECTS = ("openai.chat", "openai.responses", "anthropic.messages", "gemini")


def plan_calls(plant: Plant) -> list[dict]:
    """What the agent sends, dialect by dialect: keys in every place a request can carry one, and
    answers that repeat keys whole, cut over 4-character deltas, in tool-call arguments and in errors."""
    calls = []
    for dialect in DIALECTS:
        auth = plant.key({"openai.chat": "openai_project", "openai.responses": "openai",
                          "anthropic.messages": "anthropic", "gemini": "google"}[dialect], f"{dialect} auth header")
        fields = {name: plant.plain(f"{dialect} body field {name}")
                  for name in ("api_key", "openai_api_key", "aws_secret_access_key", "github_token", "password")}
        fields["secret"] = {"value": plant.plain(f"{dialect} body field secret.value"), "rotated": True}
        fields["x_notes"] = plant.every(f"{dialect} an unnamed body field")
        history_args = {"user": "me", "api_key": plant.plain(f"{dialect} history tool args api_key"),
                        "password": plant.plain(f"{dialect} history tool args password"),
                        "keys": plant.every(f"{dialect} history tool args")}
        base = {
            "dialect": dialect,
            "key": auth,
            "prefix": "/gw/" + "/".join(quote(k, safe="") for k in plant.every(f"{dialect} path", headers=True)),
            "headers": {"X-Stainless-OS": plant.key("openai", f"{dialect} x-stainless-os"),
                        "X-Stainless-Helper": plant.plain(f"{dialect} x-stainless-helper", short=True),
                        "X-Stainless-Runtime-Version": plant.plain(f"{dialect} x-stainless-runtime-version", short=True),
                        "User-Agent": "my-agent/1.0 " + plant.plain(f"{dialect} user-agent", short=True),
                        "X-Request-Id": plant.plain(f"{dialect} x-request-id", short=True),
                        "api-key": plant.plain(f"{dialect} api-key header"),
                        "X-Gateway-Token": plant.plain(f"{dialect} x-gateway-token header", short=True),
                        **{f"x-agent-{i}": k for i, k in enumerate(plant.every(f"{dialect} custom header",
                                                                                 headers=True))}},
            "query": {"api_token": plant.plain(f"{dialect} api_token="),
                      "x-goog-api-key": plant.plain(f"{dialect} x-goog-api-key="),
                      **{f"q{i}": k for i, k in enumerate(plant.every(f"{dialect} query value"))}},
            "body": fields,
            "prompt": "Deploy with these: " + " ".join(plant.every(f"{dialect} prompt")),
            "history": history_args,
            "gemini_query_key": plant.key("google", "gemini key= query") if dialect == "gemini" else None,
        }
        # The model repeats the call's own credentials too: the auth key, and a header's key of no shape.
        own = f"{auth} {base['headers']['api-key']}"
        echo = own + " " + " ".join(plant.every(f"{dialect} echoed answer"))
        split = own + " " + " ".join(plant.every(f"{dialect} echoed answer, 4-character deltas"))
        calls.append({**base, "stream": False, "fake": f"reply_b64={plant.b64(echo)}"})
        calls.append({**base, "stream": True, "fake": f"reply_b64={plant.b64(split)};delta_chars=4"})
        for stream in (False, True):
            args = {"api_key": plant.plain(f"{dialect} answer tool args api_key (stream={stream})"),
                    "password": plant.plain(f"{dialect} answer tool args password (stream={stream})"),
                    "keys": plant.every(f"{dialect} answer tool args (stream={stream})")}
            calls.append({**base, "stream": stream, "tools": True, "history": None,
                          "fake": f"tool_calls=1;tool_args_b64={plant.b64(json.dumps(args))}"})
        message = f"Incorrect API key provided: {auth}; also " + " ".join(plant.every(f"{dialect} error message"))
        calls.append({**base, "stream": False, "fake": f"status=401;message_b64={plant.b64(message)}"})
        invalid = ('{"model": "m", "api_key": "%s", "messages": [{"role": "user", "content": "caf\xe9 %s"}],}'
                   % (plant.plain(f"{dialect} invalid JSON body api_key"),
                      " ".join(plant.every(f"{dialect} invalid JSON body")).replace("\n", "\\n")))
        calls.append({**base, "raw": base64.b64encode(invalid.encode("latin-1")).decode()})
    # A call the proxy cannot deliver: its error, not an answer, is what is recorded.
    calls.append({"dialect": "gemini", "refused": plant.key("google", "the key= query of a refused call")})
    return calls


AGENT = textwrap.dedent(
    """
    import base64, json, os, socket, sys, httpx2, openai, anthropic
    url = os.environ["FAKE_URL"]
    TOOLS = {"openai.chat": [{"type": "function", "function": {"name": "login", "parameters": {"type": "object"}}}],
             "openai.responses": [{"type": "function", "name": "login", "parameters": {"type": "object"}}],
             "anthropic.messages": [{"name": "login", "input_schema": {"type": "object"}}],
             "gemini": [{"functionDeclarations": [{"name": "login"}]}]}

    def messages(c):
        if c["dialect"] == "openai.chat":
            out = [{"role": "user", "content": c["prompt"]}]
            if c.get("history"):
                out += [{"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
                         "function": {"name": "login", "arguments": json.dumps(c["history"])}}]},
                        {"role": "tool", "tool_call_id": "c1", "content": "done"}]
            return out
        if c["dialect"] == "openai.responses":
            out = [{"role": "user", "content": c["prompt"]}]
            if c.get("history"):
                out += [{"type": "function_call", "call_id": "c1", "name": "login", "arguments": json.dumps(c["history"])},
                        {"type": "function_call_output", "call_id": "c1", "output": "done"}]
            return out
        if c["dialect"] == "anthropic.messages":
            out = [{"role": "user", "content": c["prompt"]}]
            if c.get("history"):
                out += [{"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "login",
                                                           "input": c["history"]}]},
                        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "done"}]}]
            return out
        out = [{"role": "user", "parts": [{"text": c["prompt"]}]}]
        if c.get("history"):
            out += [{"role": "model", "parts": [{"functionCall": {"name": "login", "args": c["history"]}}]},
                    {"role": "user", "parts": [{"functionResponse": {"name": "login", "response": {"content": "done"}}}]}]
        return out

    def run(c):
        if "refused" in c:
            sock = socket.socket(); sock.bind(("127.0.0.1", 0)); port = sock.getsockname()[1]; sock.close()
            with httpx2.Client() as h:
                h.post(f"http://127.0.0.1:{port}/v1beta/models/gemini-2.5-flash:generateContent?key={c['refused']}",
                       json={"contents": []})
            return
        d, fake, tools = c["dialect"], {"x-fake": c.get("fake", "")}, TOOLS[c["dialect"]] if c.get("tools") else None
        if "raw" in c:
            path = {"openai.chat": "/v1/chat/completions", "openai.responses": "/v1/responses",
                    "anthropic.messages": "/v1/messages", "gemini": "/v1beta/models/gemini-2.5-flash:generateContent"}[d]
            with httpx2.Client() as h:
                h.post(url + path, content=base64.b64decode(c["raw"]),
                       headers={"content-type": "application/json", "authorization": "Bearer " + c["key"]})
            return
        extra = {"extra_headers": fake, "extra_query": c["query"], "extra_body": c["body"]}
        if d.startswith("openai"):
            client = openai.OpenAI(base_url=url + c["prefix"] + "/v1", api_key=c["key"], default_headers=c["headers"],
                                   max_retries=0)
            if d == "openai.chat":
                r = client.chat.completions.create(model="gpt-4o-mini", messages=messages(c), stream=c["stream"],
                                                   **({"tools": tools} if tools else {}), **extra)
            else:
                r = client.responses.create(model="gpt-4.1", input=messages(c), stream=c["stream"],
                                            **({"tools": tools} if tools else {}), **extra)
        elif d == "anthropic.messages":
            client = anthropic.Anthropic(base_url=url + c["prefix"], api_key=c["key"], default_headers=c["headers"],
                                         max_retries=0)
            r = client.messages.create(model="claude-haiku-4-5", max_tokens=200, messages=messages(c),
                                       stream=c["stream"], **({"tools": tools} if tools else {}), **extra)
        else:
            method = "streamGenerateContent" if c["stream"] else "generateContent"
            query = {**c["query"], "key": c["gemini_query_key"], **({"alt": "sse"} if c["stream"] else {})}
            body = {"contents": messages(c), **c["body"], **({"tools": tools} if tools else {})}
            with httpx2.Client() as h:
                h.post(f"{url}{c['prefix']}/v1beta/models/gemini-2.5-flash:{method}", params=query, json=body,
                       headers={**c["headers"], **fake, "x-goog-api-key": c["key"]}).raise_for_status()
            return
        if c["stream"]:
            for _ in r:
                pass

    failed = 0
    for c in json.load(open(os.environ["PLAN"])):
        try:
            run(c)
        except Exception:  # the 401s and 400s are planned; a served replay may refuse a request
            failed += 1
    print(f"agent: {failed} calls failed", file=sys.stderr)
    """
)


def _joined_strings(body: str) -> list[str]:
    """Each JSON string place of a stored stream's events, its values joined in event order."""
    places: dict[tuple, list[str]] = {}

    def walk(value, path):
        if isinstance(value, str):
            places.setdefault(path, []).append(value)
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, path + (k,))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, path + (i,))

    stripped = body.lstrip()
    if stripped.startswith("["):
        events = json.loads(body)
    else:
        events = [json.loads(line.partition(":")[2]) for line in re.split(r"\r?\n", body)
                  if line.startswith("data:") and line.partition(":")[2].strip() != "[DONE]"]
    for event in events:
        walk(event, (event.get("type") if isinstance(event, dict) else None,))
    return ["".join(v) for v in places.values()]


def _leaks(outputs: dict[str, str], plant: Plant) -> list[str]:
    """Every place a planted value shows, one line each, the outputs with the fewest first."""
    found = []
    for name, text in sorted(outputs.items(), key=lambda item: item[1].count(MARK)):
        for needle in (MARK, *MARK_B64):
            at = text.find(needle)
            while at >= 0:
                around = text[max(0, at - 60):at + 60]
                which = next((w for v, w in plant.where.items() if v in text[max(0, at - 200):at + 200]), "?")
                found.append(f"{name}: {which}: ...{around!r}...")
                at = text.find(needle, at + 1)
    return found


def test_planted_keys_never_leave_through_any_output(tmp_path, tls_ca_bundle, fake_provider_tls):
    plant = Plant()
    calls = plan_calls(plant)
    (tmp_path / "agent.py").write_text(AGENT)
    (tmp_path / "plan.json").write_text(json.dumps(calls))
    env = {"FAKE_URL": fake_provider_tls.url, "PLAN": str(tmp_path / "plan.json"),
           "AGENTPROBE_DB": str(tmp_path / "ap.db"), "AGENTPROBE_CONFDIR": str(tmp_path / "conf")}
    outputs: dict[str, str] = {}

    def ran(name: str, result, ok=(0,)):
        assert result.returncode in ok, (name, result.stdout[-2000:], result.stderr[-2000:])
        outputs[f"{name} (stdout)"], outputs[f"{name} (stderr)"] = result.stdout, result.stderr
        return result

    def files(when: str):
        for path in tmp_path.rglob("*"):
            if path.is_file() and path.name not in ("agent.py", "plan.json"):
                outputs[f"{path.relative_to(tmp_path)} ({when})"] = path.read_bytes().decode("latin-1")

    # A connection held open (by another process) keeps the WAL and its index on disk: the last one
    # to close deletes them, and what the writer put there must be scanned too.
    ran("trace (a first, empty run)", run_cli("trace", "--", sys.executable, "-c", "pass", env=env))
    holder = subprocess.Popen([sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
                               "c.execute('SELECT count(*) FROM runs').fetchone(); sys.stdin.read()",
                               str(tmp_path / "ap.db")], stdin=subprocess.PIPE)
    receiver = Receiver()
    try:
        ran("trace", run_cli("trace", "--upstream-ca", tls_ca_bundle, "--otlp", receiver.url, "--",
                             sys.executable, str(tmp_path / "agent.py"), env=env, timeout=300))
        files("after the trace")
        assert (tmp_path / "ap.db-wal").exists() and (tmp_path / "ap.db-shm").exists()
        # The one-shot form: the prompt is stored in runs.command and printed answers repeat it. The key
        # it sends has no known shape (an Azure key, say): only knowing it is the call's own hides it.
        config = tmp_path / "agent_config.json"
        config.write_text(json.dumps({"model": "gpt-4o-mini", "provider": "openai",
                                      "environments": {"dev": {"temperature": 0}}}))
        own_key = plant.plain("trace --prompt's own OPENAI_API_KEY")
        prompt = f"{own_key} " + " ".join(plant.every("trace --prompt", headers=True))
        ran("trace --prompt", run_cli(
            "trace", "--upstream-ca", tls_ca_bundle, "--base-url", fake_provider_tls.url + "/v1",
            "--config", str(config), "--prompt", prompt, env={**env, "OPENAI_API_KEY": own_key}))
        ran("record --upstream", run_cli("record", "--port", "0", "--upstream",
                                          f"http://agent:{plant.plain('record --upstream password')}@127.0.0.1:9",
                                          env=env), ok=(2,))
        runs = json.loads(ran("runs", run_cli("runs", "--json", env=env)).stdout)
        assert len(runs) == 3  # the refused record started none
        traced = next(r["id"] for r in runs if "agent.py" in r["command"])
        # serve answers from the stored (scrubbed) bodies: every stream must still read to its end.
        sent_requests = fake_provider_tls.requests
        fake_provider_tls.stop()
        ran("trace --serve", run_cli("trace", "--serve", traced, "--", sys.executable, str(tmp_path / "agent.py"),
                                     env=env, timeout=300))
        runs = json.loads(ran("runs again", run_cli("runs", "--json", env=env)).stdout)
        for run in runs:
            rid = run["id"]
            for fmt in ("json", "har"):
                ran(f"export {rid} --format {fmt}", run_cli("export", rid, "--format", fmt, env=env))
            ran(f"export {rid} --format otlp", run_cli("export", rid, "--format", "otlp", "--endpoint", receiver.url,
                                                         env=env))
            ran(f"calls {rid}", run_cli("calls", "--run", rid, "--json", env=env))
            for fmt in ("json", "sarif"):
                # A run with no LLM call has nothing to scan: one line, exit 2 (and it too is read for leaks).
                ran(f"scan {rid} {fmt}", run_cli("scan", "--run", rid, "--format", fmt, env=env),
                    ok=(0, 1) if run["calls"] else (2,))
            ran(f"report {rid}", run_cli("report", rid, "-o", "-", env=env))
        ran("scan --all", run_cli("scan", "--all", "--json", env=env), ok=(0, 1))
        outputs["OTLP spans (live and exported)"] = json.dumps(receiver.posts)
    finally:
        receiver.server.shutdown()
    files("at the end")
    holder.communicate(timeout=30)

    db = sqlite_utils.Database(tmp_path / "ap.db")
    recorded = list(db.query("SELECT c.run_id, c.provider, c.api, c.stream, c.stream_complete, c.status, c.output_sha256, "
                             "b.content AS body FROM calls c LEFT JOIN bodies b ON b.id = c.response_body "
                             "ORDER BY c.run_id, c.seq"))
    mine = [c for c in recorded if c["run_id"] == traced]
    assert len(mine) == len(calls), "every planned call was recorded"
    assert sum(c["status"] == 401 for c in mine) == sum(c["status"] == 400 for c in mine) == len(DIALECTS)
    assert sum(c["status"] is None for c in mine) == 1  # the refused one
    # Every value planted in a request really went out in one (the answers' ones went base64'd in x-fake).
    saw = "\n".join(unquote(r["path"]) + json.dumps(r["headers"]) + r["body"].decode("latin-1")
                    for r in sent_requests)
    unsent = [w for v, w in plant.where.items() if not plant.answered(w) and plant.ident(v) not in saw]
    assert not unsent, unsent
    assert REDACTED in outputs["trace --prompt (stdout)"]  # the one-shot's answer repeated its prompt
    assert {c["provider"] for c in mine} == {"openai_compatible", "anthropic", "gemini"}
    assert len(receiver.posts) >= 2  # both OTLP paths really sent something
    # The stored streams read as streams: their parsers find the final event, `serve` replayed them
    # whole, and no string place of their events, joined across events, spells a planted value.
    streams = [c for c in mine if c["stream"] and c["status"] == 200]
    assert len(streams) == 2 * len(DIALECTS) and all(c["stream_complete"] == 1 for c in streams)
    serve_run = next(r["id"] for r in runs if r["parent_run_id"] == traced)
    served = [c for c in recorded if c["run_id"] == serve_run and c["stream"] and c["status"] == 200]
    assert sorted(c["output_sha256"] for c in served) == sorted(c["output_sha256"] for c in streams)
    assert all(c["stream_complete"] == 1 for c in served)
    for c in streams + served:
        body = c["body"].decode() if isinstance(c["body"], bytes) else c["body"]
        for joined in _joined_strings(body):
            outputs.setdefault("a stored stream, its events joined", "")
            outputs["a stored stream, its events joined"] += joined + "\n"
    leaks = _leaks(outputs, plant)
    where = {name: sum(line.startswith(name + ": ") for line in leaks) for name in outputs}
    assert not leaks, (f"{len(leaks)} planted values leaked, into: {({k: n for k, n in where.items() if n})}\n"
                       + "\n".join(leaks[:40]))


ECHOED = "sk-proj-ECHOEDbyTheModel0123456789abcdef"


def test_a_key_the_model_repeats_is_scrubbed_from_its_answer(tmp_path, tls_ca_bundle, fake_provider_tls):
    """The fake model starts its answer with the prompt's first words: here, a pasted key."""
    rec = Recorded(tmp_path, Path(tls_ca_bundle))
    try:
        client = rec.openai(fake_provider_tls)
        said = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"{ECHOED} is in my .env file"}])
        assert ECHOED in said.choices[0].message.content  # the agent still gets the answer as sent
        stream = client.chat.completions.create(
            model="gpt-4o-mini", stream=True, messages=[{"role": "user", "content": f"{ECHOED} again"}])
        assert ECHOED in "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    finally:
        rec.stop()
    calls = rec.calls()
    assert len(calls) == 2 and all(c["output_sha256"] for c in calls)
    outputs = [r["text"] for r in rec.db().query("SELECT text FROM prompts WHERE kind = 'output'")]
    assert len(outputs) == 2 and all("[REDACTED] " in text for text in outputs)
    for path in tmp_path.glob("agentprobe.db*"):
        assert ECHOED.encode() not in path.read_bytes(), f"the echoed key leaked into {path.name}"


def test_keys_in_answers_and_tool_arguments_are_scrubbed_like_the_body():
    answer = {"id": "chatcmpl-1", "model": "gpt-4o-mini", "choices": [{"index": 0, "finish_reason": "tool_calls",
              "message": {"role": "assistant", "content": f"Found {ECHOED}.", "tool_calls": [
                  {"id": "t1", "type": "function",
                   "function": {"name": "deploy", "arguments": json.dumps({"token": ECHOED, "env": "prod"})}}]}}],
              "usage": {"prompt_tokens": 9, "completion_tokens": 9}}
    error = {"error": {"type": "invalid_request_error", "message": f"Incorrect API key provided: {ECHOED}"}}
    for status, body in ((200, answer), (401, error)):
        request = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "go"}]}).encode()
        t = time.time()
        cap = Capture(seq=1, completion_seq=1, started_at=t, ended_at=t, method="POST", scheme="https",
                      host="api.openai.com", port=443, path="/v1/chat/completions",
                      request_headers=[("content-type", "application/json")], request_body=request,
                      dialect=detect("POST", "api.openai.com", "/v1/chat/completions", request), first_byte_at=t,
                      status=status, response_headers=[("content-type", "application/json")],
                      response_body=json.dumps(body).encode())
        rows = RowBuilder("run-1").build(cap)
        stored = json.dumps([rows.call, rows.bodies, rows.prompts], default=str)
        assert ECHOED not in stored
        assert REDACTED in stored
    assert json.loads(json.loads(RowBuilder("run-1").build(
        dataclasses.replace(cap, status=200, response_body=json.dumps(answer).encode())).call["tool_calls"])[0][
        "arguments"]) == {"token": REDACTED, "env": "prod"}


MCP_SECRETS = {
    "bearer": "mcpPLANTEDoauthTOKEN0123456789abcdef",
    "api_key_header": "mcpPLANTEDapiKEYheader0123456789",
    "session": "mcpPLANTEDsessionID0123456789abcdef",
    "param": "mcpPLANTEDparamHEADER0123456789abc",
    "argument": "mcpPLANTEDargumentFIELD0123456789",
    "echoed": "sk-proj-mcpPLANTEDechoedByTheTool0123456789",
    "stdio": "sk-proj-mcpPLANTEDstdioARGUMENT0123456789",
    "state": "mcpPLANTEDrequestSTATE0123456789abcd",
}

MCP_AGENT = textwrap.dedent(
    """
    import json, os, subprocess, sys, httpx2
    s = json.loads(os.environ["SECRETS"])
    url = os.environ["MCP_URL"]
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
    headers = {"accept": "application/json, text/event-stream", "mcp-protocol-version": "2026-07-28",
               "mcp-method": "tools/call", "mcp-name": "fast_lookup", "authorization": "Bearer " + s["bearer"],
               "x-api-key": s["api_key_header"], "mcp-session-id": s["session"], "mcp-param-token": s["param"]}
    with httpx2.Client() as c:
        for k, args in enumerate(({"city": s["echoed"]}, {"city": "Oslo", "api_key": s["argument"]})):
            c.post(url, headers=headers, json={"jsonrpc": "2.0", "id": k + 1, "method": "tools/call", "params": {
                "name": "fast_lookup", "arguments": args, "requestState": s["state"], "_meta": meta}})
    # A wrapped stdio server, its run in the same database.
    line = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "fast_lookup", "arguments": {"city": s["stdio"]}}}
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25",
            "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    proc = subprocess.Popen([sys.executable, "-m", "agentprobe", "mcp", "--", sys.executable, os.environ["SERVER"],
                             "stdio"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**os.environ,
                             "AGENTPROBE_RUN_ID": "", "AGENTPROBE_PROXY_URL": ""})
    proc.stdin.write((json.dumps(init) + "\\n").encode()); proc.stdin.flush(); proc.stdout.readline()
    proc.stdin.write((json.dumps(line) + "\\n").encode()); proc.stdin.flush(); proc.stdout.readline()
    proc.communicate(timeout=60)
    """
)


def test_planted_mcp_keys_never_leave(tmp_path):
    """Credentials in MCP headers (OAuth bearer, API key, session id, Mcp-Param-*), in tool arguments, in a
    tool's answer, in an opaque requestState and in a stdio server's arguments stay out of every output."""
    from mcp_servers import SERVER, start_server

    (tmp_path / "agent.py").write_text(MCP_AGENT)
    proc, port = start_server("http")
    env = {"MCP_URL": f"http://127.0.0.1:{port}/mcp", "SECRETS": json.dumps(MCP_SECRETS), "SERVER": SERVER,
           "AGENTPROBE_DB": str(tmp_path / "ap.db"), "AGENTPROBE_CONFDIR": str(tmp_path / "conf")}
    try:
        traced = run_cli("trace", "--", sys.executable, str(tmp_path / "agent.py"), env=env, timeout=180)
        assert traced.returncode == 0, traced.stderr
        outputs = {"trace stdout": traced.stdout, "trace stderr": traced.stderr}
        for args in (["calls", "--json"], ["runs", "--json"], ["scan", "--format", "json"], ["report", "-o", "-"],
                     ["export", "--format", "json"], ["export", "--format", "har"]):
            out = run_cli(*args, env=env)
            assert out.returncode in (0, 1), (args, out.stderr)
            outputs[" ".join(args)] = out.stdout + out.stderr
    finally:
        proc.terminate()
        proc.wait(10)
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.suffix != ".py":
            outputs[str(path.relative_to(tmp_path))] = path.read_bytes().decode("latin-1")
    db = sqlite_utils.Database(tmp_path / "ap.db")
    stored = [r["content"] for r in db.query("SELECT content FROM bodies")]
    assert sum(REDACTED in (c.decode() if isinstance(c, bytes) else c) for c in stored) >= 4
    assert [(r["mcp_transport"], r["mcp_method"]) for r in db.query("SELECT * FROM calls ORDER BY run_id, seq")] == [
        ("streamable_http", "tools/call"), ("streamable_http", "tools/call"),  # the trace's run
        ("stdio", "initialize"), ("stdio", "tools/call")]  # the wrapper's own (AGENTPROBE_RUN_ID set empty)
    for name, text in outputs.items():
        for kind, secret in MCP_SECRETS.items():
            assert secret not in text, f"the {kind} secret leaked into {name}"
