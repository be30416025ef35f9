"""A run, its calls, and the (already redacted) bodies and prompt texts they reference, as JSON.

The output is canonical (sorted keys, calls by seq, bodies and prompts by id), so exporting,
importing and exporting again gives the same bytes.
"""

from __future__ import annotations

import base64
import json

import sqlite_utils

from .. import __version__
from ..store.queries import resolve_run
from . import FORMAT, VERSION


def _body(row: dict) -> dict:
    content = row["content"]
    if isinstance(content, str):
        content = content.encode()
    try:
        text, encoding = (content or b"").decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(content).decode(), "base64"
    return {"content": text, "encoding": encoding, "size": row["size"], "content_type": row["content_type"],
            "truncated": row["truncated"]}


def trace_dict(db: sqlite_utils.Database, run_ref: str) -> dict:
    run_id = resolve_run(db, run_ref)
    run = next(db.query("SELECT * FROM runs WHERE id = ?", [run_id]))
    calls = list(db.query("SELECT * FROM calls WHERE run_id = ? ORDER BY seq, id", [run_id]))
    body_ids = sorted({c[k] for c in calls for k in ("request_body", "response_body") if c[k]})
    hashes = sorted({c[k] for c in calls for k in ("system_prompt_sha256", "tools_sha256", "output_sha256",
                                                   "prompt_sha256") if c[k]})
    bodies = {row["id"]: _body(row) for row in _rows_where_in(db, "bodies", "id", body_ids)}
    prompts = {row["sha256"]: {"kind": row["kind"], "text": row["text"]}
               for row in _rows_where_in(db, "prompts", "sha256", hashes)}
    return {"format": FORMAT, "version": VERSION, "exported_by": f"agentprobe {__version__}",
            "run": run, "calls": calls, "bodies": bodies, "prompts": prompts}


def _rows_where_in(db: sqlite_utils.Database, table: str, column: str, keys: list, chunk: int = 500):
    """Rows whose column is one of keys, a few hundred per query: SQLite caps the parameters."""
    for i in range(0, len(keys), chunk):
        part = keys[i:i + chunk]
        yield from db.query(f"SELECT * FROM {table} WHERE {column} IN ({','.join('?' * len(part))})", part)


def dumps(trace: dict) -> str:
    return json.dumps(trace, sort_keys=True, indent=1, ensure_ascii=False) + "\n"
