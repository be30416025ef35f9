"""The thread that writes to the database.

Proxy hooks call `submit()`, which only appends to a queue; a worker thread turns
captures into rows and commits them in batches. A completed call is committed
within one batch interval; `close()` drains the queue before returning.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from .catch_up import CatchUp
from ..util.clock import now_iso
from .db import StoreError, connect, is_postgres

log = logging.getLogger("agentprobe.writer")

_STOP = object()

# How a run was keyed and whose traffic it holds (a session of a long-running recorder).
SESSION_COLUMNS = ("session", "session_key_by", "client_pid", "client_command", "client_address", "trace_id")


@dataclass
class _Lost:
    n: int
    why: str


@dataclass
class _Control:
    """A step in the queue's order: begin or end a run of a multi-run recording, or a flush barrier."""

    kind: str  # "begin" | "end" | "flush"
    payload: Any = None
    done: Callable[[], None] | None = None  # called by the worker once the step is applied

# SQLite's automatic checkpoint copies the WAL into the database, with an fsync, in whichever
# commit crosses 1,000 pages: with 100 KB bodies, every ~40 calls, while the agent is busy.
# We checkpoint when the writer has been idle this long instead, or past this much WAL.
# The size bound stays close to SQLite's own (4 MB): a checkpoint's pause grows with it, and
# the next commit waits for it.
CHECKPOINT_IDLE_S = 0.25
# A checkpoint that a reader kept from finishing (PASSIVE never waits for one) is tried again this soon.
CHECKPOINT_RETRY_S = 0.05
# After the disk reports full, batches are counted as lost for this long before the next try.
DISK_FULL_PAUSE_S = 2.0
# A PostgreSQL server that went away is asked again at most this often; meanwhile batches are counted lost.
RECONNECT_EVERY_S = 1.0
CHECKPOINT_BYTES = 8 * 1024 * 1024
# The writer stamps its live runs (runs.alive_at) this often, and says so on the row (alive_every_s),
# so a reader can tell a run still recording from one whose recorder was killed (queries.liveness).
# The variable is for tests and for gateways that want a closer watch.
HEARTBEAT_S = max(0.1, float(os.environ.get("AGENTPROBE_HEARTBEAT_S") or 30))


class Writer:
    def __init__(
        self,
        path: Path,
        run: dict[str, Any],
        build: Callable[[Any], Any],
        *,
        max_queue: int = 50_000,
        max_batch: int = 500,
        linger_s: float = 0.02,
        busy_timeout_ms: int = 5000,
        on_written: Callable[[list[dict]], None] | None = None,
        yield_cpu: bool = False,
    ) -> None:
        self.path = path
        self.run = run
        self.build = build
        self.max_batch = max_batch
        # Waiting a little for more calls turns a transaction per call into one per batch;
        # it delays durability by at most this much.
        self.linger_s = linger_s
        self.busy_timeout_ms = busy_timeout_ms
        self.on_written = on_written  # e.g. the live OTLP exporter; called after each commit
        self.queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self.calls_written = 0
        self.calls_lost = 0
        self.last_error: str | None = None
        self.run_ended: bool | None = None  # after close(): whether the run row took its end
        self._conn: sqlite3.Connection | None = None
        self._wal_bytes = 0  # written since the last checkpoint, roughly
        self._checkpoint_partial = False
        self._disk_full_until = 0.0
        self._broken = False  # the worker died of a bug: what is left in the queue is lost, and counted
        # PostgreSQL: no WAL of ours to checkpoint, no disk of ours to reserve; a server that goes
        # away is reconnected to (see _commit).
        self._pg = is_postgres(path)
        self._reconnect_at = 0.0
        self._beat_next = time.monotonic() + HEARTBEAT_S
        self._reserve = NoReserve() if self._pg else Reserve(path.with_name(path.name + "-reserve"))
        self._drained = threading.Event()
        # PostgreSQL: the thread committing the last batch while the worker builds the next (see _commit_batch).
        self._committing: threading.Thread | None = None
        # Runs begun after the first one (a recorder switching runs, e.g. one per test): id -> calls
        # lost before it began, so each run row gets the losses of its own time.
        self._segments: dict[str, int] = {}
        # With yield_cpu, the workers run at the lowest CPU priority while they keep up (catch_up.py).
        self.catch_up = CatchUp(self._spawn, self._oldest_wait, self._drained, yield_cpu=yield_cpu)

    # -- called from the proxy's event loop -------------------------------------------
    def submit(self, item: Any) -> None:
        try:
            self.queue.put_nowait((time.monotonic(), item))
        except queue.Full:
            # Never block the agent's traffic on our backlog: drop and count.
            self._lost(1, "writer queue full")

    # -- lifecycle --------------------------------------------------------------------
    def start(self, *, resume: bool = False) -> int:
        """Open the database and begin; returns the rows the run already has.

        resume: carry on a run another writer (one that died) began, marking it degraded.
        """
        self._conn = connect(self.path, create=True)
        self._reserve.hold()
        rows = 0
        try:
            if resume:
                rows = self._conn.execute("SELECT count(*) FROM calls WHERE run_id = ?", [self.run["id"]]).fetchone()[0]
                self._conn.execute("UPDATE runs SET status = 'degraded', alive_at = ?, alive_every_s = ? WHERE id = ?",
                                   [now_iso(), HEARTBEAT_S, self.run["id"]])
            else:
                self._insert_run()
        except sqlite3.DatabaseError as e:
            self._conn.close()
            raise StoreError(f"cannot record into {self.path}: {e}") from None
        self._conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        self._conn.execute("PRAGMA wal_autocheckpoint = 0")  # this connection only; see _checkpoint
        self.catch_up.start()
        return rows

    def add_lost(self, n: int, why: str) -> None:
        """Calls lost outside this writer (handed to one that died): counted, and put on the run row by
        the worker, in queue order (the connection is the worker's)."""
        if n > 0:
            self.queue.put((time.monotonic(), _Lost(n, why)))

    def control(self, kind: str, payload: Any = None, done: Callable[[], None] | None = None) -> None:
        """Queue a run switch or a flush barrier; the worker applies it in order with the calls."""
        self.queue.put((time.monotonic(), _Control(kind, payload, done)))

    def _apply(self, step: _Control) -> None:
        self._settle()  # a run's end, or a flush's acknowledgement, comes after the calls before it
        try:
            if step.kind == "begin":
                self._insert_run(step.payload, ignore_existing=True)
                self._segments.setdefault(step.payload["id"], self.calls_lost)
            elif step.kind == "lost_in":
                # Calls of these runs that a writer which died took with it: already in calls_lost (an
                # earlier _Lost), and now each run's own count as well, at its end.
                for run_id, n in step.payload.items():
                    if run_id in self._segments:
                        self._segments[run_id] -= n
            elif step.kind == "end":
                fields = dict(step.payload)
                run_id = fields.pop("id")
                lost = self.calls_lost - self._segments.pop(run_id, self.calls_lost)
                self._update_run_row(run_id, {**fields, "calls_lost": lost})
        except sqlite3.DatabaseError as e:
            self.last_error = f"could not {step.kind} run: {e}"
            log.error("agentprobe: %s", self.last_error)
        finally:
            if step.done is not None:
                step.done()

    def _insert_run(self, run: dict[str, Any] | None = None, *, ignore_existing: bool = False) -> None:
        assert self._conn is not None
        self._conn.execute(
            f"INSERT {'OR IGNORE ' if ignore_existing else ''}INTO runs (id, started_at, label, command,"
            " config_sha256, status, calls_lost, mode, parent_run_id, agentprobe_version, fastpath, alive_at,"
            " alive_every_s, " + ", ".join(SESSION_COLUMNS) + ") VALUES (:id,"
            " :started_at, :label, :command, :config_sha256, 'running', 0, :mode, :parent_run_id, :agentprobe_version,"
            " :fastpath, :alive_at, :alive_every_s, " + ", ".join(":" + c for c in SESSION_COLUMNS) + ")",
            {
                "alive_at": now_iso(),
                "alive_every_s": HEARTBEAT_S,
                "label": None,
                "command": None,
                "config_sha256": None,
                "mode": None,
                "parent_run_id": None,
                "agentprobe_version": None,
                "fastpath": None,
                **dict.fromkeys(SESSION_COLUMNS),
                **(self.run if run is None else run),
            },
        )

    def close(self, *, status: str = "completed", exit_code: int | None = None, ended_at: str,
              drop_if_empty: bool = False, **run: str) -> None:
        """drop_if_empty: the recorder's own run only stood behind its session runs; if it holds no call
        and lost none, delete it rather than leave an empty run in every listing."""
        self._stop_workers()
        if self._pg:  # a server that went away during the run gets one more chance to take the run's end
            self._reconnect_at = 0.0
            self._connected()
        self.run_ended = self._update_run(ended_at=ended_at, status=status, exit_code=exit_code, **run)
        if drop_if_empty:
            with suppress(sqlite3.DatabaseError):
                self._conn.execute("DELETE FROM runs WHERE id = ? AND calls_lost = 0 AND NOT EXISTS"
                                   " (SELECT 1 FROM calls WHERE run_id = ?)", (self.run["id"], self.run["id"]))
        for run_id, lost_before in list(self._segments.items()):  # begun and never ended: the recorder stopped
            with suppress(sqlite3.DatabaseError):
                self._update_run_row(run_id, {"status": "interrupted", "ended_at": ended_at,
                                              "calls_lost": self.calls_lost - lost_before})
        self._segments.clear()
        assert self._conn is not None
        try:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.DatabaseError:
            pass
        self._conn.close()
        self._reserve.drop()

    def discard(self) -> None:
        """Undo start() when the proxy never came up: no traffic, so no run to keep."""
        self._stop_workers()
        assert self._conn is not None
        self._conn.execute("DELETE FROM runs WHERE id = ? AND NOT EXISTS (SELECT 1 FROM calls WHERE run_id = ?)",
                           (self.run["id"], self.run["id"]))
        self._conn.close()
        self._reserve.drop()

    @property
    def boosts(self) -> int:
        return self.catch_up.boosts

    def _stop_workers(self) -> None:
        self.queue.put((time.monotonic(), _STOP))
        self._drained.wait()  # the watcher may still hand the rest to a faster worker meanwhile
        self.catch_up.stop()
        self._settle()  # a worker that died of a bug may have left a batch in flight
        if self._broken:
            left = 0
            while True:
                try:
                    _, item = self.queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, _Lost):
                    left += item.n
                elif isinstance(item, _Control):
                    if item.done is not None:
                        item.done()  # nobody will apply it; whoever waits for it must not wait forever
                elif item is not _STOP:
                    left += 1
            if left:
                self.calls_lost += left

    # -- the workers ------------------------------------------------------------------
    # One worker thread at a time builds and commits, in queue order; CatchUp decides which.
    def _spawn(self, predecessor: threading.Thread | None) -> threading.Thread:
        worker = threading.Thread(target=self._work, args=(predecessor,), name="agentprobe-writer", daemon=True)
        worker.start()
        return worker

    def _oldest_wait(self) -> float | None:
        with self.queue.mutex:
            head = self.queue.queue[0] if self.queue.queue else None
        return None if head is None else time.monotonic() - head[0]

    def _work(self, predecessor: threading.Thread | None) -> None:
        try:
            self._work_in_order(predecessor)
        except Exception as e:
            # Not a bad row (those are caught per row) but a writer bug: close() must not hang on it,
            # and what it leaves in the queue is counted when the writer stops.
            log.exception("the writer stopped")
            self.last_error = f"the writer stopped: {type(e).__name__}: {e}"
            self._broken = True
            self._drained.set()

    def _work_in_order(self, predecessor: threading.Thread | None) -> None:
        if not self.catch_up.begin(predecessor):
            return
        item, built = self.catch_up.take_over()
        deadline = time.monotonic() + self.linger_s
        while True:
            if item is None:
                left = deadline - time.monotonic()
                if built and (left <= 0 or len(built) >= self.max_batch):
                    item = self._more_while_committing(built)
                    if item is None:
                        # Commit a batch per linger interval even with a backlog: a row is readable
                        # only once committed, and a 500-row batch takes the writer a while to build.
                        self._commit_batch(built)
                        built = []
                        continue
                else:
                    try:
                        if built:
                            _, item = self.queue.get(timeout=left)
                        elif self._wal_bytes:
                            _, item = self.queue.get(
                                timeout=CHECKPOINT_RETRY_S if self._checkpoint_partial else CHECKPOINT_IDLE_S)
                        else:
                            _, item = self.queue.get(timeout=max(0.01, self._beat_next - time.monotonic()))
                    except queue.Empty:
                        if built:
                            self._commit_batch(built)
                            built = []
                        else:
                            if self._wal_bytes:
                                self._checkpoint()
                            self._beat_if_due()
                        continue
            if item is _STOP:
                if built:
                    self._commit_batch(built)
                self._settle()
                self._drained.set()
                return
            if isinstance(item, _Lost):
                self._lost(item.n, item.why)
                item = None
                continue
            if isinstance(item, _Control):
                if built:  # what came before the step belongs before it
                    self._commit_batch(built)
                    built = []
                self._apply(item)
                item = None
                continue
            if self.catch_up.must_hand_over():
                self.catch_up.hand_over(item, built)
                return
            if not built:
                deadline = time.monotonic() + self.linger_s
            # Build each row as its call arrives and commit the batch at the end: building a
            # whole batch at once is a CPU burst of milliseconds that the agent's processes,
            # sharing the cores, feel in their tail latency.
            self._build_into(built, item)
            item = None

    def _commit_batch(self, built: list) -> None:
        if self._pg:
            # Half of a PostgreSQL commit's time is the server's, on the other core: committing from a
            # thread of its own lets the worker build the next batch meanwhile. One batch is in flight
            # at a time, so calls still commit in queue order, and whatever else touches the
            # connection settles first. The thread inherits the worker's CPU priority.
            self._settle()
            committer = threading.Thread(target=self._commit_in_background, args=(built,),
                                         name="agentprobe-commit", daemon=True)
            self._committing = committer
            committer.start()
        else:
            self._commit(built)
            if self._wal_bytes > CHECKPOINT_BYTES:
                self._checkpoint()
        self.catch_up.committed()
        self._beat_if_due()

    def _more_while_committing(self, built: list) -> Any:
        """PostgreSQL: the next call in the queue, when the batch is due but the last one is still being
        committed. Building it into this batch beats waiting: this batch could not commit sooner, and a
        bigger batch spreads a commit's round trips over more calls."""
        committer = self._committing
        if committer is None or not committer.is_alive() or len(built) >= self.max_batch:
            return None
        try:
            return self.queue.get_nowait()[1]
        except queue.Empty:
            return None

    def _commit_in_background(self, built: list) -> None:
        try:
            self._commit(built)
        except Exception as e:  # a bug, not a database error (those _commit counts): the batch is lost, loudly
            log.exception("the commit failed")
            self._lost(len(built), f"the commit failed: {type(e).__name__}: {e}")

    def _settle(self) -> None:
        """Wait for the batch in flight: the connection is then this thread's."""
        committer = self._committing
        if committer is not None and committer is not threading.current_thread():
            committer.join()
            self._committing = None

    def _beat_if_due(self) -> None:
        """Stamp the runs this writer is recording, at most every HEARTBEAT_S."""
        now = time.monotonic()
        if now < self._beat_next:
            return
        self._beat_next = now + HEARTBEAT_S
        self._settle()
        conn = self._conn
        if conn is None or (self._pg and conn.closed):
            return  # the outage is counted elsewhere; the next beat after reconnecting stamps them
        each = ("SELECT jsonb_array_elements_text(CAST(? AS jsonb))" if self._pg
                else "SELECT value FROM json_each(?)")
        try:
            conn.execute(f"UPDATE runs SET alive_at = ? WHERE ended_at IS NULL AND id IN ({each})",
                         [now_iso(), json.dumps([self.run["id"], *self._segments])])
            if not self._pg:
                self._wal_bytes += 4096  # so the idle checkpoint takes it: an idle recorder's WAL stays small
        except sqlite3.DatabaseError as e:  # busy, or gone: the next beat tries again
            log.debug("heartbeat skipped: %s", e)

    def _build_into(self, built: list, item: Any) -> None:
        try:
            built.append(self.build(item))
        except Exception as e:  # a bug in row building loses one call, loudly
            log.exception("could not build a call row")
            self._lost(1, f"row building failed: {type(e).__name__}: {e}")

    def _commit(self, built: list) -> None:
        if time.monotonic() < self._disk_full_until:
            # The disk was full a moment ago: count the batch rather than let it eat the space the
            # run row needs (and the agent's disk).
            self._lost(len(built), self.last_error or "disk full")
            return
        if self._pg and not self._connected():
            self._lost(len(built), self.last_error or "database unreachable")
            return
        for attempt in range(5):
            try:
                self._insert(built)
                self.calls_written += len(built)
                if not self._pg:
                    self._wal_bytes += sum(_size(rows) for rows in built)
                if self.on_written is not None:
                    self.on_written([rows.call for rows in built])
                return
            except sqlite3.OperationalError as e:
                self.last_error = str(e)
                if getattr(e, "connection_lost", False):  # the server went away: the next batch reconnects
                    break
                # "database is locked" is worth waiting for. A full disk or a read-only file is not:
                # retrying each batch with backoff made a recorder on a full disk take minutes to stop.
                if _full(e):
                    self._disk_full_until = time.monotonic() + DISK_FULL_PAUSE_S
                if not _transient(e):
                    break
                time.sleep(0.05 * (2**attempt))
            except sqlite3.DatabaseError as e:
                self.last_error = str(e)
                break
        self._lost(len(built), self.last_error or "write failed")

    def _insert(self, built: list) -> None:
        conn = self._conn
        assert conn is not None
        if self._pg:
            bodies, prompts, calls = _pg_rows(built)
            conn.write_batch([("bodies", list(BODY_COLUMNS), bodies), ("prompts", list(PROMPT_COLUMNS), prompts)],
                             calls, _updates(built))
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            insert_rows(conn, built)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with suppress(sqlite3.DatabaseError):  # a lost connection cannot roll back: it is gone
                    conn.execute("ROLLBACK")
            raise

    def _connected(self) -> bool:
        """PostgreSQL: is the connection up, or can it be brought back now? (At most every RECONNECT_EVERY_S.)"""
        conn = self._conn
        if conn is not None and not conn.closed:
            return True
        now = time.monotonic()
        if now < self._reconnect_at:
            return False
        self._reconnect_at = now + RECONNECT_EVERY_S
        try:
            conn.reconnect()
        except sqlite3.DatabaseError as e:
            self.last_error = str(e)
            return False
        log.warning("agentprobe: reconnected to %s", self.path)
        self._update_run()  # the losses of the outage, on the run row now that it can be written
        return True

    def _checkpoint(self) -> None:
        assert self._conn is not None
        if self._pg:
            self._wal_bytes = 0
            return
        try:
            busy, wal_pages, copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.DatabaseError as e:  # busy or locked: the next pause tries again
            log.debug("checkpoint skipped: %s", e)
            self._checkpoint_partial = True
            return
        # A reader's snapshot can hold frames back; then the WAL is still owed to the database.
        self._checkpoint_partial = bool(busy) or (wal_pages > 0 and copied < wal_pages)
        if not self._checkpoint_partial:
            self._wal_bytes = 0

    def _lost(self, n: int, why: str) -> None:
        self.calls_lost += n
        self.last_error = why
        log.error("agentprobe lost %d call record(s): %s", n, why)
        # Only the thread that has the connection updates the run row: the worker once the batch in
        # flight is done, or that batch's committer (the worker waits for it before it writes).
        me = threading.current_thread()
        if me is self.catch_up.worker:
            self._settle()
        elif me is not self._committing:
            return
        if not (self._pg and self._conn.closed):
            self._update_run()

    def _update_run_row(self, run_id: str, fields: dict[str, Any]) -> None:
        assert self._conn is not None
        sets = ", ".join(f"{k} = :{k}" for k in fields)
        self._conn.execute(f"UPDATE runs SET {sets} WHERE id = :run_id", {**fields, "run_id": run_id})

    def _update_run(self, **fields: Any) -> bool:
        fields["calls_lost"] = self.calls_lost
        sets = ", ".join(f"{k} = :{k}" for k in fields)
        assert self._conn is not None
        released = False
        for _ in range(2):
            try:
                self._conn.execute(f"UPDATE runs SET {sets} WHERE id = :run_id", {**fields, "run_id": self.run["id"]})
                if released:
                    self._reserve.hold()  # take back what is left, for the next update
                return True
            except sqlite3.DatabaseError as e:
                # On a full disk, the reserve makes room for the run row, so the loss is on record.
                if not (_full(e) and self._reserve.release()):
                    self.last_error = f"could not update run {self.run['id']}: {e}"
                    log.debug("%s", self.last_error)
                    return False
                released = True
        return False


def count_calls(conn: sqlite3.Connection, run_ids: list[str]) -> int:
    """The calls recorded in these runs (a recording with thousands of session runs: one parameter)."""
    return sum(count_calls_by_run(conn, run_ids).values())


def count_calls_by_run(conn: sqlite3.Connection, run_ids: list[str]) -> dict[str, int]:
    """The calls recorded in each of these runs that has any."""
    each = ("SELECT jsonb_array_elements_text(CAST(? AS jsonb))" if getattr(conn, "dialect", "sqlite") == "postgresql"
            else "SELECT value FROM json_each(?)")
    rows = conn.execute(f"SELECT run_id, count(*) FROM calls WHERE run_id IN ({each}) GROUP BY run_id",
                        [json.dumps(run_ids)]).fetchall()
    return {run_id: n for run_id, n in rows}


def insert_rows(conn: sqlite3.Connection, built: list) -> None:
    """Insert RowBuilder output (calls with their bodies and prompts) inside the caller's transaction."""
    if getattr(conn, "dialect", "sqlite") == "postgresql":
        bodies, prompts, calls = _pg_rows(built)
        conn.insert_rows("bodies", list(BODY_COLUMNS), bodies, ignore_conflicts=True)
        conn.insert_rows("prompts", list(PROMPT_COLUMNS), prompts, ignore_conflicts=True)
        for cols, group in calls:
            conn.insert_rows("calls", cols, group)
    else:
        _insert_rows_sqlite(conn, built)
    for sql, params in _updates(built):
        conn.execute(sql, params)


def _updates(built: list) -> list[tuple[str, list]]:
    # Rows completed by a later capture (MCP answers on a session stream, tool results returned),
    # after the inserts: the row may be in this same batch.
    return [(f"UPDATE calls SET {', '.join(f'{c} = ?' for c in fields)} WHERE id = ?", [*fields.values(), call_id])
            for call_id, fields in (u for rows in built for u in getattr(rows, "updates", ()))]


def _insert_rows_sqlite(conn: sqlite3.Connection, built: list) -> None:
    # One statement per kind and column set: each sqlite call lets the proxy thread take the
    # GIL back, so per-row statements starve this thread while traffic is heavy.
    conn.executemany(
        "INSERT OR IGNORE INTO bodies (id, content, size, content_type, truncated)"
        " VALUES (:id, :content, :size, :content_type, :truncated)",
        [body for rows in built for body in rows.bodies],
    )
    conn.executemany(
        "INSERT OR IGNORE INTO prompts (sha256, kind, text) VALUES (:sha256, :kind, :text)",
        [prompt for rows in built for prompt in rows.prompts],
    )
    insert_calls(conn, [rows.call for rows in built])


BODY_COLUMNS = ("id", "content", "size", "content_type", "truncated")
PROMPT_COLUMNS = ("sha256", "kind", "text")


def _pg_rows(built: list) -> tuple[list[tuple], list[tuple], list[tuple[list[str], list[tuple]]]]:
    """The batch's bodies and prompts (each once: a batch may repeat one) and its calls per column set,
    as tuples in column order."""
    bodies = {b["id"]: b for rows in built for b in rows.bodies}
    prompts = {p["sha256"]: p for rows in built for p in rows.prompts}
    by_columns: dict[tuple[str, ...], list[tuple]] = {}
    for rows in built:
        call = rows.call
        by_columns.setdefault(tuple(call), []).append(tuple(call.values()))
    return ([tuple(b[c] for c in BODY_COLUMNS) for b in bodies.values()],
            [tuple(p[c] for c in PROMPT_COLUMNS) for p in prompts.values()],
            [(list(cols), group) for cols, group in by_columns.items()])


def insert_calls(conn: sqlite3.Connection, calls: list[dict]) -> None:
    by_columns: dict[tuple[str, ...], list[dict]] = {}
    for call in calls:
        by_columns.setdefault(tuple(call), []).append(call)
    for cols, group in by_columns.items():
        conn.executemany(f"INSERT INTO calls ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)})", group)


def _transient(e: sqlite3.OperationalError) -> bool:
    text = str(e).lower()
    return "locked" in text or "busy" in text


def _full(e: sqlite3.DatabaseError) -> bool:
    return "full" in str(e).lower()


class NoReserve:
    """A server's disk is not ours to set space aside on."""

    owned = False

    def hold(self) -> None:
        pass

    def release(self) -> bool:
        return False

    def drop(self) -> None:
        pass


class Reserve:
    """A little disk space set aside beside the database, given back when the disk fills up.

    A run row that cannot be updated on a full disk would keep saying `running` and
    `calls_lost = 0` for a run that lost calls. Deleting this file frees the few pages the
    update needs.
    """

    BYTES = 1024 * 1024

    def __init__(self, path: Path) -> None:
        self.path = path
        self.owned = False

    def hold(self) -> None:
        if self.path.exists():
            return  # another writer's, or left by a killed one: either way it is there
        try:
            f = open(self.path, "xb")
        except OSError:
            return  # read-only, or a race with another writer
        self.owned = True
        try:
            f.write(b"\0" * self.BYTES)
            f.close()
        except OSError:
            with suppress(OSError):  # a full disk: keep what could be set aside
                f.close()

    def release(self) -> bool:
        """Free the space; False when there was none left to free."""
        try:
            self.path.unlink()
        except OSError:
            return False
        self.owned = False
        return True

    def drop(self) -> None:
        if self.owned:
            self.release()


def _size(rows: Any) -> int:
    """Bytes a call adds to the WAL: its bodies and prompts, and a 4 KB page for its row and indexes.

    Measured with batches of 500, a small call adds 4-8 KB of WAL, about this estimate;
    smaller batches rewrite more index pages per call, but they come with pauses, and a
    pause checkpoints anyway.
    """
    return (4096 + sum(len(b["content"]) for b in getattr(rows, "bodies", ()))
            + sum(len(p["text"]) for p in getattr(rows, "prompts", ())))
