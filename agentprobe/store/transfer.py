"""`copy`: move runs, with their calls and the bodies and prompts those calls name, between stores.

Any store to any store (SQLite file <-> PostgreSQL). Each run is one transaction in the target.
Copying again is harmless: rows already there are kept (INSERT OR IGNORE on their ids), and
the run row takes the source's current state, so a run copied while it was still recording
gains the calls it recorded since.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .db import connect, open_db, resolve_path
from .queries import resolve_run

CHUNK = 5000
# calls columns that name a row of prompts (what RowBuilder stores there).
PROMPT_COLUMNS = ("system_prompt_sha256", "tools_sha256", "output_sha256")
BODY_COLUMNS = ("request_body", "response_body")


@dataclass
class Copied:
    runs: list[str] = field(default_factory=list)
    calls: int = 0  # new in the target
    bodies: int = 0
    prompts: int = 0


def _columns(conn, table: str) -> list[str]:
    return [d[0] for d in conn.execute(f"SELECT * FROM {table} LIMIT 0").description]


def copy_runs(refs: list[str], source, target) -> Copied:
    """Copy the runs `refs` names (ids, prefixes, `latest`) from source to target (paths or URLs)."""
    source, target = resolve_path(source), resolve_path(target)
    src = open_db(source)
    try:
        run_ids = list(dict.fromkeys(resolve_run(src, ref) for ref in refs))
        dst = connect(target, create=True)
        try:
            out = Copied()
            shared = {t: [c for c in _columns(src, t) if c in set(_columns(dst, t))]
                      for t in ("runs", "calls", "bodies", "prompts")}
            for run_id in run_ids:
                _copy_one(src, dst, run_id, shared, out)
                out.runs.append(run_id)
            return out
        finally:
            dst.close()
    finally:
        src.conn.close()


def _insert_many(dst, table: str, cols: list[str], rows: list) -> None:
    """INSERT OR IGNORE of many rows; on PostgreSQL by COPY through a staging table (pg.insert_rows),
    which copies a million calls in a fraction of executemany's time."""
    if hasattr(dst, "insert_rows"):
        dst.insert_rows(table, cols, [tuple(r) for r in rows], ignore_conflicts=True)
    else:
        dst.executemany(_insert_sql(table, cols), rows)


def _insert_sql(table: str, cols: list[str]) -> str:
    return f"INSERT OR IGNORE INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})"


def _count(conn, sql: str, params) -> int:
    return conn.execute(sql, params).fetchone()[0]


def _copy_one(src, dst, run_id: str, shared: dict[str, list[str]], out: Copied) -> None:
    run_cols = shared["runs"]
    run = src.execute(f"SELECT {', '.join(run_cols)} FROM runs WHERE id = ?", [run_id]).fetchone()
    dst.execute("BEGIN IMMEDIATE")
    try:
        dst.execute(_insert_sql("runs", run_cols), list(run))
        others = [c for c in run_cols if c != "id"]
        dst.execute(f"UPDATE runs SET {', '.join(f'{c} = ?' for c in others)} WHERE id = ?",
                    [v for c, v in zip(run_cols, run) if c != "id"] + [run_id])
        before = _count(dst, "SELECT count(*) FROM calls WHERE run_id = ?", [run_id])
        call_cols = shared["calls"]
        rows = src.execute(f"SELECT {', '.join(call_cols)} FROM calls WHERE run_id = ? ORDER BY seq",
                           [run_id]).fetchall()
        bodies, prompts = set(), set()
        for start in range(0, len(rows), CHUNK):
            chunk = rows[start:start + CHUNK]
            _insert_many(dst, "calls", call_cols, [list(r) for r in chunk])
            for r in chunk:
                row = dict(zip(call_cols, r))
                bodies.update(row[c] for c in BODY_COLUMNS if row.get(c))
                prompts.update(row[c] for c in PROMPT_COLUMNS if row.get(c))
        out.calls += _count(dst, "SELECT count(*) FROM calls WHERE run_id = ?", [run_id]) - before
        out.bodies += _copy_keyed(src, dst, "bodies", "id", shared["bodies"], sorted(bodies))
        out.prompts += _copy_keyed(src, dst, "prompts", "sha256", shared["prompts"], sorted(prompts))
        dst.execute("COMMIT")
    except BaseException:
        if dst.in_transaction:
            dst.execute("ROLLBACK")
        raise


def _copy_keyed(src, dst, table: str, key: str, cols: list[str], keys: list[str]) -> int:
    """Rows of table whose key is in keys and that the target lacks; how many were added."""
    added = 0
    for start in range(0, len(keys), CHUNK):
        part = keys[start:start + CHUNK]
        marks = ", ".join("?" for _ in part)
        have = {r[0] for r in dst.execute(f"SELECT {key} FROM {table} WHERE {key} IN ({marks})", part)}
        missing = [k for k in part if k not in have]
        if not missing:
            continue
        marks = ", ".join("?" for _ in missing)
        rows = [list(r) for r in src.execute(f"SELECT {', '.join(cols)} FROM {table} WHERE {key} IN ({marks})",
                                              missing)]
        if table == "bodies" and "content" in cols:
            at = cols.index("content")
            for r in rows:  # stored as the recorder stores it: text when it is UTF-8, else bytes
                if isinstance(r[at], (bytes, memoryview)):
                    try:
                        r[at] = bytes(r[at]).decode("utf-8")
                    except UnicodeDecodeError:
                        r[at] = bytes(r[at])
        _insert_many(dst, table, cols, rows)
        added += len(rows)
    return added
