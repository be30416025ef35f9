"""Load a trace file into a database: checked against the shipped schema, inserted as-is."""

from __future__ import annotations

import base64
import json
from importlib import resources
from pathlib import Path

import sqlite_utils

from ..util.jsonfile import read_json_file
from ..util.userfile import TRACE_LIMIT
from . import FORMAT, VERSION, TraceError


def schema() -> dict:
    return json.loads(resources.files("agentprobe.schemas").joinpath("trace.schema.json").read_text())


def read(path: str | Path) -> dict:
    """Parse and validate a trace or HAR file (HAR is returned as-is, marked by its `log` key)."""
    path = Path(path)
    data = read_json_file(path, "trace file", TraceError, invalid_hint=" (truncated?)", limit=TRACE_LIMIT)
    if isinstance(data, dict) and isinstance(data.get("log"), dict):
        return data
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise TraceError(f"{path} is not an agentprobe trace or a HAR file")
    version = data.get("version")
    if isinstance(version, int) and version > VERSION:
        raise TraceError(f"{path} is trace format version {version}, newer than this agentprobe reads ({VERSION});"
                         " upgrade agentprobe")
    import jsonschema

    errors = sorted(jsonschema.Draft202012Validator(schema()).iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        where = "/".join(str(p) for p in errors[0].absolute_path) or "(top level)"
        raise TraceError(f"{path}: field {where}: {errors[0].message}")
    return data


def load(db: sqlite_utils.Database, trace: dict, source: str = "trace") -> str:
    """Insert the trace's run; the run id is kept, so importing the same trace twice is refused."""
    run = trace["run"]
    if db["runs"].exists() and db.execute("SELECT 1 FROM runs WHERE id = ?", [run["id"]]).fetchone():
        raise TraceError(f"run {run['id']} from {source} is already in this database")
    conn = db.conn
    with conn:  # one transaction: a bad row leaves nothing behind
        _insert(conn, "runs", run)
        for body_id, body in trace["bodies"].items():
            content = body["content"].encode() if body["encoding"] == "utf-8" else base64.b64decode(body["content"])
            conn.execute("INSERT OR IGNORE INTO bodies (id, content, size, content_type, truncated)"
                         " VALUES (?, ?, ?, ?, ?)",
                         [body_id, content, body["size"], body["content_type"], body["truncated"]])
        for sha, prompt in trace["prompts"].items():
            conn.execute("INSERT OR IGNORE INTO prompts (sha256, kind, text) VALUES (?, ?, ?)",
                         [sha, prompt["kind"], prompt["text"]])
        for call in trace["calls"]:
            _insert(conn, "calls", call)
    return run["id"]


def _insert(conn, table: str, row: dict) -> None:
    known = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
    unknown = sorted(set(row) - known)
    if unknown:
        raise TraceError(f"the trace has {table} columns this database does not know ({', '.join(unknown)});"
                         " upgrade agentprobe")
    cols = list(row)
    conn.execute(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                 [row[c] for c in cols])
