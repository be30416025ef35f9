"""The writer on PostgreSQL commits a batch from a thread of its own while its worker builds the next
(writer.py, _commit_batch). Whatever comes after a batch in the queue must still come after its commit."""

from __future__ import annotations

import threading

from agentprobe.capture.rows import RowBuilder
from agentprobe.store.db import open_db, resolve_path
from agentprobe.store.writer import Writer
from agentprobe.util.clock import new_id, now_iso
from synthetic import chat_capture


def _writer(pg_url: str, run_id: str) -> Writer:
    writer = Writer(resolve_path(pg_url), {"id": run_id, "started_at": now_iso()}, RowBuilder(run_id).build,
                    max_batch=25)
    writer.start()
    return writer


def _rows(db, run_id: str) -> int:
    return db.execute("SELECT count(*) FROM calls WHERE run_id = ?", [run_id]).fetchone()[0]


def test_a_flush_is_acknowledged_only_once_every_call_before_it_is_readable(pg_url):
    run_id = new_id()
    writer = _writer(pg_url, run_id)
    seen: list[int] = []
    reader = open_db(pg_url)  # open already: the count must not wait for a connection to be made
    try:
        for round_ in range(5):
            for i in range(60):
                writer.submit(chat_capture(round_ * 60 + i))
            done = threading.Event()
            # Counted from another connection, inside the acknowledgement: what a flush's caller may read.
            writer.control("flush", done=lambda: (seen.append(_rows(reader, run_id)), done.set()))
            assert done.wait(30)
    finally:
        writer.close(ended_at=now_iso())
    assert seen == [60, 120, 180, 240, 300]
    assert writer.calls_written == 300 and writer.calls_lost == 0


def test_a_run_ended_in_the_queue_has_its_calls_and_losses_before_its_end(pg_url):
    run_id, segment = new_id(), new_id()
    writer = _writer(pg_url, run_id)
    try:
        writer.control("begin", {"id": segment, "started_at": now_iso()})
        builder = RowBuilder(segment)
        writer.build = builder.build
        for i in range(80):
            writer.submit(chat_capture(i))
        writer.add_lost(3, "handed to a writer that died")
        ended = threading.Event()
        writer.control("end", {"id": segment, "ended_at": now_iso(), "status": "completed"},
                       done=lambda: ended.set())
        assert ended.wait(30)
    finally:
        writer.close(ended_at=now_iso())
    db = open_db(pg_url)
    row = db.execute("SELECT status, calls_lost FROM runs WHERE id = ?", [segment]).fetchone()
    assert tuple(row) == ("completed", 3)
    assert _rows(db, segment) == 80
