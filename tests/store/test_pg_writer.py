"""The writer on PostgreSQL: each batch is committed from a thread of its own while the worker builds the
next (writer.py, _commit_batch), by PgConnection.write_batch (shared rows by unnest, calls by COPY).
Whatever comes after a batch in the queue must still come after its commit, and no row is lost to
a value PostgreSQL takes differently from SQLite."""

from __future__ import annotations

import dataclasses
import json
import threading

from agentprobe.capture.rows import RowBuilder
from agentprobe.store.db import connect, open_db, resolve_path
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


def test_a_nul_in_a_prompt_is_stored_replaced_not_lost(pg_url):
    # PostgreSQL text cannot hold NUL (SQLite's can): the batch is sent again with U+FFFD in its place.
    run_id = new_id()
    writer = _writer(pg_url, run_id)
    body = json.dumps({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "terse\u0000 please"}, {"role": "user", "content": "q"}]}).encode()
    try:
        writer.submit(chat_capture(0))
        writer.submit(dataclasses.replace(chat_capture(1), request_body=body))
        writer.submit(chat_capture(2))
    finally:
        writer.close(ended_at=now_iso())
    assert writer.calls_written == 3 and writer.calls_lost == 0
    db = open_db(pg_url)
    texts = [r[0] for r in db.execute("SELECT text FROM prompts WHERE kind = 'system'").fetchall()]
    assert "terse\ufffd please" in texts
    assert _rows(db, run_id) == 3


def test_two_writers_storing_the_same_bodies_at_once_lose_none(pg_url):
    # Both runs hold the same requests and answers: whichever writer inserts a body first stores it,
    # the other's ON CONFLICT DO NOTHING skips it, and both runs keep all their calls.
    runs = [new_id(), new_id()]
    writers = [_writer(pg_url, run_id) for run_id in runs]
    go = threading.Barrier(2)

    def feed(writer):
        go.wait()
        for i in range(200):
            writer.submit(chat_capture(i))
        writer.close(ended_at=now_iso())

    threads = [threading.Thread(target=feed, args=(w,)) for w in writers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [(w.calls_written, w.calls_lost) for w in writers] == [(200, 0), (200, 0)]
    db = open_db(pg_url)
    assert [_rows(db, run_id) for run_id in runs] == [200, 200]
    assert db.execute("SELECT count(*) FROM bodies").fetchone()[0] == 400  # 200 requests, 200 answers, once each
    dangling = db.execute("SELECT count(*) FROM calls WHERE request_body NOT IN (SELECT id FROM bodies)"
                          " OR response_body NOT IN (SELECT id FROM bodies)").fetchone()[0]
    assert dangling == 0


def test_a_shared_row_of_another_type_goes_by_copy(pg_url):
    # SQLite's columns take any type; an array parameter takes one. A size given as text cannot go
    # in bigint[], so that table's rows go by COPY, which parses it as the server reads text.
    conn = connect(resolve_path(pg_url), create=True)
    conn.write_batch([("bodies", ["id", "content", "size", "content_type", "truncated"],
                       [("b-text-size", b"abc", "3", "text/plain", 0), ("b-int-size", b"de", 2, "text/plain", 0)]),
                      ("prompts", ["sha256", "kind", "text"], [("p1", "system", "hello")])], [], [])
    got = sorted(tuple(r) for r in conn.execute("SELECT id, size FROM bodies").fetchall())
    assert got == [("b-int-size", 2), ("b-text-size", 3)]
    assert conn.execute("SELECT text FROM prompts WHERE sha256 = 'p1'").fetchone()[0] == "hello"
    assert not conn.in_transaction


def test_large_bodies_in_a_batch_are_stored_whole(pg_url):
    # Past COPY_SHARED_OVER_BYTES a batch's bodies go by COPY, beside prompts by unnest, in one transaction.
    from agentprobe.store.pg import COPY_SHARED_OVER_BYTES

    conn = connect(resolve_path(pg_url), create=True)
    big = [(f"big-{i}", bytes([i]) * (COPY_SHARED_OVER_BYTES // 2), COPY_SHARED_OVER_BYTES // 2, "text/plain", 0)
           for i in range(3)]
    conn.write_batch([("bodies", ["id", "content", "size", "content_type", "truncated"], big),
                      ("prompts", ["sha256", "kind", "text"], [("p2", "system", "x")])], [], [])
    stored = {r[0]: bytes(r[1]) for r in conn.execute("SELECT id, content FROM bodies").fetchall()}
    assert stored == {b[0]: b[1] for b in big}
    assert conn.execute("SELECT count(*) FROM prompts").fetchone()[0] == 1
