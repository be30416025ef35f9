"""The writer, run in its own process.

Row building (parsing, hashing, token counting, redaction) and SQLite are most
of a recorded call's CPU. In the proxy's process they hold the GIL the event
loop needs, and the agent feels it: measured, the same Writer on a thread costs
20-70% of mitmdump's throughput. Here the proxy's side only queues the capture;
its event loop pickles batches down a pipe (`PipeFeed`), and the child (a fresh
interpreter) runs the ordinary `Writer` (one connection, batched transactions)
over them.

If the proxy dies, the child sees the pipe close, writes everything it was
sent and marks the run interrupted, so kill -9 loses only what was in flight.
"""

from __future__ import annotations

import fcntl
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ..capture.exchange import from_wire, to_wire
from . import cpu_priority
from .db import StoreError
from .pipe_feed import PipeFeed

log = logging.getLogger("agentprobe.writer")

_CLOSE = "close"
_DISCARD = "discard"
START_TIMEOUT_S = 60
FEED_LINGER_S = 0.005  # a few ms of calls per pickle and pipe write
STATS_EVERY_S = 0.25
PIPE_BYTES = 1024 * 1024


class WriterProcess:
    """Same surface as `Writer` (submit, start, close, discard, the counters), across a process boundary."""

    def __init__(
        self,
        path: Path,
        run: dict[str, Any],
        *,
        busy_timeout_ms: int = 5000,
        otlp_endpoint: str | None = None,
        max_queue: int = 50_000,
        max_batch: int = 256,
    ) -> None:
        self.path = path
        self.run = run
        self.busy_timeout_ms = busy_timeout_ms
        self.otlp_endpoint = otlp_endpoint
        self.max_batch = max_batch
        self.max_queue = max_queue
        self._feed: PipeFeed | None = None
        self.calls_written = 0
        self.calls_lost = 0  # what the child reports plus what never reached it
        self.boosts = 0  # times the writer fell behind and took normal CPU priority to catch up
        self.last_error: str | None = None
        self._lost_here = 0
        self._closed = threading.Event()
        self._child_closed = False
        self._proc = None
        self._send = None
        self._recv = None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        # A fresh interpreter, not multiprocessing: spawn and forkserver re-import the caller's
        # __main__ in the child, which would re-run an unguarded script that embeds a Recording.
        to_child_r, to_child_w = os.pipe()
        _widen(to_child_w)
        from_child_r, from_child_w = os.pipe()
        package_root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root,
                                                                        os.environ.get("PYTHONPATH")]))}
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", "from agentprobe.store.writer_process import child_entry; child_entry()",
                 str(to_child_r), str(from_child_w)],
                pass_fds=(to_child_r, from_child_w), env=env, stdin=subprocess.DEVNULL)
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self._send = Connection(to_child_w, readable=False)
        self._recv = Connection(from_child_r, writable=False)
        self._send.send((str(self.path), self.run, self.busy_timeout_ms, self.otlp_endpoint))
        if not self._recv.poll(START_TIMEOUT_S):
            self._proc.kill()
            raise StoreError(f"cannot record into {self.path}: the writer process did not start")
        try:
            kind, detail = self._recv.recv()
        except EOFError:
            kind, detail = "error", f"cannot record into {self.path}: the writer process exited"
        if kind != "started":
            self._proc.wait(10)
            raise StoreError(detail)
        self._feed = PipeFeed(self._send.fileno(), linger_s=FEED_LINGER_S, max_pending=self.max_queue,
                              max_batch=self.max_batch)
        threading.Thread(target=self._listen, name="agentprobe-writer-stats", daemon=True).start()

    def submit(self, item: Any) -> None:
        """Called on the proxy's event loop: never blocks, never raises."""
        if not self._feed.put(to_wire(item)):
            self._lost_here += 1
            self.calls_lost += 1
            self.last_error = self._feed.error or "writer queue full"
            log.error("agentprobe lost a call record: %s", self.last_error)

    def close(self, *, status: str = "completed", exit_code: int | None = None, ended_at: str, **run: str) -> None:
        """`run` holds other run columns the end of the run settles (e.g. fastpath)."""
        self._finish((_CLOSE, {"status": status, "exit_code": exit_code, "ended_at": ended_at, **run,
                               "lost_before": self._lost_here + self._feed.lost}))

    def discard(self) -> None:
        self._finish((_DISCARD, None))

    def _finish(self, message: tuple) -> None:
        try:
            self._feed.finish(message)
        except OSError as e:
            self.last_error = f"writer process unreachable: {e}"
            self._closed.set()
        # Draining a backlog can take a while; the child holds everything, so waiting loses nothing.
        self._closed.wait()
        if not self._child_closed:  # the child died: nothing after its last stats was written
            self.calls_lost = max(self.calls_lost, self._lost_here + self._feed.lost)
        try:
            self._proc.wait(30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        for conn in (self._send, self._recv):
            conn.close()

    # -- the proxy's side: stats from the child -------------------------------------------
    def _listen(self) -> None:
        try:
            while True:
                kind, stats = self._recv.recv()
                self.calls_written = stats["written"]
                self.boosts = stats["boosts"]
                self.last_error = stats["last_error"] or self.last_error
                if kind == "closed":  # its count includes what was lost on this side
                    self.calls_lost = stats["lost"]
                    self._child_closed = True
                    return
                self.calls_lost = stats["lost"] + self._lost_here + self._feed.lost
        except (EOFError, OSError):
            pass
        finally:
            self._closed.set()


def _widen(fd: int) -> None:
    """Room for a batch of large bodies in the pipe, so the proxy rarely has to wait for the child."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (OSError, AttributeError):
        pass  # not Linux, or above /proc/sys/fs/pipe-max-size: the default 64 KiB works too


# -- the child ----------------------------------------------------------------------------
def _warm_tokenizer() -> None:
    """Load the token encoding now, while the agent is still starting up.

    Loading it takes ~0.3 s of CPU here; left to the first call, it held that call's row
    (and every row behind it) back by as much.
    """
    try:
        from ..capture import tokens

        tokens.encoding_for(None)
    except Exception:  # noqa: BLE001 - the first call will try again, and report the estimate
        pass


def _in_background(work) -> None:
    cpu_priority.lower_this_thread()
    work()


def child_entry() -> None:
    """`python -c ...` entry point: argv holds the two pipe ends; the settings come first down the pipe."""
    recv = Connection(int(sys.argv[1]), writable=False)
    send = Connection(int(sys.argv[2]), readable=False)
    try:
        path, run, busy_timeout_ms, otlp_endpoint = recv.recv()
    except EOFError:
        return
    _child_main(path, run, busy_timeout_ms, otlp_endpoint, recv, send)


def _child_main(path: str, run: dict, busy_timeout_ms: int, otlp_endpoint: str | None, recv, send) -> None:
    # Ctrl-C reaches the whole process group; the parent decides when the writer stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from ..capture.rows import RowBuilder
    from .writer import Writer

    exporter = None
    if otlp_endpoint:
        from ..traces.otlp import LiveExporter

        exporter = LiveExporter(otlp_endpoint, yield_cpu=True)
    # This thread only reads the pipe and queues each call with the time it arrived, at normal
    # priority, so the writer can tell how far behind it is; the writer's own threads yield.
    writer = Writer(Path(path), run, RowBuilder(run["id"]).build, busy_timeout_ms=busy_timeout_ms,
                    on_written=exporter.submit if exporter else None, yield_cpu=True)
    try:
        writer.start()
    except StoreError as e:
        send.send(("error", str(e)))
        return
    except Exception as e:  # noqa: BLE001 - the parent must hear why, not wait
        send.send(("error", f"cannot record into {path}: {type(e).__name__}: {e}"))
        return
    send.send(("started", None))
    threading.Thread(target=_in_background, args=(_warm_tokenizer,), name="agentprobe-tokenizer-warmup",
                     daemon=True).start()

    def stats() -> dict:
        return {"written": writer.calls_written, "lost": writer.calls_lost, "last_error": writer.last_error,
                "boosts": writer.boosts}

    last, last_sent = None, 0.0
    final = ("close", {"status": "interrupted", "exit_code": None, "ended_at": None, "lost_before": 0})
    while True:
        if recv.poll(STATS_EVERY_S):
            try:
                kind, payload = pickle.loads(recv.recv_bytes())
            except EOFError:
                break  # the proxy is gone: keep what it sent
            if kind == "calls":
                for cap in payload:
                    writer.submit(from_wire(cap))
            elif kind in (_CLOSE, _DISCARD):
                final = (kind, payload)
                break
        now = stats()
        if now != last and time.monotonic() - last_sent >= STATS_EVERY_S:
            send.send(("stats", now))
            last, last_sent = now, time.monotonic()
    kind, payload = final
    if kind == _DISCARD:
        writer.discard()
    else:
        writer.calls_lost += payload.pop("lost_before")
        if payload["ended_at"] is None:
            from ..util.clock import now_iso

            payload["ended_at"] = now_iso()
        writer.close(**payload)
    if exporter is not None:
        exporter.close()
    try:
        send.send(("closed", stats()))
    except OSError:
        pass
