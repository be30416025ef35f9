"""Batch captures and write them down the writer's pipe from the proxy's own event loop.

A feeder thread had to take the GIL from the event loop every time it woke; measured at
concurrency 1 that cost about 7% of the proxy's throughput by itself. Here the event loop
does the feeding: a timer gathers a few milliseconds of calls, pickles them (microseconds
per call) and writes them without blocking. When the pipe is full the rest waits for the
loop to report the pipe writable, so the agent's traffic never waits on the writer.

Messages are framed as multiprocessing's Connection frames them, so the child reads them
with `Connection.recv_bytes`.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import pickle
import struct
import threading
from typing import Any

_SMALL = struct.Struct("!i")
_LARGE = struct.Struct("!Q")


def frame(payload: bytes) -> list[memoryview]:
    if len(payload) <= 0x7FFFFFFF:
        header = _SMALL.pack(len(payload))
    else:
        header = _SMALL.pack(-1) + _LARGE.pack(len(payload))
    return [memoryview(header), memoryview(payload)]


class PipeFeed:
    def __init__(self, fd: int, *, linger_s: float, max_pending: int, max_batch: int,
                 max_bytes: int = 256 * 1024 * 1024) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self.linger_s = linger_s
        self.max_pending = max_pending
        self.max_batch = max_batch
        # A stuck writer (a locked or full disk) must cost the proxy bounded memory, whatever
        # the size of the bodies: past this many unwritten bytes, calls are dropped and counted.
        self.max_bytes = max_bytes
        self._queued_bytes = 0
        self.lost = 0  # calls that could not be written (the child is gone)
        self.error: str | None = None
        self._lock = threading.Lock()
        self._pending: list[Any] = []  # calls not yet pickled
        self._out: collections.deque[tuple[memoryview, int]] = collections.deque()  # (bytes left, calls)
        self._queued = 0  # calls pickled but not yet written
        self._scheduled = False
        self._writer_loop: asyncio.AbstractEventLoop | None = None
        self._dead = False

    # -- called by the proxy ------------------------------------------------------------
    def put(self, item: Any) -> bool:
        """Queue one call; False when it had to be dropped (the writer is too far behind, or gone)."""
        with self._lock:
            if (self._dead or len(self._pending) + self._queued >= self.max_pending
                    or self._queued_bytes >= self.max_bytes):
                return False
            self._pending.append(item)
            if self._scheduled:
                return True
            self._scheduled = True
        loop = asyncio._get_running_loop()
        if loop is not None:
            loop.call_later(self.linger_s, self.flush)
        else:  # not on an event loop (an embedding script, a test): a short-lived timer thread
            timer = threading.Timer(self.linger_s, self.flush)
            timer.daemon = True
            timer.start()
        return True

    def flush(self) -> None:
        with self._lock:
            self._scheduled = False
            self._pickle_pending()
            self._write(block=asyncio._get_running_loop() is None)

    def send_control(self, message: tuple) -> None:
        """A message for the child now, off the event loop (from the thread that restarts a writer)."""
        with self._lock:
            self._pickle_pending()
            self._push(pickle.dumps(message), 0)
            self._write(block=True)
            if self._dead:
                raise OSError(self.error or "the writer process is gone")

    def queue_control(self, message: tuple) -> None:
        """A message for the child in order after the calls queued so far, from the event loop: written
        now if the pipe has room, else when it is writable (as calls are), never blocking the loop."""
        with self._lock:
            if self._dead:
                raise OSError(self.error or "the writer process is gone")
            self._pickle_pending()
            self._push(pickle.dumps(message), 0)
            self._write(block=asyncio._get_running_loop() is None)

    def finish(self, control: tuple) -> None:
        """Write everything queued, then `control`, blocking: the proxy has stopped by now."""
        with self._lock:
            self._pickle_pending()
            self._push(pickle.dumps(control), 0)
            loop, self._writer_loop = self._writer_loop, None
            if loop is not None and not loop.is_closed():
                try:
                    loop.call_soon_threadsafe(loop.remove_writer, self.fd)
                except RuntimeError:
                    pass
            self._write(block=True)
            if self._dead:
                raise OSError(self.error or "the writer process is gone")
            # A flow that straggles in after the proxy stopped is refused and counted, not queued
            # for a pipe nobody will flush.
            self._dead = True
            self.error = "the recording has ended"

    def abandon(self, reason: str) -> None:
        """The child is gone: write nothing more (its pipe is about to close, and the number of a
        closed descriptor is soon another pipe's), and stop watching the descriptor on the loop."""
        with self._lock:
            if not self._dead:
                self._give_up(OSError(reason))
                self.error = reason
            loop, self._writer_loop = self._writer_loop, None
        if loop is not None and not loop.is_closed():
            done = threading.Event()

            def forget() -> None:
                try:
                    loop.remove_writer(self.fd)
                finally:
                    done.set()
            try:
                loop.call_soon_threadsafe(forget)
                done.wait(2.0)  # before the descriptor closes, so no newer pipe's watch is removed
            except RuntimeError:
                pass

    # -- inside the lock ----------------------------------------------------------------
    def _pickle_pending(self) -> None:
        items, self._pending = self._pending, []
        for i in range(0, len(items), self.max_batch):
            chunk = items[i:i + self.max_batch]
            try:
                payload = pickle.dumps(("calls", chunk), protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as e:  # noqa: BLE001 - one unpicklable capture must not stop the rest
                self.lost += len(chunk)
                self.error = f"could not hand calls to the writer: {type(e).__name__}: {e}"
                continue
            self._push(payload, len(chunk))

    def _push(self, payload: bytes, calls: int) -> None:
        header, body = frame(payload)
        self._out.append((header, 0))
        self._out.append((body, calls))
        self._queued += calls
        self._queued_bytes += len(header) + len(body)

    def _write(self, *, block: bool) -> None:
        # A timer's flush can come after finish() and the pipe's close: nothing is left to write then,
        # and the fd number may already be another file's.
        block = block and bool(self._out) and not self._dead
        if block:
            os.set_blocking(self.fd, True)
        try:
            while self._out and not self._dead:
                try:
                    written = os.writev(self.fd, [view for view, _ in itertools.islice(self._out, 64)])
                except BlockingIOError:
                    written = 0
                except OSError as e:
                    self._give_up(e)
                    return
                self._advance(written)
                if self._out and not block:
                    self._wait_writable()
                    return
        finally:
            if block:
                os.set_blocking(self.fd, False)
        loop, self._writer_loop = self._writer_loop, None
        if loop is not None and loop is asyncio._get_running_loop():
            loop.remove_writer(self.fd)

    def _advance(self, written: int) -> None:
        while written and self._out:
            view, calls = self._out[0]
            if written < len(view):
                self._out[0] = (view[written:], calls)
                self._queued_bytes -= written
                return
            written -= len(view)
            self._queued_bytes -= len(view)
            self._out.popleft()
            self._queued -= calls

    def _wait_writable(self) -> None:
        loop = asyncio._get_running_loop()  # non-blocking writes happen on a loop only
        if loop is not None and self._writer_loop is None:
            self._writer_loop = loop
            loop.add_writer(self.fd, self.flush)

    def _give_up(self, e: OSError) -> None:
        self._dead = True
        self.lost += self._queued + len(self._pending)
        self._queued = 0
        self._queued_bytes = 0
        self._pending.clear()
        self._out.clear()
        self.error = f"writer process unreachable: {e}"
