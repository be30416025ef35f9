"""Timestamps and ids in the forms the database contract uses."""

from __future__ import annotations

import datetime as dt

from ulid import ULID


def iso(ts: float | None) -> str | None:
    """Epoch seconds -> ISO 8601 UTC with milliseconds, or None."""
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def new_id() -> str:
    """A ULID: sortable by creation time, so `latest` is simply the max id."""
    return str(ULID())
