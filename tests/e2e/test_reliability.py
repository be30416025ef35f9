"""Under provider faults, client faults and proxy faults: traffic flows, nothing is lost silently."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx2
import openai
import pytest

from proxy_fixtures import Recorded, fill, run_cli, wait_until
from tcp_server import RawServer


def _reset(conn: socket.socket) -> None:
    # SO_LINGER 0 turns close() into a TCP RST: a reset, not a clean end.
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


def _json_head(length: int, ctype: bytes = b"application/json") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: " + ctype + b"\r\ncontent-length: " + str(length).encode() + b"\r\n\r\n"


FAULTS = {
    "reset_mid_body": lambda c: (c.sendall(_json_head(500) + b'{"id": "x", "choi'), _reset(c)),
    "invalid_json": lambda c: c.sendall(_json_head(9) + b"{not json"),
    "empty_200": lambda c: c.sendall(_json_head(0)),
    "malformed_sse": lambda c: c.sendall(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
        b"data: {broken\n\ndata: [DONE]\n\n"),
}


def _post(client: httpx2.Client, url: str):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    try:
        r = client.post(f"{url}/v1/chat/completions", json=body)
        return ("ok", r.status_code, r.content)
    except httpx2.HTTPError as e:
        return ("error", type(e).__name__, None)


def _direct_then_proxied(handler, recorded, timeout: float):
    """What the agent gets from a raw server directly, then through the proxy."""
    server = RawServer(handler)
    try:
        with httpx2.Client(trust_env=False, timeout=timeout) as direct:
            expected = _post(direct, server.url)
        with httpx2.Client(proxy=recorded.url, trust_env=False, timeout=timeout) as via:
            got = _post(via, server.url)
    finally:
        server.close()
    return expected, got


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_provider_faults_reach_the_agent_as_they_would_directly(fault, recorded):
    expected, got = _direct_then_proxied(FAULTS[fault], recorded, timeout=10)
    assert got[0] == expected[0], (got, expected)
    if expected[0] == "ok":
        assert got[1:] == expected[1:]  # same status, same bytes
    [call] = recorded.calls()
    assert call["api"] == "chat.completions", call
    kinds = {
        "reset_mid_body": lambda c: c["error_type"] == "stream_cut",
        "invalid_json": lambda c: c["status"] == 200 and c["parse_error"],
        "empty_200": lambda c: c["status"] == 200 and c["error_type"] == "empty_response",
        "malformed_sse": lambda c: c["stream_complete"] == 1 and c["status"] == 200,
    }
    assert kinds[fault](call), call


def _chunked_sse(conn: socket.socket, events: list[bytes], tail: bytes = b"0\r\n\r\n") -> None:
    # Every event its own chunk, all in one write: the proxy reads dozens of chunks at once.
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                 + b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + tail)


def _word_events(n: int) -> list[bytes]:
    words = [b'data: {"id": "b", "choices": [{"index": 0, "delta": {"content": "w%d "}}]}\n\n' % i for i in range(n)]
    return [*words,
            b'data: {"id": "b", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\n',
            b'data: {"id": "b", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": %d}}\n\n' % n,
            b"data: [DONE]\n\n"]


def test_a_burst_of_chunks_reaches_the_agent_byte_for_byte_and_is_recorded_whole(recorded):
    expected, got = _direct_then_proxied(lambda c: _chunked_sse(c, _word_events(400)), recorded, timeout=10)
    assert expected[0] == "ok" and got == expected
    assert expected[2].count(b"data: ") == 403
    [call] = recorded.calls()
    assert call["stream_complete"] == 1 and call["finish_reason"] == "stop" and call["output_tokens"] == 400, call


def test_a_malformed_chunk_after_good_ones_ends_the_stream_as_it_would_directly(recorded):
    expected, got = _direct_then_proxied(lambda c: _chunked_sse(c, _word_events(50)[:20], tail=b"zz\r\n"),
                                         recorded, timeout=10)
    assert expected[0] == "error" and got[0] == "error", (expected, got)
    [call] = recorded.calls()
    assert call["stream_complete"] == 0 and call["status"] == 200, call


def _stall(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n"
                 b'data: {"id": "s", "choices": [{"index": 0, "delta": {"content": "Hel"}}]}\n\n')
    time.sleep(4)  # then nothing: the stream stalls past the agent's read timeout


def test_stalled_stream_times_out_at_the_agent_as_it_would_directly(recorded):
    expected, got = _direct_then_proxied(_stall, recorded, timeout=1.5)
    assert expected == ("error", "ReadTimeout", None) and got == expected
    [call] = recorded.calls()
    assert call["stream_complete"] == 0 and call["status"] == 200
    assert call["error_type"] in ("client_disconnected", "stream_cut"), call


def test_error_object_inside_a_200(recorded, fake_provider_tls):
    client = recorded.openai(fake_provider_tls, max_retries=0)
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                   extra_headers={"x-fake": "error_in_200=1"})
    [call] = recorded.calls()
    assert call["status"] == 200 and call["error_type"] and call["finish_reason"] == "error"


def test_huge_response_and_request_bodies_pass_and_are_capped(recorded, fake_provider_tls):
    client = recorded.openai(fake_provider_tls)
    big_prompt = "lorem ipsum " * 400_000  # ~4.8 MB request
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": big_prompt}],
                                           extra_headers={"x-fake": "body_kb=8000"})
    assert len(reply.choices[0].message.content) > 7_000_000
    [call] = recorded.calls()
    assert call["output_tokens"] > 0 and call["status"] == 200
    sizes = recorded.db().execute("SELECT size, length(content), truncated FROM bodies").fetchall()
    assert all(stored <= 2 * 1024 * 1024 for _, stored, _ in sizes)
    assert all(t == 1 for size, _, t in sizes if size > 2 * 1024 * 1024)


def test_stream_larger_than_the_kept_body_is_still_parsed_whole(recorded, fake_provider_tls):
    # Past the 2 MB kept for the DB the tee has to parse as bytes pass; the row must not notice.
    client = recorded.openai(fake_provider_tls)
    stream = client.chat.completions.create(model="gpt-4o-mini", stream=True,
                                            stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": "long"}],
                                            extra_headers={"x-fake": "words=15000"})
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    [call] = recorded.calls()
    body = recorded.db().execute(
        "SELECT size, truncated FROM bodies WHERE id = ?", [call["response_body"]]).fetchone()
    assert body[1] == 1  # cut at the limit, so the parse had to happen as the stream passed
    assert call["stream_complete"] == 1 and call["finish_reason"] == "stop"
    assert call["output_tokens"] and call["output_tokens"] >= 15000
    from agentprobe.util.hashing import sha256_text
    assert call["output_sha256"] == sha256_text(text)


def test_slow_drip_stream_is_forwarded_as_it_drips(recorded, fake_provider_tls):
    client = recorded.openai(fake_provider_tls)
    arrivals = []
    stream = client.chat.completions.create(model="m", stream=True, messages=[{"role": "user", "content": "x"}],
                                            extra_headers={"x-fake": "words=8; chunk_delay=0.15"})
    start = time.monotonic()
    for chunk in stream:
        arrivals.append(time.monotonic() - start)
    # Not buffered: the first event arrives long before the last one.
    assert arrivals[-1] - arrivals[0] > 0.8
    assert arrivals[1] < 0.6
    [call] = recorded.calls()
    assert call["stream_complete"] == 1 and call["ttft_ms"] < call["latency_ms"] - 500


def test_db_locked_traffic_flows_and_loss_is_counted(tmp_path, tls_ca_bundle, fake_provider_tls):
    rec = Recorded(tmp_path, Path(tls_ca_bundle), busy_timeout_ms=100)
    locker = sqlite3.connect(rec.db_path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        client = rec.openai(fake_provider_tls)
        started = time.monotonic()
        for i in range(3):
            reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"q{i}"}])
            assert reply.choices[0].message.content  # the agent is not held up by our lock
        assert time.monotonic() - started < 5
        deadline = time.monotonic() + 10
        while rec.recording.writer.calls_lost < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    rec.stop()
    run = sqlite3.connect(rec.db_path).execute("SELECT calls_lost FROM runs").fetchone()
    assert run[0] == 3
    out = run_cli("runs", "--json", "--db", str(rec.db_path))
    assert json.loads(out.stdout)[0]["calls_lost"] == 3


def test_disk_full_traffic_flows_and_loss_is_counted(small_disk, tls_ca_bundle, fake_provider_tls):
    # A real full disk: the database lives on a 4 MB tmpfs that a filler file then fills up.
    rec = Recorded(small_disk, Path(tls_ca_bundle))
    client = rec.openai(fake_provider_tls)
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "before"}])
    assert wait_until(lambda: rec.recording.writer.calls_written == 1)
    fill(small_disk)
    for i in range(2):
        reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x" * 200_000 + str(i)}])
        assert reply.choices[0].message.content  # the agent is not held up by our full disk
    rec.stop()
    assert rec.recording.writer.calls_written + rec.recording.writer.calls_lost == 3
    assert rec.recording.writer.calls_lost >= 1
    (small_disk / "filler").unlink()
    db = sqlite3.connect(rec.db_path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    lost, status = db.execute("SELECT calls_lost, status FROM runs").fetchone()
    assert lost == rec.recording.writer.calls_lost and status is not None


def test_two_record_processes_share_one_db(tmp_path, tls_ca_bundle, fake_provider_tls):
    import re

    from agentprobe.proxy.ca import bundle_path

    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(AGENTPROBE_DB=str(tmp_path / "shared.db"), AGENTPROBE_CONFDIR=str(tmp_path / "conf"))
    procs, urls = [], []
    for _ in range(2):
        proc = subprocess.Popen([sys.executable, "-m", "agentprobe", "record", "--port", "0", "--upstream-ca",
                                 tls_ca_bundle], env=env, stderr=subprocess.PIPE, text=True)
        urls.append(re.search(r"on (http://[\d.:]+)", proc.stderr.readline()).group(1))
        procs.append(proc)
    trust = ssl.create_default_context(cafile=str(bundle_path(tmp_path / "conf")))

    def agent(url):
        client = openai.OpenAI(base_url=f"{fake_provider_tls.url}/v1", api_key="sk-x-0123456789abcdef",
                               http_client=openai.DefaultHttpxClient(proxy=url, verify=trust, trust_env=False))
        for i in range(20):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": str(i)}])

    try:
        threads = [threading.Thread(target=agent, args=(u,)) for u in urls]
        [t.start() for t in threads]
        [t.join() for t in threads]
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        for proc in procs:
            proc.communicate(timeout=30)
    assert [p.returncode for p in procs] == [0, 0]
    conn = sqlite3.connect(tmp_path / "shared.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    counts = conn.execute("SELECT run_id, count(*) FROM calls GROUP BY run_id").fetchall()
    assert sorted(n for _, n in counts) == [20, 20]
    assert conn.execute("SELECT sum(calls_lost) FROM runs").fetchone()[0] == 0


KILL_AGENT = """
import os, sys, threading, time, openai
client = openai.OpenAI(base_url=os.environ["FAKE_URL"] + "/v1", api_key="sk-kill-0123456789abcdef", max_retries=0)
def one(i, delay):
    try:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"c{i}"}],
                                       extra_headers={"x-fake": f"delay={delay}"})
        print(f"done {i} {time.time()}", flush=True)
    except Exception:
        pass
# 8 quick calls that finish well before the kill, 8 slow ones still in flight when it comes.
threads = [threading.Thread(target=one, args=(i, 0.05 if i < 8 else 30)) for i in range(16)]
[t.start() for t in threads]
[t.join() for t in threads]
"""


def test_kill_9_during_concurrent_calls_keeps_what_completed(tmp_path, tls_ca_bundle, fake_provider_tls):
    (tmp_path / "agent.py").write_text(KILL_AGENT)
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(FAKE_URL=fake_provider_tls.url, AGENTPROBE_DB=str(tmp_path / "ap.db"),
               AGENTPROBE_CONFDIR=str(tmp_path / "conf"))
    proc = subprocess.Popen([sys.executable, "-m", "agentprobe", "trace", "--upstream-ca", tls_ca_bundle, "--",
                             sys.executable, str(tmp_path / "agent.py")], env=env, stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    done = []
    while len(done) < 8:
        line = proc.stdout.readline()
        assert line, "agent ended early"
        done.append(line)
    time.sleep(1.2)  # every completed call is durable within 1 s
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    conn = sqlite3.connect(tmp_path / "ap.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT count(*) FROM calls WHERE status = 200").fetchone()[0] == 8
    # The killed run still reads as a run, just never marked finished.
    assert conn.execute("SELECT status FROM runs").fetchone()[0] == "running"
    assert run_cli("calls", "--json", env=env).returncode == 0


def test_writer_outlives_a_killed_proxy_and_marks_the_run_interrupted(tmp_path, tls_ca_bundle, fake_provider_tls):
    import re

    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(AGENTPROBE_DB=str(tmp_path / "ap.db"), AGENTPROBE_CONFDIR=str(tmp_path / "conf"))
    proc = subprocess.Popen([sys.executable, "-m", "agentprobe", "record", "--port", "0",
                             "--upstream-ca", tls_ca_bundle], env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = re.search(r"on (http://[\d.:]+)", proc.stderr.readline()).group(1)
        ctx = ssl.create_default_context(cafile=str(tmp_path / "conf" / "agentprobe-ca-bundle.pem"))
        client = openai.OpenAI(base_url=f"{fake_provider_tls.url}/v1", api_key="sk-kill-0123456789abcdef",
                               http_client=openai.DefaultHttpxClient(proxy=url, verify=ctx, trust_env=False))
        for i in range(5):
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"q{i}"}])
        time.sleep(0.2)  # handed to the writer process, not necessarily written
    finally:
        proc.kill()  # the proxy alone: SIGKILL leaves no chance to flush or mark the run
        proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    status = None
    while time.monotonic() < deadline and status != "interrupted":
        time.sleep(0.1)
        status = sqlite3.connect(tmp_path / "ap.db").execute("SELECT status FROM runs").fetchone()[0]
    conn = sqlite3.connect(tmp_path / "ap.db")
    assert status == "interrupted"
    assert conn.execute("SELECT count(*) FROM calls WHERE status = 200").fetchone()[0] == 5
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_disk_that_fills_under_load_loses_nothing_uncounted_and_stops_promptly(small_disk, tls_ca_bundle,
                                                                                fake_provider_tls):
    rec = Recorded(small_disk, Path(tls_ca_bundle))
    client = rec.openai(fake_provider_tls, max_retries=0)
    answered = []
    lock = threading.Lock()

    def agent(n):
        for i in range(25):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"{n}-{i} " + "x" * 5000}])
            with lock:
                answered.append(1)
            if n == 0 and i == 5:
                fill(small_disk)  # the disk fills while 8 agents are mid-run

    threads = [threading.Thread(target=agent, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    started = time.monotonic()
    rec.stop()
    stop_s = time.monotonic() - started
    assert stop_s < 15, f"stopping took {stop_s:.1f} s on a full disk"
    writer = rec.recording.writer
    (small_disk / "filler").unlink()
    db = sqlite3.connect(rec.db_path)
    rows = db.execute("SELECT count(*) FROM calls").fetchone()[0]
    lost, status = db.execute("SELECT calls_lost, status FROM runs").fetchone()
    assert len(answered) == fake_provider_tls.count() == 200
    assert rows + lost == 200, (rows, lost, writer.calls_written, writer.calls_lost)
    assert lost > 0 and status in ("completed", "degraded")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
