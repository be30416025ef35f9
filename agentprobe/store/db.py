"""Find, open and validate the agentprobe database."""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

import sqlite_utils

from . import dialect
from .migrations import SchemaTooNew, check_not_newer, migrate

DEFAULT_PATH = Path(".agentprobe") / "agentprobe.db"


class StoreError(Exception):
    """A database problem a user can fix; the message says how."""


def resolve_path(db=None):
    """The database a command uses: a SQLite file's Path, or a PgUrl for postgresql://."""
    from .pg import PgUrl

    value = db or os.environ.get("AGENTPROBE_DB") or DEFAULT_PATH
    if isinstance(value, PgUrl):
        return value
    if dialect.is_url(str(value)):
        return PgUrl(str(value))
    return Path(value)


def is_postgres(target) -> bool:
    from .pg import PgUrl

    return isinstance(target, PgUrl)


def connect_postgres(url, *, create: bool):
    """A connection to a migrated PostgreSQL database (see pg.PgConnection); StoreError on failure."""
    from .pg import PgConnection

    try:
        conn = PgConnection(url)
    except sqlite3.Error as e:
        raise StoreError(str(e)) from None
    try:
        if create:
            migrate(conn)
        else:
            check_not_newer(conn)
            if not conn.table_exists("calls"):
                raise StoreError(f"{url} is not an agentprobe database (no calls table): record into it first"
                                 " (agentprobe record --db URL) or import a trace")
    except SchemaTooNew as e:
        conn.close()
        raise StoreError(f"{url}: {e}") from None
    except sqlite3.Error as e:
        conn.close()
        raise StoreError(f"cannot use {url}: {e}") from None
    except BaseException:
        conn.close()
        raise
    return conn


def _tune(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA foreign_keys = OFF")


# Every database this process opened, for health.diagnose when a command fails (cli.main resets it).
OPENED: list[Path] = []


def read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection (URI mode=ro): it never writes the file, and never checkpoints or
    deletes its WAL, which a read-write connection does on close, dropping a damaged tail for good."""
    conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, check_same_thread=False,
                           isolation_level=None)
    try:
        _tune(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def connect(path, *, create: bool) -> sqlite3.Connection:
    """A connection to a migrated database; raises StoreError with a fix in its message.

    create=True: read-write, created and migrated if need be (the writer, import).
    create=False: an existing database, opened read-only, its schema and WAL checked.
    """
    from . import health

    if is_postgres(path):
        return connect_postgres(path, create=create)
    if not path.exists():
        if not create:
            raise StoreError(
                f"no agentprobe database at {path}: record a run first (agentprobe trace -- CMD) or pass --db"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
    elif path.is_dir():
        raise StoreError(f"{path} is a directory, not a database file")
    if path not in OPENED:
        OPENED.append(path)
    conn = None
    try:
        if create:
            conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            _tune(conn)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            migrate(conn)
        else:
            conn = read_only(path)
            check_not_newer(conn)  # the first read: SQLite has replayed the WAL, and indexed it in -shm
            damaged_wal = health.wal_problem(path)
            if damaged_wal:  # said to the user directly: a log handler may not be there to say it
                print(f"agentprobe: warning: {damaged_wal}", file=sys.stderr)
            if not conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='calls'"
            ).fetchone():
                raise StoreError(f"{path} is not an agentprobe database (no calls table)")
            problem = health.check_schema(conn, path)
            if problem:
                raise StoreError(problem)
    except BaseException as e:
        if conn is not None:
            conn.close()
        if isinstance(e, SchemaTooNew):
            raise StoreError(f"{path}: {e}") from None
        if isinstance(e, sqlite3.DatabaseError) and health.primary_code(e) in health.DAMAGE_CODES:
            raise StoreError(f"{path} is not a readable SQLite database ({e}): {health.recover_hint(path)}") from None
        if isinstance(e, sqlite3.OperationalError):  # locked, read-only, disk full: the file itself is fine
            raise StoreError(f"cannot use {path}: {e}") from None
        if isinstance(e, sqlite3.DatabaseError):
            raise StoreError(f"{path} is not a readable SQLite database ({e})") from None
        raise
    return conn


def open_db(db=None, *, create: bool = False) -> sqlite_utils.Database:
    """The read side's handle: sqlite_utils.Database, or pg.PgDatabase (the same query/execute)."""
    target = resolve_path(db)
    if is_postgres(target):
        from .pg import PgDatabase

        return PgDatabase(connect_postgres(target, create=create))
    return sqlite_utils.Database(connect(target, create=create))
