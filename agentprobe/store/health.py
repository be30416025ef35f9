"""Is this database one agentprobe can read? Schema, integrity, value types, and the WAL beside it.

A damaged file used to surface as a traceback from whichever renderer first touched the bad
page or value. Now:

- opening a database for reading checks that every table has the columns its migrations made
  (cheap: one PRAGMA per table), so a "no such column" later is a bug of ours, not bad input;
- when a command then fails anyway, `diagnose` looks at the databases the process opened
  (`PRAGMA quick_check`, then typeof() of every typed column); if one is damaged, that is the
  one line the user sees, with the way to fix it, and only otherwise does the traceback show;
- a WAL whose tail SQLite will ignore (truncated, or frames that fail their checksum) is
  reported, because a read-write open would merge the valid part and delete the file.
"""

from __future__ import annotations

import functools
import shlex
import sqlite3
import struct
from pathlib import Path

from .migrations import MIGRATIONS, applied

TABLES = ("runs", "calls", "bodies", "prompts")
# SQLite's primary result codes (the low byte of an extended code).
SQLITE_CORRUPT, SQLITE_NOTADB = 11, 26
DAMAGE_CODES = {SQLITE_CORRUPT, SQLITE_NOTADB}
# The file or its surroundings, not its content: locked, read-only, unopenable, I/O error, disk full.
ENVIRONMENT_CODES = {5, 6, 8, 10, 13, 14}


def primary_code(e: sqlite3.Error) -> int | None:
    code = getattr(e, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def recover_hint(path: Path) -> str:
    p = shlex.quote(str(path))
    return f'copy out what is readable with: sqlite3 {p} ".recover" | sqlite3 recovered.db, then pass --db recovered.db'


@functools.lru_cache(maxsize=8)
def expected_columns(migrations: tuple[str, ...]) -> dict[str, dict[str, tuple[str, bool]]]:
    """{table: {column: (declared type, not null)}} after these migrations, from a scratch database."""
    mem = sqlite3.connect(":memory:", isolation_level=None)
    try:
        for name, fn in MIGRATIONS:
            if name in migrations or name == MIGRATIONS[0][0]:
                fn(mem)
        return {t: {r[1]: (r[2].upper(), bool(r[3])) for r in mem.execute(f"PRAGMA table_info({t})")}
                for t in TABLES}
    finally:
        mem.close()


def _expected(conn: sqlite3.Connection) -> dict[str, dict[str, tuple[str, bool]]]:
    return expected_columns(tuple(applied(conn)))


def check_schema(conn: sqlite3.Connection, path: Path) -> str | None:
    """The first table or column the applied migrations made that is missing, as a message."""
    for table, columns in _expected(conn).items():
        have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        if not have:
            return f"{path} has no {table} table: it is not an agentprobe database, or it was damaged"
        missing = [c for c in columns if c not in have]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            return (f"{path}: table {table} has no column {missing[0]}{more}; agentprobe made it, so the schema was"
                    f" altered or damaged: restore the file from a copy, or record into a new --db")
    return None


_ALLOWED = {"INTEGER": ("integer",), "REAL": ("real", "integer"), "TEXT": ("text",)}


def check_types(conn: sqlite3.Connection, path: Path) -> str | None:
    """The first typed column of runs or calls holding a value of another type, as a message."""
    for table in ("runs", "calls"):
        columns = {c: t for c, t in _expected(conn)[table].items() if t[0] in _ALLOWED}
        if not columns:
            continue
        tests = {c: f"typeof({c}) NOT IN ({', '.join(repr(a) for a in _ALLOWED[t] + (() if nn else ('null',)))})"
                 for c, (t, nn) in columns.items()}
        row = conn.execute(f"SELECT {', '.join(f'sum({sql})' for sql in tests.values())} FROM {table}").fetchone()
        for (column, (kind, _nn)), bad in zip(columns.items(), row):
            if not bad:
                continue
            rowid, value, found = conn.execute(
                f"SELECT id, {column}, typeof({column}) FROM {table} WHERE {tests[column]} LIMIT 1").fetchone()
            shown = repr(value if not isinstance(value, bytes) else value[:20])[:60]
            p = shlex.quote(str(path))
            return (f"{path}: {table}.{column} is an {kind} column but holds {found} in {bad} row(s) (e.g. {table[:-1]}"
                    f" {rowid}: {shown}): clear them with sqlite3 {p}"
                    f" \"UPDATE {table} SET {column} = NULL WHERE typeof({column}) = '{found}'\"")
    return None


def check_integrity(conn: sqlite3.Connection, path: Path) -> str | None:
    rows = [r[0] for r in conn.execute("PRAGMA quick_check(10)")]
    if rows == ["ok"]:
        return None
    found = [line.strip() for row in rows for line in str(row).splitlines() if line.strip() and "***" not in line]
    more = f", and {len(found) - 1} more" if len(found) > 1 else ""
    return f"{path}: database disk image is malformed ({found[0] if found else 'quick_check'}{more}): {recover_hint(path)}"


def diagnose(path: Path) -> str | None:
    """What is wrong with the database at path, as one line, or None when nothing is found."""
    from .db import read_only

    try:
        conn = read_only(path)
    except sqlite3.Error as e:
        return f"{path} cannot be opened ({e})"
    try:
        for check in (check_integrity, check_schema, check_types):
            try:
                problem = check(conn, path)
            except sqlite3.DatabaseError as e:
                if primary_code(e) in DAMAGE_CODES:
                    return f"{path}: {e}: {recover_hint(path)}"
                raise
            if problem:
                return problem
        return None
    finally:
        conn.close()


# -- the write-ahead log ----------------------------------------------------------------------------
_WAL_MAGIC = (0x377F0682, 0x377F0683)  # little- or big-endian checksums
_WAL_HEADER, _FRAME_HEADER = 32, 24


def _checksum(data: bytes, s0: int, s1: int, big_endian: bool) -> tuple[int, int]:
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def _shm_index(path: Path) -> tuple[int, int, int, int, tuple[int, int], tuple[int, int]] | None:
    """(mxFrame, page size, big-endian checksums, ..., last frame's checksum, salts) from the -shm
    wal-index header SQLite keeps for the WAL, when a connection has built it; else None."""
    try:
        with open(path.with_name(path.name + "-shm"), "rb") as f:
            header = f.read(48)
    except OSError:
        return None
    if len(header) < 48:
        return None
    version, _unused, _change, is_init, big, page_size, mx_frame, _pages, fc0, fc1 = \
        struct.unpack("=3I2BH4I", header[:32])
    salt1, salt2 = struct.unpack(">2I", header[32:40])  # copied byte for byte from the WAL header
    if version != 3007000 or not is_init:
        return None
    return mx_frame, 65536 if page_size == 1 else page_size, big, 0, (fc0, fc1), (salt1, salt2)


def wal_problem(path: Path) -> str | None:
    """Bytes of path's WAL that SQLite ignores although they belong to it, as a message.

    SQLite replays the WAL up to its last frame that passes the checksum and ends a transaction,
    and quietly drops the rest. Frames of an older generation (other salts) are normal leftovers,
    and so are whole frames of a transaction that never committed; a cut frame, or a frame of the
    current generation that fails its checksum, is not. Call it with a connection open on the
    database: SQLite's wal-index (-shm) then says where the valid part ends, and only the rest is
    read; without one, the whole WAL is checked.
    """
    wal = path.with_name(path.name + "-wal")
    try:
        size = wal.stat().st_size
        if size == 0:
            return None
        with open(wal, "rb") as f:
            header = f.read(_WAL_HEADER)
            if len(header) < _WAL_HEADER:
                return _wal_message(wal, size, size, "it is shorter than a WAL header")
            magic, _version, page_size, _seq, salt1, salt2, c0, c1 = struct.unpack(">8I", header)
            if magic not in _WAL_MAGIC or page_size < 512 or page_size & (page_size - 1):
                return _wal_message(wal, size, size, "its header is not a WAL header")
            big = magic & 1 == 1
            s0, s1 = _checksum(header[:24], 0, 0, big)
            if (s0, s1) != (c0, c1):
                return _wal_message(wal, size, size, "its header fails its checksum")
            frame_size = _FRAME_HEADER + page_size
            index = _shm_index(path)
            valid = 0
            if index is not None and index[1] == page_size and index[5] == (salt1, salt2) and index[0] > 0:
                valid = index[0]  # frames SQLite found valid, up to a commit
                s0, s1 = index[4]
            good_end = _WAL_HEADER + valid * frame_size
            if good_end > size:
                return None  # the index is newer than what we measured: a writer is at work
            f.seek(good_end)
            while True:
                frame = f.read(frame_size)
                if not frame:
                    return None
                if len(frame) < frame_size:  # SQLite writes whole frames: a cut one is a cut file
                    return _wal_message(wal, size, size - good_end, "it ends in the middle of a frame")
                _page, commit, fs1, fs2, fc0, fc1 = struct.unpack(">6I", frame[:_FRAME_HEADER])
                if (fs1, fs2) != (salt1, salt2):
                    return None  # an older generation's frames: SQLite ignores them, rightly
                s0, s1 = _checksum(frame[:8], s0, s1, big)
                s0, s1 = _checksum(frame[_FRAME_HEADER:], s0, s1, big)
                if (s0, s1) != (fc0, fc1):
                    return _wal_message(wal, size, size - good_end, "a frame fails its checksum")
                if commit:
                    good_end = f.tell()
    except OSError:
        return None


def _wal_message(wal: Path, size: int, ignored: int, why: str) -> str:
    what = f"its last {ignored:,} of {size:,} bytes" if ignored < size else "all of it"
    return (f"{wal} is damaged ({why}): SQLite ignores {what}; this command reads the database without them and"
            f" leaves the file as it is: copy it away before anything writes to this database (record, trace,"
            f" import), which would merge what is readable and delete the rest")
