"""`prune`: delete old runs, their calls, and the bodies and prompts no call names any more.

Safe beside a recorder writing into the same store:
- a run still `running` is never deleted, however old (a long-running `record` keeps its run);
- bodies and prompts are shared between calls (deduplicated by hash), so one a new call is about
  to name must not be deleted as unreferenced. On SQLite, prune's transaction is BEGIN IMMEDIATE:
  the writer's batches and prune's check-and-delete take turns. On PostgreSQL, prune locks bodies
  and prompts against writes (SHARE ROW EXCLUSIVE) before it looks: batches that already wrote to
  them have committed by then, so their calls are seen, and later ones wait the moment prune takes.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import asdict, dataclass

from .db import StoreError, connect, is_postgres, resolve_path
from .transfer import BODY_COLUMNS, PROMPT_COLUMNS

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> dt.timedelta:
    """'30d', '12h', '2w', '90m', '45s' -> a timedelta; StoreError otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", text or "")
    if not m:
        raise StoreError(f"--older-than {text!r}: give a number and a unit, e.g. 30d, 12h, 2w (s, m, h, d, w)")
    return dt.timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])


@dataclass
class Pruned:
    runs: int = 0
    calls: int = 0
    bodies: int = 0
    body_bytes: int = 0
    prompts: int = 0
    prompt_bytes: int = 0
    kept_running: int = 0  # old runs left alone because they are still recording
    dry_run: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def prune(db, older_than: dt.timedelta, *, label: str | None = None, dry_run: bool = False,
          now: dt.datetime | None = None) -> Pruned:
    target = resolve_path(db)
    if not is_postgres(target) and not target.exists():  # pruning must never create a database
        raise StoreError(f"no agentprobe database at {target}: nothing to prune (pass --db)")
    cutoff = ((now or dt.datetime.now(dt.UTC)) - older_than).isoformat()
    conn = connect(target, create=True)
    try:
        return _prune(conn, cutoff, label, dry_run, pg=getattr(conn, "dialect", "sqlite") == "postgresql")
    finally:
        conn.close()


def _prune(conn, cutoff: str, label: str | None, dry_run: bool, pg: bool) -> Pruned:
    out = Pruned(dry_run=dry_run)
    where, params = "started_at < ?", [cutoff]
    if label is not None:
        where += " AND label = ?"
        params.append(label)
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Candidates in temporary tables, and one pass over calls per referencing column: no
        # index on those columns is needed (each would slow every recorded call), and no list of
        # ids grows past what one statement may bind.
        for table in ("prune_runs", "prune_bodies", "prune_prompts"):
            conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {table} (k TEXT PRIMARY KEY)")
            conn.execute(f"DELETE FROM temp.{table}")
        # Still recording: not ended, and stamped by its recorder within the retention window (or
        # written before runs were stamped). A run whose recorder died long ago goes like any other.
        live = ("(ended_at IS NULL AND coalesce(status, '') IN ('running', 'degraded')"
                " AND (alive_at IS NULL OR alive_at >= ?))")
        out.kept_running = conn.execute(f"SELECT count(*) FROM runs WHERE {where} AND {live}",
                                        [*params, cutoff]).fetchone()[0]
        conn.execute(f"INSERT INTO temp.prune_runs SELECT id FROM runs WHERE {where} AND NOT {live}",
                     [*params, cutoff])
        pruned = "run_id IN (SELECT k FROM temp.prune_runs)"
        for table, columns in (("prune_bodies", BODY_COLUMNS), ("prune_prompts", PROMPT_COLUMNS)):
            for column in columns:
                conn.execute(f"INSERT OR IGNORE INTO temp.{table} SELECT DISTINCT {column} FROM calls"
                             f" WHERE {pruned} AND {column} IS NOT NULL")
        out.runs = conn.execute("SELECT count(*) FROM temp.prune_runs").fetchone()[0]
        out.calls = conn.execute(f"SELECT count(*) FROM calls WHERE {pruned}").fetchone()[0]
        if not dry_run:
            conn.execute(f"DELETE FROM calls WHERE {pruned}")
            conn.execute("DELETE FROM runs WHERE id IN (SELECT k FROM temp.prune_runs)")
        if pg and not dry_run:
            conn.execute("LOCK TABLE bodies, prompts IN SHARE ROW EXCLUSIVE MODE")
        # In a dry run the calls are still there: what would go is what only the pruned runs name.
        remaining = f" AND NOT {pruned}" if dry_run else ""
        for table, columns in (("prune_bodies", BODY_COLUMNS), ("prune_prompts", PROMPT_COLUMNS)):
            for column in columns:
                conn.execute(f"DELETE FROM temp.{table} WHERE k IN (SELECT {column} FROM calls"
                             f" WHERE {column} IS NOT NULL{remaining})")
        out.bodies, out.body_bytes = conn.execute(
            "SELECT count(*), coalesce(sum(coalesce(size, length(content))), 0) FROM bodies"
            " WHERE id IN (SELECT k FROM temp.prune_bodies)").fetchone()
        out.prompts, out.prompt_bytes = conn.execute(
            "SELECT count(*), coalesce(sum(length(text)), 0) FROM prompts"
            " WHERE sha256 IN (SELECT k FROM temp.prune_prompts)").fetchone()
        if not dry_run:
            conn.execute("DELETE FROM bodies WHERE id IN (SELECT k FROM temp.prune_bodies)")
            conn.execute("DELETE FROM prompts WHERE sha256 IN (SELECT k FROM temp.prune_prompts)")
        conn.execute("ROLLBACK" if dry_run else "COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return out
