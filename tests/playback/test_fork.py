"""`serve RUN --live-from N`: replay an incident up to call N from the recording, then go live from there."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from proxy_fixtures import run_cli

AGENT = textwrap.dedent(
    """
    import os, openai
    client = openai.OpenAI(base_url=os.environ["BASE"] + "/v1", api_key="sk-fork-0123456789abcdef", max_retries=0)
    messages = [{"role": "system", "content": "You plan trips."}]
    for i, ask in enumerate(["Where to?", "When?", "How long?", "Budget?", "Summary?"], 1):
        messages.append({"role": "user", "content": ask})
        if i == 2:  # a stream in the recorded part, served back event by event
            text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
                model="gpt-4o-mini", messages=messages, temperature=0.7, stream=True) if c.choices)
        else:
            text = client.chat.completions.create(model="gpt-4o-mini", messages=messages,
                                                  temperature=0.7).choices[0].message.content
        print(f"{i}: {text}")
        messages.append({"role": "assistant", "content": text})
    """
)


@pytest.fixture
def incident(tmp_path, tls_ca_bundle, fake_provider_tls):
    (tmp_path / "agent.py").write_text(AGENT)
    env = {"AGENTPROBE_DB": str(tmp_path / "ap.db"), "AGENTPROBE_CONFDIR": str(tmp_path / "conf")}
    r = run_cli("trace", "--upstream-ca", tls_ca_bundle, "--", sys.executable, str(tmp_path / "agent.py"),
                env={**env, "BASE": fake_provider_tls.url})
    assert r.returncode == 0, r.stderr
    run_id = json.loads(run_cli("runs", "--json", env=env).stdout)[0]["id"]
    fake_provider_tls.clear()
    return tmp_path, env, run_id, r.stdout


def _serve(args, env):
    base = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    proc = subprocess.Popen([sys.executable, "-m", "agentprobe", "serve", *args, "--port", "0"],
                            env={**base, **env}, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    match = re.search(r"on (http://[\d.:]+)", line)
    if not match:
        proc.kill()
        raise AssertionError(line + proc.stderr.read())
    return proc, match.group(1)


def _stop(proc) -> str:
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return err


def test_fork_at_call_3_answers_1_2_from_the_recording_and_sends_3_to_5_live(incident, fake_provider_tls,
                                                                             tls_ca_bundle):
    tmp, env, run_id, original = incident
    proc, url = _serve([run_id, "--live-from", "3", "--model", "gpt-4.1", "--set", "temperature=0",
                        "--upstream-ca", tls_ca_bundle], env)
    try:
        agent = subprocess.run([sys.executable, str(tmp / "agent.py")], capture_output=True, text=True, timeout=120,
                               env={**{k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")},
                                    "BASE": url})
    finally:
        err = _stop(proc)
    assert agent.returncode == 0, agent.stderr
    assert agent.stdout.splitlines()[:2] == original.splitlines()[:2]  # the recording's own answers, stream too
    # Calls 3-5 reached the provider, with the model and temperature overridden; 1-2 never did.
    sent = [json.loads(r["body"]) for r in fake_provider_tls.requests]
    assert len(sent) == 3
    assert {b["model"] for b in sent} == {"gpt-4.1"} and {b["temperature"] for b in sent} == {0}
    assert [m["content"] for m in sent[0]["messages"] if m["role"] == "user"] == ["Where to?", "When?", "How long?"]
    assert "2 matched the recording exactly" in err and "3 sent live" in err and "live from request 3" in err
    runs = json.loads(run_cli("runs", "--json", env=env).stdout)
    fork = runs[0]
    assert fork["label"] == "fork" and fork["parent_run_id"] == run_id
    calls = json.loads(run_cli("calls", "--run", fork["id"], "--json", env=env).stdout)
    assert [c["model"] for c in calls] == ["gpt-4o-mini", "gpt-4o-mini", "gpt-4.1", "gpt-4.1", "gpt-4.1"]
    assert calls[1]["stream"] == 1 and calls[1]["stream_complete"] == 1
    # diff against the original shows where the fork went.
    d = run_cli("diff", run_id, fork["id"], "--json", env=env)
    assert d.returncode == 1
    divergence = json.loads(d.stdout)["divergence"]
    assert divergence["kind"] == "config_change" and divergence["b"]["seq"] == 3
    assert {"model", "temperature"} <= {f["field"] for f in divergence["fields"]}


def test_the_served_stream_keeps_its_recorded_chunking(incident):
    """At the serve backend, each recorded SSE event is one HTTP chunk, as the provider sent them."""
    import sqlite_utils

    from agentprobe.playback.serve import ServeServer, events, load_recorded

    tmp, env, run_id, _ = incident
    recorded = load_recorded(sqlite_utils.Database(env["AGENTPROBE_DB"]), run_id)
    stream = next(r for r in recorded if r.stream)
    server = ServeServer(recorded).start()
    try:
        body = stream.request.encode()
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                      b"content-length: %d\r\n\r\n%s" % (len(body), body))
            f = s.makefile("rb")
            while f.readline() not in (b"\r\n", b""):
                pass
            chunks = []
            while True:
                size = int(f.readline().strip(), 16)
                if size == 0:
                    break
                chunks.append(f.read(size))
                f.readline()
    finally:
        server.stop()
    assert chunks == events(stream.body) and len(chunks) > 3


@pytest.mark.parametrize("args,message", [
    (["NOPE", "--live-from", "3"], "no run"),
    (["latest", "--live-from", "0"], "--live-from"),
    (["latest", "--model", "gpt-4.1"], "give --live-from N as well"),
    (["latest", "--live-from", "2", "--set", "temperature"], "bad --set"),
    (["latest", "--live-from", "2", "--base-url", "ftp://x"], "--base-url"),
])
def test_bad_fork_input_is_one_line(incident, args, message):
    _, env, _, _ = incident
    r = run_cli("serve", *args, "--port", "0", env=env)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
