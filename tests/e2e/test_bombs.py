"""Decompression bombs: the agent gets every byte, the proxy stays small and responsive, the row says why.

The bombs are made here, from zeros (a few hundred KB that decode to a gigabyte), and sent by a
scripted upstream through a real `agentprobe record` process whose peak memory is read from /proc.
"""

from __future__ import annotations

import hashlib
import json
import re
import signal
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import brotli
import httpx2
import pytest
import sqlite_utils
import zstandard

from tcp_server import RawServer

GiB = 1 << 30


def _bomb(encoding: str, size: int) -> bytes:
    zeros = bytes(size)
    if encoding == "br":
        return brotli.compress(zeros, quality=1)
    if encoding == "zstd":
        return zstandard.ZstdCompressor(level=1).compress(zeros)
    packer = zlib.compressobj(1, zlib.DEFLATED, 31)
    return packer.compress(zeros) + packer.flush()


_BOMBS: dict = {}


def bomb(encoding: str) -> bytes:
    # gzip compresses zeros far more slowly than brotli or zstd: a quarter of the size is enough
    # to pass every cap.
    if encoding not in _BOMBS:
        _BOMBS[encoding] = _bomb(encoding, GiB // 4 if encoding == "gzip" else GiB)
    return _BOMBS[encoding]


def _peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


@pytest.fixture
def recorder(tmp_path):
    db = tmp_path / "a.db"
    proc = subprocess.Popen([sys.executable, "-m", "agentprobe", "record", "--port", "0", "--db", str(db),
                             "--confdir", str(tmp_path / "conf"), "--upstream-proxy", "none"],
                            stderr=subprocess.PIPE, text=True)
    url = re.search(r"on (http://[\d.:]+)", proc.stderr.readline()).group(1)
    # Warm the proxy (its first flow loads code and caches) before taking the baseline.
    warm = RawServer(lambda c: c.sendall(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n"))
    with httpx2.Client(proxy=url, trust_env=False) as client:
        client.get(warm.url)
    warm.close()
    time.sleep(0.5)
    yield url, proc, db
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)


def _stop(proc) -> str:
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    return err


@pytest.mark.parametrize("encoding, ctype", [("br", "application/json"), ("gzip", "application/json"),
                                             ("zstd", "text/event-stream"), ("br", "text/event-stream")])
def test_a_response_bomb_passes_whole_while_the_proxy_stays_small_and_responsive(recorder, encoding, ctype):
    url, proc, db = recorder
    body = bomb(encoding)
    head = (f"HTTP/1.1 200 OK\r\ncontent-type: {ctype}\r\ncontent-encoding: {encoding}\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode()
    upstream = RawServer(lambda c: c.sendall(head + body))
    quick = RawServer(lambda c: c.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                                          b"content-length: 2\r\nconnection: close\r\n\r\n{}"))
    baseline = _peak_rss_mb(proc.pid)
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": ctype != "application/json"}
    got = hashlib.sha256()
    elapsed: list[float] = []

    def unrelated_call():
        time.sleep(0.05)  # while the bomb is on its way
        start = time.monotonic()
        with httpx2.Client(proxy=url, trust_env=False, timeout=60) as other:
            assert other.post(f"{quick.url}/v1/chat/completions", json=chat).status_code == 200
        elapsed.append(time.monotonic() - start)

    side = threading.Thread(target=unrelated_call)
    side.start()
    with httpx2.Client(proxy=url, trust_env=False, timeout=120) as client:
        with client.stream("POST", f"{upstream.url}/v1/chat/completions", json=chat) as r:
            for piece in r.iter_raw():
                got.update(piece)
    side.join()
    assert got.hexdigest() == hashlib.sha256(body).hexdigest()  # every byte, as the upstream sent it
    assert _peak_rss_mb(proc.pid) - baseline < 100
    assert elapsed and elapsed[0] < 3, elapsed  # an unrelated call was not held up behind the bomb
    _stop(proc)
    calls = list(sqlite_utils.Database(db).query("SELECT * FROM calls WHERE api IS NOT NULL"))
    assert len(calls) == 2
    [row] = [c for c in calls if c["parse_error"]]
    assert row["status"] == 200 and "MiB" in row["parse_error"] and "decompression bomb" in row["parse_error"]
    assert row["error_type"] is None and row["stream_complete"] is None  # we stopped reading; the agent did not
    upstream.close()
    quick.close()


def test_a_request_bomb_is_forwarded_and_read_only_up_to_the_cap(recorder):
    url, proc, db = recorder
    answer = json.dumps({"id": "c1", "object": "chat.completion", "model": "m", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}).encode()
    upstream = RawServer(lambda c: c.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                                             b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(answer), answer)))
    body = bomb("br")
    with httpx2.Client(proxy=url, trust_env=False, timeout=60) as client:
        r = client.post(f"{upstream.url}/v1/chat/completions", content=body,
                        headers={"content-encoding": "br", "content-type": "application/json"})
    assert r.status_code == 200
    [sent] = upstream.requests
    assert sent.endswith(body)  # forwarded as sent, still compressed
    err = _stop(proc)
    [row] = sqlite_utils.Database(db).query("SELECT * FROM calls WHERE api IS NOT NULL")
    assert row["status"] == 200 and row["output_sha256"]  # the answer was still read
    assert "request: decoded body over 64 MiB" in row["parse_error"], row["parse_error"]
    assert "Traceback" not in err
    upstream.close()


def test_an_unknown_content_encoding_is_said_not_guessed(recorder):
    url, proc, db = recorder
    upstream = RawServer(lambda c: c.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                                             b"content-encoding: snappy\r\ncontent-length: 6\r\n"
                                             b"connection: close\r\n\r\n\x00\x01\x02xyz"))
    with httpx2.Client(proxy=url, trust_env=False, timeout=30) as client:
        with client.stream("POST", f"{upstream.url}/v1/chat/completions", json={"model": "m", "messages": []}) as r:
            assert b"".join(r.iter_raw()) == b"\x00\x01\x02xyz"
    _stop(proc)
    [row] = sqlite_utils.Database(db).query("SELECT * FROM calls WHERE api IS NOT NULL")
    assert row["error_type"] is None and "unsupported content-encoding 'snappy'" in row["parse_error"]
    upstream.close()
