"""Calls lost while several runs are live (a recorder splitting its traffic into sessions): each run's
row counts the losses of its own calls, and a loss of no known run counts for every run live then."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading

from agentprobe.capture.rows import RowBuilder
from agentprobe.store.writer import Writer
from agentprobe.util.clock import new_id, now_iso
from synthetic import chat_capture


def test_each_session_run_counts_its_own_losses(tmp_path):
    db = tmp_path / "ap.db"
    own, alpha, beta = new_id(), new_id(), new_id()
    builders = {run_id: RowBuilder(run_id) for run_id in (own, alpha, beta)}

    def build(cap):
        if cap.run_id == alpha and cap.seq % 3 == 0:  # a bug in row building, for some of alpha's calls
            raise ValueError("unparseable")
        return builders[cap.run_id or own].build(cap)

    writer = Writer(db, {"id": own, "started_at": now_iso()}, build)
    writer.start()
    for run_id in (alpha, beta):
        writer.control("begin", {"id": run_id, "started_at": now_iso(), "session": run_id[-4:]})
    for i in range(30):
        writer.submit(dataclasses.replace(chat_capture(i), run_id=alpha if i % 2 else beta))
    writer.add_lost(2, "lost before they reached this writer: no known run")
    ended = threading.Event()
    writer.control("end", {"id": beta, "ended_at": now_iso(), "status": "completed"}, done=ended.set)
    assert ended.wait(30)
    writer.close(ended_at=now_iso())
    conn = sqlite3.connect(db)
    row = {r[0]: (r[1], r[2]) for r in conn.execute(
        "SELECT id, calls_lost, (SELECT count(*) FROM calls WHERE run_id = runs.id) FROM runs")}
    failed = sum(1 for i in range(30) if i % 2 and (i + 1) % 3 == 0)  # chat_capture(i) has seq i + 1
    assert failed == 5
    assert row[alpha] == (failed + 2, 15 - failed)  # its own losses, and the 2 of no known run
    assert row[beta] == (2, 15)  # none of alpha's
    assert row[own] == (failed + 2, 0)  # the recording's total
