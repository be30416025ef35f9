"""Portable traces: a run as one self-contained, versioned JSON file, or as HAR 1.2."""

from __future__ import annotations

FORMAT = "agentprobe-trace"
VERSION = 1


class TraceError(Exception):
    """A trace file a user must fix or upgrade for; the message names the file."""


def load_file(db_path, path, *, label: str | None = None) -> str:
    """Import a trace or HAR file into the database at db_path; the run id.

    A trace whose run is already in the database is not imported twice: its id is returned,
    so `replay --trace` and `diff` can be run on the same file again and again.
    """
    from pathlib import Path

    from ..store.db import open_db
    from .har import load_har
    from .import_json import load, read

    data = read(path)
    if "log" in data:
        return load_har(Path(db_path), data, label=label, source=Path(path).name)
    db = open_db(db_path, create=True)
    try:
        if db.execute("SELECT 1 FROM runs WHERE id = ?", [data["run"]["id"]]).fetchone():
            return data["run"]["id"]
        if label is not None:
            data["run"]["label"] = label
        return load(db, data, source=str(path))
    finally:
        db.conn.close()
