"""The writer yields the CPU while it keeps up, and takes normal priority back when it falls behind.

Nice values are per thread on Linux only; elsewhere the writer is lowered once as a whole.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
import time
from pathlib import Path

import pytest

from agentprobe.capture.rows import Rows
from agentprobe.store import catch_up, cpu_priority
from agentprobe.store.writer import Writer

from proxy_fixtures import Recorded, wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")

RUN = {"id": "run-1", "started_at": "2026-12-01T00:00:00Z"}


class SlowBuild:
    """Rows that take `seconds` each to build, noting the order and the builder thread's nice value."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.built: list[tuple[int, int]] = []  # (item, nice of the building thread)

    def __call__(self, i: int) -> Rows:
        time.sleep(self.seconds)
        self.built.append((i, cpu_priority.nice_of_this_thread()))
        return Rows(call={"id": f"call-{i}", "run_id": RUN["id"], "seq": i})




def _written_seqs(db: Path) -> list[int]:
    with sqlite3.connect(db) as conn:
        return [seq for (seq,) in conn.execute("SELECT seq FROM calls ORDER BY rowid")]


def test_a_backlog_is_built_at_normal_priority_in_order_then_the_writer_yields_again(tmp_path):
    normal = cpu_priority.nice_of_this_thread()
    assert normal < cpu_priority.LOW_NICE
    build = SlowBuild(0.02)
    w = Writer(tmp_path / "a.db", RUN, build, yield_cpu=True)
    w.start()
    try:
        for i in range(40):  # 0.8 s of building: the queue's head waits past BEHIND_S
            w.submit(i)
        assert wait_until(lambda: len(build.built) == 40)
        time.sleep(0.2)
        w.submit(40)  # after the catch-up
        assert wait_until(lambda: len(build.built) == 41)
    finally:
        w.close(ended_at="2026-12-01T00:00:01Z")
    assert [i for i, _ in build.built] == list(range(41))
    assert _written_seqs(tmp_path / "a.db") == list(range(41))
    nice = [n for _, n in build.built]
    assert w.boosts >= 1
    assert nice[0] == cpu_priority.LOW_NICE  # it starts yielding
    assert normal in nice[1:40]  # the backlog got normal priority
    assert nice[40] == cpu_priority.LOW_NICE  # and it yields again once caught up


def test_without_yield_cpu_the_writer_keeps_its_priority(tmp_path):
    build = SlowBuild(0.02)
    w = Writer(tmp_path / "a.db", RUN, build)
    w.start()
    try:
        for i in range(30):
            w.submit(i)
        assert wait_until(lambda: len(build.built) == 30)
    finally:
        w.close(ended_at="2026-12-01T00:00:01Z")
    assert w.boosts == 0
    assert {n for _, n in build.built} == {cpu_priority.nice_of_this_thread()}


def test_a_backlog_becomes_readable_a_batch_at_a_time(tmp_path, monkeypatch):
    monkeypatch.setattr(catch_up, "BEHIND_S", 3600)  # no takeover: this is about batch size
    build = SlowBuild(0.005)
    db = tmp_path / "a.db"
    w = Writer(db, RUN, build, yield_cpu=True)
    w.start()
    try:
        for i in range(200):
            w.submit(i)
        assert wait_until(lambda: _written_seqs(db))
        # Committed after about one linger interval of building, not after 200 rows (one second).
        assert len(build.built) < 50
    finally:
        w.close(ended_at="2026-12-01T00:00:01Z")
    assert _written_seqs(db) == list(range(200))


def test_close_during_a_takeover_writes_everything_once(tmp_path, monkeypatch):
    monkeypatch.setattr(catch_up, "BEHIND_S", 0.01)
    monkeypatch.setattr(catch_up, "WATCH_S", 0.005)
    build = SlowBuild(0.002)
    db = tmp_path / "a.db"
    w = Writer(db, RUN, build, yield_cpu=True)
    w.start()
    for i in range(300):
        w.submit(i)
        if i % 50 == 0:
            time.sleep(0.05)
    w.close(ended_at="2026-12-01T00:00:01Z")
    assert w.boosts >= 1
    assert _written_seqs(db) == list(range(300))


def test_a_writer_that_dies_does_not_hang_close(tmp_path):
    w = Writer(tmp_path / "a.db", RUN, lambda i: Rows(call={"id": f"c{i}", "run_id": RUN["id"], "seq": i}))
    w.start()

    def broken(built):
        raise RuntimeError("a bug in the writer")

    w._commit = broken
    w.submit(1)
    done = threading.Event()
    threading.Thread(target=lambda: (w.close(ended_at="2026-12-01T00:00:01Z"), done.set()), daemon=True).start()
    assert done.wait(10)
    assert w.last_error and "writer stopped" in w.last_error


def _nice_by_thread(pid: int) -> dict[int, int]:
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            out[int(tid)] = int(f.read().rsplit(")", 1)[1].split()[16])
    return out


def test_through_the_proxy_a_stalled_writer_catches_up_at_normal_priority(tmp_path, tls_ca_bundle, fake_provider_tls):
    rec = Recorded(tmp_path, Path(tls_ca_bundle))
    try:
        client = rec.openai(fake_provider_tls)
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "warm up"}])
        writer = rec.recording.writer
        assert wait_until(lambda: writer.calls_written == 1)
        child = writer.pid
        nice = _nice_by_thread(child)
        assert nice[child] == 0  # the pipe reader keeps normal priority, to time the queue
        assert cpu_priority.LOW_NICE in nice.values()  # the writer thread yields
        # Another connection holds the write lock: the writer cannot commit, its queue ages.
        blocker = sqlite3.connect(rec.db_path, timeout=5)
        blocker.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        for i in range(8):
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"call {i}"}])
        agent_s = time.monotonic() - started
        time.sleep(max(0.0, 0.8 - agent_s))
        blocker.rollback()
        blocker.close()
        assert wait_until(lambda: writer.calls_written == 9)
        assert wait_until(lambda: writer.boosts >= 1)
        assert agent_s < 5  # the agent never waited for the locked database
    finally:
        rec.stop()
    calls = rec.calls()
    assert len(calls) == 9
    assert [c["completion_seq"] for c in calls] == sorted(c["completion_seq"] for c in calls)
