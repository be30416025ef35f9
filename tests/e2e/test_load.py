"""Many concurrent streams: none lost, none mixed up with another."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest


def _soak(recorded, provider, concurrency: int, seconds: float) -> None:
    client = recorded.openai(provider, max_retries=0)
    deadline = time.monotonic() + seconds
    sent = []

    def worker(w: int) -> int:
        n = 0
        while n == 0 or time.monotonic() < deadline:
            tag = f"w{w}n{n}"
            stream = client.chat.completions.create(
                model="gpt-4o-mini", stream=True, stream_options={"include_usage": True},
                messages=[{"role": "user", "content": f"{tag} please answer"}],
                extra_headers={"x-fake": "words=30; chunk_delay=0.002"})
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            assert tag in text  # the agent got its own answer
            sent.append(tag)
            n += 1
        return n

    with ThreadPoolExecutor(concurrency) as pool:
        total = sum(pool.map(worker, range(concurrency)))
    db = recorded.db()
    assert provider.count("/v1/chat/completions") == total == db.execute("SELECT count(*) FROM calls").fetchone()[0]
    rows = db.execute(
        "SELECT b.content, p.text, c.stream_complete FROM calls c JOIN bodies b ON b.id = c.request_body"
        " JOIN prompts p ON p.sha256 = c.output_sha256").fetchall()
    assert len(rows) == total
    for request, output, complete in rows:
        tag = json.loads(request)["messages"][0]["content"].split()[0]
        assert tag in output and complete == 1  # each recorded output belongs to its own request
    assert db.execute("SELECT max(calls_lost) FROM runs").fetchone()[0] == 0


def test_64_concurrent_streams_short(recorded, fake_provider_tls):
    _soak(recorded, fake_provider_tls, 64, 3)


@pytest.mark.slow
def test_64_concurrent_streams_soak(recorded, fake_provider_tls):
    _soak(recorded, fake_provider_tls, 64, float(os.environ.get("AGENTPROBE_SOAK_SECONDS", "180")))
