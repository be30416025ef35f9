"""Find, open and validate the agentprobe database."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import sqlite_utils

from .migrations import SchemaTooNew, check_not_newer, migrate

DEFAULT_PATH = Path(".agentprobe") / "agentprobe.db"


class StoreError(Exception):
    """A database problem a user can fix; the message says how."""


def resolve_path(db: str | os.PathLike | None = None) -> Path:
    return Path(db or os.environ.get("AGENTPROBE_DB") or DEFAULT_PATH)


def _tune(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA foreign_keys = OFF")


def connect(path: Path, *, create: bool) -> sqlite3.Connection:
    """A connection to a migrated database; raises StoreError with a fix in its message."""
    if not path.exists():
        if not create:
            raise StoreError(
                f"no agentprobe database at {path}: record a run first (agentprobe trace -- CMD) or pass --db"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
    elif path.is_dir():
        raise StoreError(f"{path} is a directory, not a database file")
    try:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        _tune(conn)
        if create:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            migrate(conn)
        else:
            check_not_newer(conn)
            if not conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='calls'"
            ).fetchone():
                raise StoreError(f"{path} is not an agentprobe database (no calls table)")
    except SchemaTooNew as e:
        raise StoreError(f"{path}: {e}") from None
    except sqlite3.OperationalError as e:  # locked, read-only, disk full: the file itself is fine
        raise StoreError(f"cannot use {path}: {e}") from None
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{path} is not a readable SQLite database ({e})") from None
    return conn


def open_db(db: str | os.PathLike | None = None, *, create: bool = False) -> sqlite_utils.Database:
    return sqlite_utils.Database(connect(resolve_path(db), create=create))
