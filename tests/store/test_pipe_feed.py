"""PipeFeed: the proxy's side of the writer pipe, over a real pipe."""

from __future__ import annotations

import asyncio
import os
import pickle
import time
from multiprocessing.connection import Connection

import pytest

from agentprobe.store.pipe_feed import PipeFeed


def _reader_and_feed(**kw):
    r, w = os.pipe()
    feed = PipeFeed(w, linger_s=kw.pop("linger_s", 0.002), max_pending=kw.pop("max_pending", 10_000),
                    max_batch=kw.pop("max_batch", 50))
    return Connection(r, writable=False), feed, w


def _drain(conn: Connection, until_control: bool = True) -> tuple[list, tuple | None]:
    calls: list = []
    while True:
        kind, payload = pickle.loads(conn.recv_bytes())
        if kind == "calls":
            calls.extend(payload)
        else:
            return calls, (kind, payload)


def test_calls_put_outside_an_event_loop_arrive_in_order_in_batches():
    conn, feed, w = _reader_and_feed(max_batch=7)
    for i in range(30):
        assert feed.put({"n": i, "body": b"x" * 100})
    time.sleep(0.05)  # the timer thread flushes
    feed.finish(("close", {"lost_before": 0}))
    calls, control = _drain(conn)
    assert [c["n"] for c in calls] == list(range(30))
    assert control == ("close", {"lost_before": 0})
    conn.close()
    os.close(w)


def test_a_full_pipe_never_blocks_the_event_loop_and_loses_nothing():
    conn, feed, w = _reader_and_feed()
    body = b"y" * 200_000  # far more than a default pipe holds, in total

    async def agent_traffic() -> float:
        worst = 0.0
        for i in range(40):
            t = time.perf_counter()
            feed.put({"n": i, "body": body})
            worst = max(worst, time.perf_counter() - t)
            await asyncio.sleep(0.003)
        await asyncio.sleep(0.05)
        return worst

    # Nobody reads while the loop runs: every write past the pipe's capacity must wait for
    # the loop's writability callback instead of blocking.
    started = time.perf_counter()
    worst_put = asyncio.run(agent_traffic())
    assert time.perf_counter() - started < 5
    assert worst_put < 0.5
    assert feed.lost == 0

    import threading

    got: dict = {}
    reader = threading.Thread(target=lambda: got.update(result=_drain(conn)))
    reader.start()
    feed.finish(("close", {}))
    reader.join(10)
    calls, control = got["result"]
    assert [c["n"] for c in calls] == list(range(40))
    assert all(c["body"] == body for c in calls)
    assert control == ("close", {})
    conn.close()
    os.close(w)


def test_past_max_pending_calls_are_refused_and_counted_by_the_caller():
    conn, feed, w = _reader_and_feed(max_pending=5, linger_s=60)
    results = [feed.put({"n": i}) for i in range(8)]
    assert results == [True] * 5 + [False] * 3
    conn.close()
    os.close(w)


def test_a_dead_reader_turns_into_counted_loss_not_an_exception():
    conn, feed, w = _reader_and_feed(linger_s=0.001)
    conn.close()  # the writer process is gone
    assert feed.put({"n": 1})
    time.sleep(0.05)
    assert feed.lost == 1
    assert "unreachable" in (feed.error or "")
    assert feed.put({"n": 2}) is False
    with pytest.raises(OSError):
        feed.finish(("close", {}))
    os.close(w)


def test_a_stuck_writer_costs_bounded_memory():
    conn, feed, w = _reader_and_feed(linger_s=0.001)
    feed.max_bytes = 2 * 1024 * 1024
    body = b"z" * 300_000

    async def flood() -> list[bool]:
        accepted = []
        for i in range(40):  # 12 MB offered, nobody reading
            accepted.append(feed.put({"n": i, "body": body}))
            await asyncio.sleep(0.003)
        return accepted

    accepted = asyncio.run(flood())
    assert accepted[0] and not accepted[-1]
    # What the cap and the pipe's 64 KiB hold, plus the call that crosses the cap and a few
    # still waiting for the next timer.
    assert sum(accepted) <= (2 * 1024 * 1024 + 64 * 1024) // len(body) + 3
    conn.close()
    os.close(w)


def test_after_finish_calls_are_refused():
    conn, feed, w = _reader_and_feed()
    feed.finish(("close", {}))
    assert _drain(conn) == ([], ("close", {}))
    assert feed.put({"n": 1}) is False
    assert feed.error == "the recording has ended"
    conn.close()
    os.close(w)


def test_a_timer_flush_after_finish_and_close_touches_no_fd(monkeypatch):
    # The flush a put scheduled can fire after finish() wrote everything and the pipe was closed:
    # it must not call set_blocking on a closed fd (EBADF, or another file's fd by then).
    conn, feed, w = _reader_and_feed(linger_s=0.05)
    assert feed.put({"n": 1})
    feed.finish(("close", {}))
    assert _drain(conn) == ([{"n": 1}], ("close", {}))
    os.close(w)
    touched = []
    monkeypatch.setattr(os, "set_blocking", lambda fd, flag: touched.append(fd))
    feed.flush()  # what the timer thread does once linger_s has passed
    assert touched == []
    conn.close()
