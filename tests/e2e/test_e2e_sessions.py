"""Sessions: one `agentprobe record` splits its traffic into one run per agent session.

Real parts throughout: `agentprobe record` as its own process, the openai and anthropic SDKs and
curl over HTTPS through it, to the bundled fake provider, whose record of received headers
shows what reached the provider.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from proxy_fixtures import run_cli, wait_until

PLANTED_KEY = "sk-proj-SESSIONargvKEY0123456789abcdefghij"
TRACE_A = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACE_B = "0af7651916cd43dd8448eb211c80319c"


class Recorder:
    """`agentprobe record` in a subprocess, on a free port, recording into tmp/ap.db."""

    def __init__(self, tmp: Path, ca: str, *args: str) -> None:
        self.tmp = tmp
        self.env = {"AGENTPROBE_CONFDIR": str(tmp / "conf"), "AGENTPROBE_DB": str(tmp / "ap.db")}
        base = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        self.proc = subprocess.Popen([sys.executable, "-m", "agentprobe", "record", "--port", "0", "--upstream-ca", ca,
                                      "--label", "gateway", *args], env={**base, **self.env},
                                     stderr=subprocess.PIPE, text=True)
        self.first_line = self.proc.stderr.readline()
        while self.first_line.startswith("agentprobe: warning"):  # listening beyond loopback says so first
            self.first_line = self.proc.stderr.readline()
        m = re.search(r"on http://[\d.]+:(\d+)", self.first_line)
        assert m, self.first_line + self.proc.stderr.read()
        self.url = f"http://127.0.0.1:{m.group(1)}"
        self.bundle = str(tmp / "conf" / "agentprobe-ca-bundle.pem")
        self.stderr = ""

    def openai(self, provider, **kwargs):
        import openai

        http = openai.DefaultHttpxClient(proxy=self.url, verify=self.bundle, trust_env=False)
        return openai.OpenAI(base_url=f"{provider.url}/v1", api_key="sk-test-key-0123456789", http_client=http,
                             max_retries=0, **kwargs)

    def anthropic(self, provider, **kwargs):
        import anthropic

        http = anthropic.DefaultHttpxClient(proxy=self.url, verify=self.bundle, trust_env=False)
        return anthropic.Anthropic(base_url=provider.url, api_key="sk-ant-test-0123456789", http_client=http,
                                   max_retries=0, **kwargs)

    def curl(self, provider, *headers: str, model: str = "gpt-4o-mini") -> None:
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]})
        args = ["curl", "-sS", "--fail", "--proxy", self.url, "--cacert", self.bundle,
                "-H", "content-type: application/json", "-d", body]
        for h in headers:
            args += ["-H", h]
        r = subprocess.run([*args, f"{provider.url}/v1/chat/completions"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr

    def client_env(self) -> dict:
        """What `eval "$(agentprobe ca --env)"` gives an agent's shell."""
        base = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        return {**base, "HTTPS_PROXY": self.url, "SSL_CERT_FILE": self.bundle}

    def db(self) -> sqlite3.Connection:
        conn = sqlite3.connect(f"file:{self.tmp / 'ap.db'}?mode=ro", uri=True, timeout=5)
        conn.row_factory = sqlite3.Row
        return conn

    def runs(self) -> list[dict]:
        with self.db() as conn:
            return [dict(r) for r in conn.execute(
                "SELECT runs.*, (SELECT count(*) FROM calls WHERE run_id = runs.id) AS calls FROM runs ORDER BY id")]

    def sessions(self) -> list[dict]:
        """The session runs (not the recorder's own, which stands by for calls no session claims)."""
        return [r for r in self.runs() if r["session_key_by"] != "recorder"]

    def models(self, run_id: str) -> list[str]:
        with self.db() as conn:
            return [r[0] for r in conn.execute("SELECT model FROM calls WHERE run_id = ? ORDER BY seq", [run_id])]

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            _, err = self.proc.communicate(timeout=60)
            self.stderr = err
            assert self.proc.returncode == 0, err
        return self.stderr


@pytest.fixture
def start(tmp_path, tls_ca_bundle):
    started = []

    def go(*args: str) -> Recorder:
        rec = Recorder(tmp_path, tls_ca_bundle, *args)
        started.append(rec)
        return rec

    yield go
    for rec in started:
        if rec.proc.poll() is None:
            rec.proc.kill()
            rec.proc.wait()


def _no_agentprobe_headers(provider) -> None:
    assert provider.requests
    for sent in provider.requests:
        assert not [h for h in sent["headers"] if h.startswith("x-agentprobe")], sent["headers"]


def test_two_named_agents_interleaved_through_one_recorder(start, fake_provider_tls):
    rec = start()
    assert "a run per session" in rec.first_line
    agents = {
        "planner": ("team-a", rec.openai(fake_provider_tls, default_headers={
            "X-Agentprobe-Run": "planner", "X-Agentprobe-Label": "team-a"})),
        "coder": ("team-b", rec.anthropic(fake_provider_tls, default_headers={
            "x-agentprobe-run": "coder", "x-agentprobe-label": "team-b"})),
    }
    turn = threading.Barrier(2)

    def work(name):
        _, client = agents[name]
        for i in range(3):
            turn.wait(10)  # one call of each agent at a time: their calls interleave
            if name == "planner":
                client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"p{i}"}])
            else:
                client.messages.create(model="claude-sonnet-4-5", max_tokens=50,
                                       messages=[{"role": "user", "content": f"c{i}"}])

    threads = [threading.Thread(target=work, args=(n,)) for n in agents]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    err = rec.stop()
    _no_agentprobe_headers(fake_provider_tls)
    assert len(fake_provider_tls.requests) == 6
    runs = {r["session"]: r for r in rec.runs()}
    assert set(runs) == {"planner", "coder"}, runs  # the recorder's own run held nothing: not kept
    for name, (label, _) in agents.items():
        run = runs[name]
        assert run["session_key_by"] == "header" and run["label"] == label and run["calls"] == 3
        assert run["status"] == "completed" and run["ended_at"]
        assert run["client_pid"] == os.getpid() and run["client_address"] == "127.0.0.1"
    assert rec.models(runs["planner"]["id"]) == ["gpt-4o-mini"] * 3
    assert rec.models(runs["coder"]["id"]) == ["claude-sonnet-4-5"] * 3
    with rec.db() as conn:  # each run numbers its own calls, and the headers are not stored either
        assert [r[0] for r in conn.execute("SELECT seq FROM calls WHERE run_id = ? ORDER BY seq",
                                           [runs["coder"]["id"]])] == [1, 2, 3]
        stored = " ".join(r[0] or "" for r in conn.execute("SELECT request_headers FROM calls"))
        assert "agentprobe" not in stored.lower()
    assert "[team-a]" in err and "[team-b]" in err  # a summary per session run
    # scan and calls take a session's run as any run.
    scan = run_cli("scan", "--run", runs["coder"]["id"], "--json", env=rec.env)
    assert scan.returncode == 0, scan.stderr
    listed = json.loads(run_cli("calls", "--run", runs["planner"]["id"], "--json", env=rec.env).stdout)
    assert [c["model"] for c in listed] == ["gpt-4o-mini"] * 3


def test_traceparent_keys_one_run_per_trace_and_reaches_the_provider_unchanged(start, fake_provider_tls):
    rec = start()
    sent = []
    for i, trace in enumerate([TRACE_A, TRACE_B, TRACE_A, TRACE_B, TRACE_A]):
        header = f"00-{trace}-{i + 1:016x}-01"
        sent.append(header)
        rec.curl(fake_provider_tls, f"traceparent: {header}")  # a new curl process each time
    rec.stop()
    assert [r["headers"].get("traceparent") for r in fake_provider_tls.requests] == sent
    runs = {r["trace_id"]: r for r in rec.runs()}
    assert set(runs) == {TRACE_A, TRACE_B}
    assert runs[TRACE_A]["calls"] == 3 and runs[TRACE_B]["calls"] == 2
    assert {r["session_key_by"] for r in runs.values()} == {"traceparent"}
    assert all(r["label"] == "gateway" and r["session"] is None for r in runs.values())
    # `runs` shows the first 8 hex digits of each trace id.
    table = run_cli("runs", env={**rec.env, "COLUMNS": "250"}).stdout
    assert "trace" in table and TRACE_A[:8] in table and TRACE_B[:8] in table


AGENT = textwrap.dedent("""
    import sys, openai
    client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="sk-test-0123456789abcdef", max_retries=0)
    for i in range(int(sys.argv[2])):
        client.chat.completions.create(model=sys.argv[3], messages=[{"role": "user", "content": str(i)}])
    sys.stdin.read()  # stay alive until told
""")


def test_process_keying_one_run_per_client_process(start, fake_provider_tls, tmp_path):
    rec = start()
    script = tmp_path / "agent.py"
    script.write_text(AGENT)
    agents = []
    for n, model in ((2, "gpt-4o-mini"), (3, "gpt-4o")):
        agents.append(subprocess.Popen([sys.executable, str(script), fake_provider_tls.url, str(n), model,
                                        "--api-key", PLANTED_KEY], env=rec.client_env(), stdin=subprocess.PIPE))
    assert wait_until(lambda: len(fake_provider_tls.requests) == 5, 60)
    assert wait_until(lambda: sorted(r["calls"] for r in rec.sessions()) == [2, 3], 20), rec.runs()
    by_pid = {r["client_pid"]: r for r in rec.sessions()}
    for agent, (n, model) in zip(agents, ((2, "gpt-4o-mini"), (3, "gpt-4o"))):
        run = by_pid[agent.pid]
        assert run["session_key_by"] == "process" and run["calls"] == n and rec.models(run["id"]) == [model] * n
        assert str(script) in run["client_command"] and model in run["client_command"]
        assert "--api-key [REDACTED]" in run["client_command"] and PLANTED_KEY not in run["client_command"]
        assert run["status"] == "running"
    # A process's run ends when the process exits, while the recorder goes on.
    agents[0].communicate(b"", timeout=30)
    assert wait_until(lambda: {r["client_pid"]: r for r in rec.sessions()}[agents[0].pid]["status"] == "completed", 20)
    ended = {r["client_pid"]: r for r in rec.sessions()}
    assert ended[agents[0].pid]["ended_at"] and ended[agents[1].pid]["status"] == "running"
    agents[1].communicate(b"", timeout=30)
    err = rec.stop()
    assert PLANTED_KEY not in err
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("ap.db*"))
    assert PLANTED_KEY.encode() not in stored
    table = run_cli("runs", env={**rec.env, "COLUMNS": "300"}).stdout
    assert f"{agents[0].pid} " in table and "client" in table


def test_a_quiet_period_longer_than_run_idle_starts_a_new_run(start, fake_provider_tls):
    rec = start("--runs-by", "address", "--run-idle", "1s")
    assert "by address" in rec.first_line and "1s idle" in rec.first_line
    client = rec.openai(fake_provider_tls)
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "first"}])
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "second"}])
    assert wait_until(lambda: [r["status"] for r in rec.sessions()] == ["completed"], 10)  # ended while recording
    [first] = rec.sessions()
    assert first["ended_at"] and first["calls"] == 2 and first["session_key_by"] == "address"
    assert first["client_address"] == "127.0.0.1" and first["client_pid"] is None
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "after the pause"}])
    rec.stop()
    first_again, second = rec.runs()
    assert first_again["id"] == first["id"] and first_again["ended_at"] == first["ended_at"]
    assert second["calls"] == 1 and rec.models(second["id"]) == ["gpt-4o"]
    assert second["status"] == "completed" and second["ended_at"] > first["ended_at"]


@pytest.mark.parametrize("how", [("--no-trust-session-headers",), ("--host", "0.0.0.0", "--allow-remote")],
                         ids=["no-trust", "default-off-beyond-loopback"])
def test_untrusted_session_headers_are_stripped_and_ignored(start, fake_provider_tls, how):
    rec = start(*how)
    if "--host" in how:  # the default, off a loopback address: the recorder says so
        assert "headers ignored" in rec.first_line
    for name, label in (("a", "team-a"), ("b", "team-b")):
        client = rec.openai(fake_provider_tls, default_headers={"X-Agentprobe-Run": name,
                                                                "X-Agentprobe-Label": label})
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": name}])
    rec.stop()
    _no_agentprobe_headers(fake_provider_tls)
    [run] = rec.runs()  # both from this process: one run, by process, with the recorder's label
    assert run["session"] is None and run["label"] == "gateway" and run["calls"] == 2
    assert run["session_key_by"] == "process" and run["client_pid"] == os.getpid()


def test_runs_by_recorder_is_one_run_as_before(start, fake_provider_tls):
    rec = start("--runs-by", "recorder")
    assert re.search(r"recording run \S+ on", rec.first_line)
    rec.curl(fake_provider_tls, "X-Agentprobe-Run: ignored-here", f"traceparent: 00-{TRACE_A}-00f067aa0ba902b7-01")
    rec.curl(fake_provider_tls)
    rec.stop()
    _no_agentprobe_headers(fake_provider_tls)
    [run] = rec.runs()
    assert run["calls"] == 2 and run["session_key_by"] == "recorder" and run["command"] == "agentprobe record"


def test_trace_keeps_one_run_and_still_strips_the_headers(tmp_path, tls_ca_bundle, fake_provider_tls):
    env = {"AGENTPROBE_CONFDIR": str(tmp_path / "conf"), "AGENTPROBE_DB": str(tmp_path / "ap.db")}
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    shell = " && ".join(
        f"curl -sS --fail -H 'X-Agentprobe-Run: {name}' -H 'content-type: application/json' -d '{body}'"
        f" {fake_provider_tls.url}/v1/chat/completions >/dev/null" for name in ("one", "two"))
    r = run_cli("trace", "--upstream-ca", tls_ca_bundle, "--", "bash", "-c", shell, env=env)
    assert r.returncode == 0, r.stderr
    _no_agentprobe_headers(fake_provider_tls)
    [run] = json.loads(run_cli("runs", "--json", env=env).stdout)
    assert run["calls"] == 2 and run["session"] is None and run["session_key_by"] is None


@pytest.mark.parametrize("args, needle", [
    (("--runs-by", "bogus"), "--runs-by"),
    (("--run-idle", "soon"), "--run-idle"),
    (("--run-idle=-5m",), "--run-idle"),
    (("--runs-by", "header", "--no-trust-session-headers"), "--trust-session-headers"),
])
def test_bad_session_options_are_one_line(tmp_path, args, needle):
    env = {"AGENTPROBE_CONFDIR": str(tmp_path / "conf"), "AGENTPROBE_DB": str(tmp_path / "ap.db")}
    r = run_cli("record", "--port", "0", *args, env=env)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "ap.db").exists()


def _two_sessions(start, fake_provider_tls):
    """A recorder whose stderr is collected as it comes, and a client for each of two named sessions."""
    rec = start()
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(rec.proc.stderr), daemon=True)
    reader.start()
    clients = {name: rec.openai(fake_provider_tls, default_headers={"X-Agentprobe-Run": name})
               for name in ("alpha", "beta")}
    return rec, lines, reader, clients


def test_a_writer_killed_while_sessions_are_live_loses_nothing_uncounted(start, fake_provider_tls):
    """kill -9 of the writer with two named sessions live, and calls made while it is replaced: the
    replacement begins both runs again, every call lands in its own session's run, none is lost."""
    from e2e.test_writer_death import _writers_of

    rec, lines, reader, clients = _two_sessions(start, fake_provider_tls)

    def calls(n: int) -> None:
        for i in range(n):
            for name, client in clients.items():
                client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"{name}{i}"}])

    calls(5)
    assert wait_until(lambda: sum(r["calls"] for r in rec.sessions()) == 10, timeout=10)
    [writer] = _writers_of(rec.proc.pid)
    os.kill(writer, signal.SIGKILL)
    calls(5)  # while the writer is being replaced: these wait for the new one
    assert wait_until(lambda: any("restarted it" in line for line in lines), timeout=30), lines
    calls(5)  # and after
    rec.proc.send_signal(signal.SIGINT)
    assert rec.proc.wait(60) == 0
    reader.join(10)
    err = "".join(lines)
    assert "the writer process died (killed by signal 9); restarted it" in err, err
    sessions = {r["session"]: r for r in rec.sessions()}
    assert set(sessions) == {"alpha", "beta"}  # the same two runs went on: no third, no duplicate
    assert fake_provider_tls.count() == 30
    # Calls sent before the proxy noticed the death went down the dead writer's pipe: counted, on the
    # recorder's own run, exactly (a recorder run left with no call and no loss is dropped at the end).
    # The rest are rows of their own session's run.
    lost = sum(r["calls_lost"] or 0 for r in rec.runs() if r["session_key_by"] == "recorder")
    rows = sum(r["calls"] for r in rec.runs())
    assert rows + lost == 30, (rows, lost, err)
    assert all(10 <= r["calls"] <= 15 for r in sessions.values()), sessions  # before and after the restart
    # Said as it happens (down the dead pipe, or refused by it: a broken pipe), and in the recorder run's
    # summary in full.
    if lost:
        assert re.search(r"\d+ call record\(s\) lost (with it|so far: writer process unreachable)", err), err
        assert f"WARNING: {lost} call(s) could not be recorded" in err, err
    assert all(r["status"] == "degraded" and r["ended_at"] for r in sessions.values())  # a writer died in them


def test_calls_a_dead_writer_took_with_it_are_counted_on_their_own_session(start, fake_provider_tls):
    """The writer is stopped (SIGSTOP) while two sessions make calls, so they wait in its pipe, then
    killed: each session's run row counts the calls of its own that went down with it, exactly."""
    from e2e.test_writer_death import _writers_of

    rec, lines, reader, clients = _two_sessions(start, fake_provider_tls)

    def call(name: str, n: int) -> None:
        for i in range(n):
            clients[name].chat.completions.create(model="gpt-4o-mini",
                                                  messages=[{"role": "user", "content": f"{name} {i}"}])

    call("alpha", 3)
    call("beta", 3)
    assert wait_until(lambda: sum(r["calls"] for r in rec.sessions()) == 6, timeout=10)
    [writer] = _writers_of(rec.proc.pid)
    os.kill(writer, signal.SIGSTOP)
    call("alpha", 4)  # answered at once: the proxy never waits for its writer; these wait in the pipe
    call("beta", 2)
    time.sleep(0.5)  # the proxy's side lingers a few ms before it writes the pipe
    os.kill(writer, signal.SIGKILL)
    assert wait_until(lambda: any("restarted it" in line for line in lines), timeout=30), lines
    call("alpha", 1)
    call("beta", 1)
    rec.proc.send_signal(signal.SIGINT)
    assert rec.proc.wait(60) == 0
    reader.join(10)
    err = "".join(lines)
    assert fake_provider_tls.count() == 14
    sessions = {r["session"]: r for r in rec.sessions()}
    assert {name: (r["calls"], r["calls_lost"]) for name, r in sessions.items()} == {"alpha": (4, 4), "beta": (4, 2)}
    assert all(r["status"] == "degraded" for r in sessions.values())
    [own] = [r for r in rec.runs() if r["session_key_by"] == "recorder"]
    assert own["calls_lost"] == 6  # the recording's total, as before
    assert re.search(r"6 call record\(s\) lost with it \(4 of run \w{6} \(session alpha\), 2 of run \w{6}"
                     r" \(session beta\)\)", err), err


def test_sessions_recorded_into_postgresql(start, fake_provider_tls, pg_url):
    """A session-splitting recorder with --db postgresql://: each named session is a run in the team
    database, and stopping the recorder prints their summaries (no traceback, exit 0)."""
    from agentprobe.store.db import open_db

    rec = start("--db", pg_url)
    for name in ("alpha", "beta"):
        client = rec.openai(fake_provider_tls, default_headers={"X-Agentprobe-Run": name})
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": name}])
    err = rec.stop()
    assert "Traceback" not in err and err.count("agentprobe: run ") == 2, err
    db = open_db(pg_url)
    rows = db.execute("SELECT r.session, count(c.id) FROM runs r JOIN calls c ON c.run_id = r.id"
                      " GROUP BY r.session ORDER BY r.session").fetchall()
    assert [tuple(r) for r in rows] == [("alpha", 1), ("beta", 1)]
    assert fake_provider_tls.count() == 2
