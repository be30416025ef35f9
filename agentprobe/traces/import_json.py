"""Load a trace file into a database: each part checked against the shipped schema, then inserted.

The caller holds the transaction (traces/__init__.py): nothing here commits, so a file that fails
on its last call leaves the database as it was.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import sqlite3
from importlib import resources
from pathlib import Path

from ..store.writer import insert_calls
from ..util.userfile import CappedReader
from . import FORMAT, VERSION, TraceError
from .stream import Skeleton, items, kvitems

BATCH = 500


@functools.lru_cache(maxsize=1)
def schema() -> dict:
    return json.loads(resources.files("agentprobe.schemas").joinpath("trace.schema.json").read_text())


@functools.lru_cache(maxsize=4)
def _validator(*path: str):
    import jsonschema

    part = schema()
    for key in path:
        part = part[key]
    return jsonschema.Draft202012Validator(part)


def _check(value, where: str, *schema_path: str, source: Path) -> None:
    validator = _validator(*schema_path)
    if validator.is_valid(value):
        return
    error = min(validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))
    field = "/".join([where, *map(str, error.absolute_path)])
    # A key of the file is in the path and in the message: one line however it is spelled (a "\n" key).
    message = f"{field}: {error.message}".encode("unicode_escape").decode("ascii")
    raise TraceError(f"{source}: field {message}")


def check_header(sk: Skeleton, path: Path) -> None:
    """Format and version first: a newer file is refused for what it is, not for its first odd field."""
    if sk.duplicates:
        raise TraceError(f"{path}: key {sk.duplicates[0]} appears more than once at the top level")
    if sk.scalars.get("format") != FORMAT:
        raise TraceError(f"{path} is not an agentprobe trace or a HAR file")
    if "version" not in sk.top:
        raise TraceError(f"{path} has no version: export the run again")
    version = sk.scalars.get("version")
    # Only the integer itself: 2.0 (a float) and true (a bool) are not versions this agentprobe knows.
    if type(version) is not int or version != VERSION:
        if isinstance(version, (int, float)) and not isinstance(version, bool) and version > VERSION:
            raise TraceError(f"{path} is trace format version {version}, newer than this agentprobe reads"
                             f" ({VERSION}); upgrade agentprobe")
        raise TraceError(f"{path}: version {json.dumps(version)} is not a trace format version this agentprobe"
                         f" knows (it reads {VERSION})")
    for key, kind in (("run", "map"), ("calls", "array"), ("bodies", "map"), ("prompts", "map")):
        if key not in sk.top:
            raise TraceError(f"{path}: field {key}: missing: export the run again")
        if sk.top[key] != kind:
            want = "an object" if kind == "map" else "an array"
            raise TraceError(f"{path}: field {key}: must be {want}")
    if "exported_by" in sk.top:
        _check(sk.scalars.get("exported_by"), "exported_by", "properties", "exported_by", source=path)


def read_run(f: CappedReader, path: Path) -> dict:
    run = next(items(f, path, "run", "run"))
    _check(run, "run", "properties", "run", source=path)
    return run


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    # The columns a SELECT * returns: the same question on SQLite and PostgreSQL.
    return {d[0] for d in conn.execute(f"SELECT * FROM {table} LIMIT 0").description}


def _known(row: dict, known: set[str], table: str, where: str, path: Path) -> None:
    unknown = sorted(set(row) - known)
    if unknown:
        raise TraceError(f"{path}: {where} has {table} columns this database does not know ({', '.join(unknown)});"
                         " upgrade agentprobe")


def calls_of(f: CappedReader, path: Path, run_id: str):
    """(index, call) for each call of the trace, checked against the schema and its run."""
    for n, call in enumerate(items(f, path, "calls.item", "call")):
        where = f"calls/{n}"
        _check(call, where, "properties", "calls", "items", source=path)
        if call["run_id"] != run_id:
            raise TraceError(f"{path}: field {where}/run_id: {call['run_id']!r} is not this trace's run"
                             f" ({run_id!r})")
        yield n, call


def bodies_of(f: CappedReader, path: Path):
    """(id, body as in the file, its bytes) for each body of the trace, checked."""
    body_schema = ("properties", "bodies", "additionalProperties")
    for body_id, body in kvitems(f, path, "bodies"):
        _check(body, f"bodies/{body_id}", *body_schema, source=path)
        if body["encoding"] == "utf-8":
            content = body["content"].encode("utf-8", "surrogatepass")
        else:
            try:
                content = base64.b64decode(body["content"], validate=True)
            except (binascii.Error, ValueError):
                raise TraceError(f"{path}: field bodies/{body_id}/content: not valid base64") from None
        yield body_id, body, content


def prompts_of(f: CappedReader, path: Path):
    prompt_schema = ("properties", "prompts", "additionalProperties")
    for sha, prompt in kvitems(f, path, "prompts"):
        _check(prompt, f"prompts/{sha}", *prompt_schema, source=path)
        yield sha, prompt


def load(conn: sqlite3.Connection, f: CappedReader, path: Path, run: dict, *, write: bool) -> int:
    """Check every call, body and prompt of the trace, and insert them when `write`; the call count."""
    run_id = run["id"]
    known_runs, known_calls = _columns(conn, "runs"), _columns(conn, "calls")
    _known(run, known_runs, "runs", "run", path)
    if write:
        _insert(conn, "runs", run, f"{path}: run")
    batch: list[dict] = []
    n = 0
    for i, call in calls_of(f, path, run_id):
        n = i + 1
        _known(call, known_calls, "calls", f"calls/{i}", path)
        if write:
            batch.append(call)
            if len(batch) >= BATCH:
                _insert_calls(conn, batch, n - len(batch), path)
                batch = []
    if write and batch:
        _insert_calls(conn, batch, n - len(batch), path)
    for body_id, body, content in bodies_of(f, path):
        if write:
            conn.execute("INSERT OR IGNORE INTO bodies (id, content, size, content_type, truncated)"
                         " VALUES (?, ?, ?, ?, ?)",
                         [body_id, content, body.get("size"), body.get("content_type"), body.get("truncated") or 0])
    for sha, prompt in prompts_of(f, path):
        if write:
            conn.execute("INSERT OR IGNORE INTO prompts (sha256, kind, text) VALUES (?, ?, ?)",
                         [sha, prompt.get("kind"), prompt["text"]])
    return n


def _insert(conn: sqlite3.Connection, table: str, row: dict, where: str) -> None:
    cols = list(row)
    try:
        conn.execute(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                     [row[c] for c in cols])
    except sqlite3.IntegrityError as e:
        raise TraceError(f"{where}: {_integrity(e)}") from None


def _insert_calls(conn: sqlite3.Connection, calls: list[dict], first: int, path: Path) -> None:
    conn.execute("SAVEPOINT calls_batch")
    try:
        insert_calls(conn, calls)
        conn.execute("RELEASE calls_batch")
        return
    except sqlite3.IntegrityError:
        conn.execute("ROLLBACK TO calls_batch")
        conn.execute("RELEASE calls_batch")
    # Which one: row by row, inside the same transaction, so the message can name it.
    for i, call in enumerate(calls, first):
        ids = [r[0] for r in conn.execute("SELECT run_id FROM calls WHERE id = ?", [call["id"]])]
        if ids:
            where = "appears twice in the file" if ids[0] == call["run_id"] else f"is already in run {ids[0]}"
            raise TraceError(f"{path}: field calls/{i}/id: call id {call['id']!r} {where}")
        _insert(conn, "calls", call, f"{path}: calls/{i}")


def _integrity(e: sqlite3.IntegrityError) -> str:
    text = str(e)
    if text.startswith("NOT NULL constraint failed: "):
        return f"{text.rsplit('.', 1)[-1]} must not be null"
    if text.startswith("UNIQUE constraint failed: "):
        return f"{text.rsplit('.', 1)[-1]} is already in this database"
    return text
