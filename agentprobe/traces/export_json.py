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
    bodies = {}
    for i in range(0, len(body_ids), 500):
        chunk = body_ids[i:i + 500]
        for row in db.query(f"SELECT * FROM bodies WHERE id IN ({','.join('?' * len(chunk))})", chunk):
            bodies[row["id"]] = _body(row)
    prompts = {}
    for i in range(0, len(hashes), 500):
        chunk = hashes[i:i + 500]
        for row in db.query(f"SELECT * FROM prompts WHERE sha256 IN ({','.join('?' * len(chunk))})", chunk):
            prompts[row["sha256"]] = {"kind": row["kind"], "text": row["text"]}
    return {"format": FORMAT, "version": VERSION, "exported_by": f"agentprobe {__version__}",
            "run": run, "calls": calls, "bodies": bodies, "prompts": prompts}


def dumps(trace: dict) -> str:
    return json.dumps(trace, sort_keys=True, indent=1, ensure_ascii=False) + "\n"
