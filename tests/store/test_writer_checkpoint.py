"""The writer moves the WAL into the database when it is idle or the WAL is large, not mid-burst."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from agentprobe.capture.rows import Rows
from agentprobe.store import writer as writer_mod
from agentprobe.store.writer import Writer

from proxy_fixtures import wait_until

BODY = "x" * (256 * 1024)


def _rows(i: int) -> Rows:
    body_id = f"body-{i}"
    return Rows(call={"id": f"call-{i}", "run_id": "run-1", "seq": i, "response_body": body_id},
                bodies=[{"id": body_id, "content": BODY + str(i), "size": len(BODY), "content_type": "text/plain",
                         "truncated": 0}])


def _writer(path: Path) -> Writer:
    w = Writer(path, {"id": "run-1", "started_at": "2026-11-25T00:00:00Z"}, _rows)
    w.start()
    return w




def _rows_readable(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT count(*) FROM calls").fetchone()[0]


def test_a_pause_moves_the_wal_into_the_database(tmp_path, monkeypatch):
    monkeypatch.setattr(writer_mod, "CHECKPOINT_IDLE_S", 1.0)
    db = tmp_path / "a.db"
    w = _writer(db)
    try:
        for i in range(8):  # 2 MB: under SQLite's own 1,000-page automatic checkpoint
            w.submit(i)
        assert wait_until(lambda: _rows_readable(db) == 8)
        assert os.path.getsize(db) < 1024 * 1024  # committed to the WAL, not yet checkpointed
        assert wait_until(lambda: os.path.getsize(db) > 2 * 1024 * 1024, timeout=5)
    finally:
        w.close(ended_at="2026-11-25T00:00:01Z")


def test_a_large_wal_is_checkpointed_without_a_pause(tmp_path, monkeypatch):
    monkeypatch.setattr(writer_mod, "CHECKPOINT_IDLE_S", 3600)
    monkeypatch.setattr(writer_mod, "CHECKPOINT_BYTES", 1024 * 1024)
    db = tmp_path / "b.db"
    w = _writer(db)
    try:
        for i in range(8):
            w.submit(i)
        assert wait_until(lambda: _rows_readable(db) == 8)
        assert wait_until(lambda: os.path.getsize(db) > 1024 * 1024, timeout=5)
    finally:
        w.close(ended_at="2026-11-25T00:00:01Z")
