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
import itertools
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ..capture.exchange import from_wire, to_wire
from . import cpu_priority
from .db import StoreError
from ..util.say import warn
from .pipe_feed import PipeFeed

log = logging.getLogger("agentprobe.writer")

_CLOSE = "close"
_DISCARD = "discard"
_LOST = "lost"  # to a replacement writer: calls the dead one took with it
START_TIMEOUT_S = 60
FEED_LINGER_S = 0.005  # a few ms of calls per pickle and pipe write
STATS_EVERY_S = 0.25
LOSS_LOG_EVERY_S = 5.0
PIPE_BYTES = 1024 * 1024


# A writer that dies (kill -9, the OOM killer) is replaced this many times in a run; after that
# the proxy keeps serving and only counts what it cannot record.
MAX_RESTARTS = 3
# Calls held while a dead writer is replaced (a restart takes about a second).
HELD_WHILE_RESTARTING = 20_000


class _Child:
    """One writer process and the pipes to it."""

    def __init__(self, proc, send: Connection, recv: Connection, feed: PipeFeed) -> None:
        self.proc, self.send, self.recv, self.feed = proc, send, recv, feed
        self.handed = 0  # calls put on its feed (each is written by it, lost by it, or lost with it)
        self.handed_by_run: Counter[str] = Counter()  # the same, by the run each call was for
        self.closed_cleanly = False

    def close_pipes(self) -> None:
        for conn in (self.send, self.recv):
            try:
                conn.close()
            except OSError:
                pass


class WriterProcess:
    """Same surface as `Writer` (submit, start, close, discard, the counters), across a process boundary.

    If the writer process dies, the proxy notices at once (its stats pipe closes), says so on
    stderr, and starts another for the same run (up to MAX_RESTARTS). The new one counts the
    run's rows in the database, so every call handed to the dead one is either there or counted
    in calls_lost, exactly; the run then ends `degraded`, never `running`.
    """

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
        self.calls_written = 0
        self.calls_lost = 0  # what the child reports plus what never reached it
        self.boosts = 0  # times the writer fell behind and took normal CPU priority to catch up
        self.deaths = 0  # writer processes that died during the run
        self.last_error: str | None = None
        self.run_ended: bool | None = None  # after close(): whether the run row took its end
        self._child: _Child | None = None
        # While a dead writer is being replaced: the calls that arrive meanwhile, handed to the
        # replacement once it runs (bounded; past the bound they are counted as lost).
        self._held: list[Any] | None = None
        self._lost_here = 0  # refused before reaching a writer: queue full, no writer
        self._lost_with_dead = 0  # handed to writers that died without writing them
        self._closing = False
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._last_loss_log = 0.0
        # Runs begun by begin_run(), until end_run(): one at a time for the pytest plugin, one per live
        # session for a recorder that splits its traffic. A replacement writer begins them again.
        self._segments: dict[str, dict[str, Any]] = {}
        self._run_ids = [run["id"]]  # every run this recording has begun: the rows a replacement counts
        self._unsettled: dict[str, dict[str, Any]] = {}  # runs ended while no writer could take it
        self._survived: set[str] = set()  # runs that were live when a writer died
        self._lost_at_begin: dict[str, int] = {}  # the recording's loss count when each run began
        self._flushes: dict[int, threading.Event] = {}
        self._flush_ids = itertools.count(1)
        self._handed_to_dead_by_run: Counter[str] = Counter()
        self._lost_in_sent: Counter[str] = Counter()  # each session's share of _lost_with_dead, told its writer

    @property
    def _feed(self) -> PipeFeed | None:
        return self._child.feed if self._child else None

    @property
    def pid(self) -> int | None:
        """The current writer process, if one runs."""
        return self._child.proc.pid if self._child else None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self._child, _ = self._spawn(resume=False)
        threading.Thread(target=self._listen, args=(self._child,), name="agentprobe-writer-stats",
                         daemon=True).start()

    def _spawn(self, *, resume: bool) -> tuple[_Child, int]:
        """A started writer process, and the rows the run already has (when resuming)."""
        # A fresh interpreter, not multiprocessing: spawn and forkserver re-import the caller's
        # __main__ in the child, which would re-run an unguarded script that embeds a Recording.
        to_child_r, to_child_w = os.pipe()
        _widen(to_child_w)
        from_child_r, from_child_w = os.pipe()
        package_root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root,
                                                                        os.environ.get("PYTHONPATH")]))}
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", "from agentprobe.store.writer_process import child_entry; child_entry()",
                 str(to_child_r), str(from_child_w)],
                pass_fds=(to_child_r, from_child_w), env=env, stdin=subprocess.DEVNULL)
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        send = Connection(to_child_w, readable=False)
        recv = Connection(from_child_r, writable=False)
        # A PostgreSQL URL goes down the pipe whole (the child connects with it); a Path as text.
        target = getattr(self.path, "url", None) or str(self.path)
        send.send((target, self.run, self.busy_timeout_ms, self.otlp_endpoint, resume))
        if not recv.poll(START_TIMEOUT_S):
            proc.kill()
            raise StoreError(f"cannot record into {self.path}: the writer process did not start")
        try:
            kind, detail = recv.recv()
        except EOFError:
            kind, detail = "error", f"cannot record into {self.path}: the writer process exited"
        if kind != "started":
            proc.wait(10)
            raise StoreError(detail)
        feed = PipeFeed(send.fileno(), linger_s=FEED_LINGER_S, max_pending=self.max_queue, max_batch=self.max_batch)
        return _Child(proc, send, recv, feed), (detail or {}).get("rows", 0)

    def submit(self, item: Any) -> None:
        """Called on the proxy's event loop: never blocks, never raises."""
        child = self._child
        wire = to_wire(item)
        if child is not None and child.feed.put(wire):
            child.handed += 1
            child.handed_by_run[getattr(item, "run_id", None) or self.run["id"]] += 1
            return
        if self._held is not None:  # the writer is being replaced: this call waits for the new one
            with self._lock:
                if self._held is not None and len(self._held) < HELD_WHILE_RESTARTING:
                    self._held.append(wire)
                    return
        self._lost_here += 1
        self.calls_lost += 1
        self.last_error = (child.feed.error if child else None) or ("writer queue full" if child else
                                                                   "no writer process")
        now = time.monotonic()
        if now - self._last_loss_log >= LOSS_LOG_EVERY_S:  # one line per interval, not one per call
            self._last_loss_log = now
            warn(f"{self.calls_lost} call record(s) lost so far: {self.last_error}")

    # -- runs after the first: one recorder, one run at a time (e.g. one per test) -------------
    def begin_run(self, run: dict[str, Any], *, block: bool = True) -> None:
        """Insert another run row; calls tagged with its id (Capture.run_id) are written to it.

        block=False: from the proxy's event loop (a session's first call), which must not wait on the pipe.
        """
        self._segments[run["id"]] = run
        self._run_ids.append(run["id"])
        self._lost_at_begin[run["id"]] = self.calls_lost
        self._control(("begin", run), block=block)

    def end_run(self, run_id: str, *, block: bool = True, **fields: Any) -> None:
        """Settle a run begun with begin_run (ended_at, status, ...), after every call handed before this."""
        self._segments.pop(run_id, None)
        if run_id in self._survived and fields.get("status") == "completed":
            fields["status"] = "degraded"  # a writer died during it: calls may be missing (counted on the
            # recording's own run)
        if not self._control(("end", {"id": run_id, **fields}), block=block):
            self._unsettled[run_id] = fields

    def flush(self, timeout: float = 15.0) -> bool:
        """Block until every call handed so far is committed (or the writer is gone); False on timeout."""
        token = next(self._flush_ids)
        done = self._flushes[token] = threading.Event()
        if not self._control(("flush", token)):
            self._flushes.pop(token, None)
            return False
        ok = done.wait(timeout)
        self._flushes.pop(token, None)
        return ok

    def _control(self, message: tuple, *, block: bool = True) -> bool:
        child = self._child
        if child is None:
            return False
        try:
            if block:
                child.feed.send_control(message)
            else:
                child.feed.queue_control(message)
            return True
        except OSError as e:
            self.last_error = f"writer process unreachable: {e}"
            return False

    def _release_flushes(self) -> None:
        for event in list(self._flushes.values()):
            event.set()

    def close(self, *, status: str = "completed", exit_code: int | None = None, ended_at: str, **run: str) -> None:
        """`run` holds other run columns the end of the run settles (e.g. fastpath)."""
        if self.deaths and status == "completed":
            status = "degraded"
        self._finish((_CLOSE, {"status": status, "exit_code": exit_code, "ended_at": ended_at, **run}),
                     settle={"status": status, "exit_code": exit_code, "ended_at": ended_at, **run})

    def discard(self) -> None:
        self._finish((_DISCARD, None))

    def _lost_before(self, child: _Child) -> int:
        """What the child must add to its own count at the end: losses it never saw.

        What the dead writers took with them was already handed to the replacement at its start.
        """
        return self._lost_here + child.feed.lost

    def _finish(self, message: tuple, settle: dict | None = None) -> None:
        with self._lock:
            self._closing = True
            child = self._child
        if child is None:  # every writer died and none could be restarted
            if settle:
                self._settle_in_parent(settle, handed=0)
            return
        if message[0] == _CLOSE:
            message[1]["lost_before"] = self._lost_before(child)
        try:
            child.feed.finish(message)
        except OSError as e:
            self.last_error = f"writer process unreachable: {e}"
        # Draining a backlog can take a while; the child holds everything, so waiting loses nothing.
        self._closed.wait()
        try:
            child.proc.wait(30)
        except subprocess.TimeoutExpired:
            child.proc.kill()
            child.proc.wait()
        child.close_pipes()
        if not child.closed_cleanly and settle:
            # It died while closing: what it did not write is lost, and the run row must still end.
            self._settle_in_parent({**settle, "status": "degraded"}, handed=child.handed)

    # -- the proxy's side: stats from the child, and its death ----------------------------
    def _listen(self, child: _Child) -> None:
        while True:
            try:
                kind, stats = child.recv.recv()
            except (EOFError, OSError):
                break
            if kind == "flushed":
                event = self._flushes.get(stats)
                if event is not None:
                    event.set()
                continue
            self.calls_written = stats["written"]
            self.boosts = stats["boosts"]
            self.last_error = stats["last_error"] or self.last_error
            if kind == "closed":  # its count includes what was lost on this side
                self.calls_lost = stats["lost"]
                self.run_ended = stats.get("ended")
                child.closed_cleanly = True
                self._closed.set()
                return
            self.calls_lost = stats["lost"] + self._lost_before(child)  # stats["lost"] holds the dead ones' share
        self._release_flushes()  # what the dead writer did not commit is counted as lost
        with self._lock:
            closing = self._closing
        if closing:
            self._closed.set()
            return
        self._replace(child)

    def _replace(self, dead: _Child) -> None:
        """The writer died mid-run: say so now, settle what it took with it, start another."""
        code = dead.proc.wait()
        how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        self.deaths += 1
        self._survived.update(self._segments)
        self.last_error = f"the writer process died ({how})"
        with self._lock:  # from now until a replacement runs, calls wait in _held
            self._held = [] if self.deaths <= MAX_RESTARTS else None
        dead.feed.abandon("the writer process died")
        dead.close_pipes()
        # Counted before another writer adds rows, and from the database, not from the dead one's
        # last stats (sent every few hundred ms, so behind what it committed): exact.
        rows_by_run = self._rows_in_db()
        rows = None if rows_by_run is None else sum(rows_by_run.values())
        replacement = None
        if self.deaths <= MAX_RESTARTS:
            try:
                replacement, resumed_rows = self._spawn(resume=True)
                if rows is None and not self._segments:  # the replacement's own count of the run, then
                    rows = resumed_rows
            except (StoreError, OSError) as e:
                self.last_error += f"; could not restart it: {e}"
        handed_to_dead = self._handed_to_dead + dead.handed
        self._handed_to_dead = handed_to_dead
        self._handed_to_dead_by_run.update(dead.handed_by_run)
        lost_in = {}  # each live session's share, exact: what it handed the dead writers and has no row for
        if rows_by_run is not None:
            for run_id in self._segments:
                lost = max(0, self._handed_to_dead_by_run[run_id] - rows_by_run.get(run_id, 0))
                if lost > self._lost_in_sent[run_id]:
                    lost_in[run_id] = lost - self._lost_in_sent[run_id]
        # Every call the dead writers were handed is now a row, or lost.
        self._lost_with_dead = max(0, handed_to_dead - (self.calls_written if rows is None else rows))
        self.calls_lost = self._lost_here + self._lost_with_dead
        if replacement is not None:
            try:  # its run row shows the loss from now on, and its count includes it
                replacement.feed.send_control((_LOST, self._lost_with_dead - self._lost_with_dead_sent))
                self._lost_with_dead_sent = self._lost_with_dead
                for segment in list(self._segments.values()):  # runs in progress go on (rows kept if they exist)
                    replacement.feed.send_control(("begin", segment))
                if lost_in:
                    replacement.feed.send_control(("lost_in", lost_in))
                    self._lost_in_sent.update(lost_in)
            except OSError:
                pass
        with self._lock:
            held, self._held = self._held or [], None
            if replacement is not None and not self._closing:
                for item in held:  # after the run rows it needs, before any newer call
                    if replacement.feed.put(item):
                        replacement.handed += 1
                    else:
                        self._lost_here += 1
                        self.calls_lost += 1
            else:
                self._lost_here += len(held)
                self.calls_lost += len(held)
            self._child = replacement
            closing = self._closing
        if replacement is None:
            warn(f"{self.last_error}; from now on calls are counted, not recorded ({self.calls_lost} lost so far)")
        else:
            shares = ", ".join(f"{n} of run {self._segment_name(run_id)}" for run_id, n in lost_in.items())
            warn(f"{self.last_error}; restarted it ({self.deaths} of {MAX_RESTARTS} restarts);"
                 f" {self._lost_with_dead} call record(s) lost with it" + (f" ({shares})" if shares else ""))
            threading.Thread(target=self._listen, args=(replacement,), name="agentprobe-writer-stats",
                             daemon=True).start()
        if closing:
            self._closed.set()

    _handed_to_dead = 0
    _lost_with_dead_sent = 0

    def _segment_name(self, run_id: str) -> str:
        session = (self._segments.get(run_id) or {}).get("session")
        return f"{run_id[-6:]}" + (f" (session {session})" if session else "")

    def _rows_in_db(self) -> dict[str, int] | None:
        """The calls rows of each run this recorder wrote to; None if the database cannot say."""
        import sqlite3

        from .db import is_postgres
        from .writer import count_calls_by_run

        try:
            if is_postgres(self.path):
                from .pg import PgConnection

                conn = PgConnection(self.path)
            else:
                conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)
            try:
                return count_calls_by_run(conn, self._run_ids)
            finally:
                conn.close()
        except sqlite3.Error:
            return None

    def _settle_in_parent(self, fields: dict, handed: int) -> None:
        """End the run row ourselves when no writer is left to do it."""
        import sqlite3

        from .db import is_postgres
        from .writer import count_calls

        try:
            if is_postgres(self.path):
                from .pg import PgConnection

                conn = PgConnection(self.path)
            else:
                conn = sqlite3.connect(self.path, timeout=5, isolation_level=None)
            try:
                rows = count_calls(conn, self._run_ids)
                self.calls_lost = max(self.calls_lost,
                                      self._lost_here + self._handed_to_dead + handed - rows)
                conn.execute("UPDATE runs SET status = ?, ended_at = ?, exit_code = ?, calls_lost = ? WHERE id = ?",
                             [fields.get("status") or "degraded", fields.get("ended_at"), fields.get("exit_code"),
                              self.calls_lost, self.run["id"]])
                # Session runs no writer could end: ended here, degraded, each with the calls lost while it
                # was live (past what _replace attributed, which of the concurrent sessions a lost call was
                # is unknown here: each counts it, an upper bound).
                ends = {**{run_id: {} for run_id in self._segments}, **self._unsettled}
                for run_id, end in ends.items():
                    conn.execute("UPDATE runs SET status = 'degraded', ended_at = ?, calls_lost = ? WHERE id = ?"
                                 " AND ended_at IS NULL",
                                 [end.get("ended_at") or fields.get("ended_at"),
                                  max(0, self.calls_lost - self._lost_at_begin.get(run_id, 0)), run_id])
            finally:
                conn.close()
            self.run_ended = True
        except sqlite3.Error as e:
            self.run_ended = False
            self.last_error = f"could not update run {self.run['id']}: {e}"


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
        path, run, busy_timeout_ms, otlp_endpoint, resume = recv.recv()
    except EOFError:
        return
    _child_main(path, run, busy_timeout_ms, otlp_endpoint, recv, send, resume)


def _child_main(path: str, run: dict, busy_timeout_ms: int, otlp_endpoint: str | None, recv, send,
                resume: bool = False) -> None:
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
    builders = RunBuilders(run["id"], RowBuilder)
    from .db import resolve_path

    writer = Writer(resolve_path(path), run, builders.build, busy_timeout_ms=busy_timeout_ms,
                    on_written=exporter.submit if exporter else None, yield_cpu=True)
    try:
        rows = writer.start(resume=resume)
    except StoreError as e:
        send.send(("error", str(e)))
        return
    except Exception as e:  # noqa: BLE001 - the parent must hear why, not wait
        send.send(("error", f"cannot record into {writer.path}: {type(e).__name__}: {e}"))
        return
    send_lock = threading.Lock()  # the writer's worker acknowledges flushes on the same pipe

    def say(message) -> None:
        with send_lock:
            send.send(message)

    say(("started", {"rows": rows}))
    threading.Thread(target=_in_background, args=(_warm_tokenizer,), name="agentprobe-tokenizer-warmup",
                     daemon=True).start()

    def stats() -> dict:
        return {"written": writer.calls_written, "lost": writer.calls_lost, "last_error": writer.last_error,
                "boosts": writer.boosts, "ended": writer.run_ended}

    last, last_sent = None, 0.0
    final = ("close", {"status": "interrupted", "exit_code": None, "ended_at": None, "lost_before": 0})
    if resume:
        writer.calls_written = rows
    while True:
        if recv.poll(STATS_EVERY_S):
            try:
                kind, payload = pickle.loads(recv.recv_bytes())
            except EOFError:
                break  # the proxy is gone: keep what it sent
            if kind == "calls":
                for cap in payload:
                    writer.submit(from_wire(cap))
            elif kind == _LOST:
                writer.add_lost(payload, "a writer process died before writing them")
            elif kind in ("begin", "lost_in"):
                writer.control(kind, payload)
            elif kind == "end":
                writer.control("end", payload, done=lambda run_id=payload["id"]: builders.forget(run_id))
            elif kind == "flush":
                writer.control("flush", done=lambda token=payload: _ack(say, token))
            elif kind in (_CLOSE, _DISCARD):
                final = (kind, payload)
                break
        now = stats()
        if now != last and time.monotonic() - last_sent >= STATS_EVERY_S:
            say(("stats", now))
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
        say(("closed", stats()))
    except OSError:
        pass


def _ack(say, token: int) -> None:
    try:
        say(("flushed", token))
    except OSError:
        pass


class RunBuilders:
    """One row builder per run (its own retry and conversation linking), chosen by the capture's run_id."""

    def __init__(self, first_run_id: str, factory) -> None:
        self.first = first_run_id
        self.factory = factory
        self.builders: dict[str, Any] = {}

    def build(self, cap):
        run_id = getattr(cap, "run_id", None) or self.first
        builder = self.builders.get(run_id)
        if builder is None:
            builder = self.builders[run_id] = self.factory(run_id)
        return builder.build(cap)

    def forget(self, run_id: str) -> None:
        if run_id != self.first:
            self.builders.pop(run_id, None)
