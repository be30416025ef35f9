"""Keys planted everywhere an agent can put them never come out anywhere agentprobe writes."""

from __future__ import annotations

import dataclasses
import json
import sys
import textwrap
import time
from pathlib import Path

import sqlite_utils

from agentprobe.capture.exchange import Capture
from agentprobe.capture.redact import REDACTED
from agentprobe.capture.rows import RowBuilder
from agentprobe.providers import detect

from otlp_receiver import Receiver
from proxy_fixtures import Recorded, run_cli

SECRETS = {
    "openai": "sk-proj-PLANTEDopenai0123456789abcdefXYZ",
    "anthropic": "sk-ant-api03-PLANTEDanthropic0123456789xyz",
    "azure": "azurePLANTEDheaderkey0123456789",
    "gemini": "AIzaPLANTEDgeminiQUERYkey0123456789abcdef",
    "gemini_header": "AIzaPLANTEDgeminiHEADERkey0123456789abcd",
    "body": "bodyPLANTEDapikey0123456789",
    "refused": "AIzaPLANTEDrefusedQUERYkey0123456789abcd",
}

AGENT = textwrap.dedent(
    """
    import json, os, socket, httpx2, openai, anthropic
    s = json.loads(os.environ["SECRETS"])
    url = os.environ["FAKE_URL"]
    oa = openai.OpenAI(base_url=url + "/v1", api_key=s["openai"], default_headers={"api-key": s["azure"]})
    oa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                               extra_body={"api_key": s["body"]})
    an = anthropic.Anthropic(base_url=url, api_key=s["anthropic"])
    an.messages.create(model="claude-haiku-4-5", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
    with httpx2.Client() as c:
        c.post(url + "/v1beta/models/gemini-2.5-flash:generateContent?key=" + s["gemini"],
               headers={"x-goog-api-key": s["gemini_header"]},
               json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
        sock = socket.socket(); sock.bind(("127.0.0.1", 0)); port = sock.getsockname()[1]; sock.close()
        try:
            c.post(f"http://127.0.0.1:{port}/v1beta/models/gemini-2.5-flash:generateContent?key=" + s["refused"],
                   json={"contents": []})
        except httpx2.HTTPError:
            pass
    """
)


def test_planted_keys_never_leave_through_any_output(tmp_path, tls_ca_bundle, fake_provider_tls):
    (tmp_path / "agent.py").write_text(AGENT)
    env = {"FAKE_URL": fake_provider_tls.url, "SECRETS": json.dumps(SECRETS),
           "AGENTPROBE_DB": str(tmp_path / "ap.db"), "AGENTPROBE_CONFDIR": str(tmp_path / "conf")}
    receiver = Receiver()
    try:
        traced = run_cli("trace", "--upstream-ca", tls_ca_bundle, "--otlp", receiver.url, "--",
                         sys.executable, str(tmp_path / "agent.py"), env=env)
        assert traced.returncode == 0, traced.stderr
        outputs = {"trace stdout": traced.stdout, "trace stderr": traced.stderr}
        for fmt in ("json", "har"):
            out = run_cli("export", "--format", fmt, env=env)
            assert out.returncode == 0, out.stderr
            outputs[f"export {fmt}"] = out.stdout
        out = run_cli("export", "--format", "otlp", "--endpoint", receiver.url, env=env)
        assert out.returncode == 0, out.stderr
        for args in (["calls", "--json"], ["runs", "--json"], ["scan", "--format", "json"],
                     ["scan", "--format", "sarif"], ["report", "-o", "-"]):
            out = run_cli(*args, env=env)
            assert out.returncode in (0, 1), (args, out.stderr)
            outputs[" ".join(args)] = out.stdout + out.stderr
        outputs["OTLP spans (live and exported)"] = json.dumps(receiver.posts)
    finally:
        receiver.server.shutdown()
    calls = json.loads(outputs["calls --json"])
    assert len(calls) == 4 and {c["provider"] for c in calls} >= {"anthropic", "gemini", "openai_compatible"}
    assert len(receiver.posts) >= 2  # both OTLP paths really sent something
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.suffix != ".py":
            outputs[str(path.relative_to(tmp_path))] = path.read_bytes().decode("latin-1")
    assert any(name.startswith("ap.db") for name in outputs)
    for name, text in outputs.items():
        for kind, secret in SECRETS.items():
            assert secret not in text, f"the {kind} key leaked into {name}"


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
