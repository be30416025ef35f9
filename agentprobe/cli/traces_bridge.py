"""`--trace FILE` for commands that read runs: the file is imported, then read like any run."""

from __future__ import annotations

from ..store.db import resolve_path
from ..traces import TraceError, load_file
from .errors import UserError


def import_trace_for_replay(trace_file, db) -> tuple:
    """(database path, run id) after loading trace_file into the database (idempotent)."""
    path = resolve_path(db)
    try:
        return path, load_file(path, trace_file)
    except TraceError as e:
        raise UserError(str(e)) from None
