"""The PostgreSQL backend: a psycopg 3 connection that the rest of the code uses like sqlite3's.

The writer, the migrations, import and the read side all talk to a connection with `execute`,
`executemany`, `in_transaction` and `close`, in SQLite's SQL and with sqlite3's exception
classes. `PgConnection` offers the same surface over psycopg: it translates each statement
(dialect.to_postgres), makes values come back as sqlite3 returns them (integers and floats, not
Decimal; 0/1, not booleans), and raises sqlite3's exception classes, with any password masked,
so every caller's error handling covers both backends without knowing which one it has.

psycopg is imported only here and only when a postgresql:// URL is used: it is an extra.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
from typing import Any
from urllib.parse import urlsplit

from . import dialect

INSTALL_HINT = "pip install 'agentprobe[postgres]'"
CONNECT_TIMEOUT_S = 5


class PgUrl:
    """A postgresql:// URL. Printing it (str, repr, f-strings) shows it with the password masked;
    only `.url`, handed to the driver, holds the password."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.masked = dialect.mask_url(url)
        try:
            self.password = urlsplit(url).password
        except ValueError:
            self.password = None

    def __str__(self) -> str:
        return self.masked

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return format(self.masked, spec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PgUrl) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    def mask(self, text: str) -> str:
        return dialect.mask_password(text, self.password)


def _psycopg():
    from .db import StoreError

    try:
        import psycopg
    except ImportError:
        raise StoreError(f"a postgresql:// database needs the PostgreSQL driver: {INSTALL_HINT}") from None
    # Its warnings repeat errors we raise ourselves, masked and on one line.
    logging.getLogger("psycopg").setLevel(logging.ERROR)
    return psycopg


_ADAPTERS = None


def _adapt(amap, psycopg) -> None:
    """Loaders and dumpers that make PostgreSQL's values look like SQLite's to the code."""
    global _ADAPTERS
    if _ADAPTERS is None:
        _ADAPTERS = _adapter_classes(psycopg)
    numeric, boolean = _ADAPTERS
    amap.register_loader("numeric", numeric)
    amap.register_loader("bool", boolean)
    # The code stores True as 1 in INTEGER columns: dumped as an integer (psycopg's C dumper; a
    # dumper written in Python here cost the writer a third of its throughput).
    from psycopg.types.numeric import Int8Dumper

    amap.register_dumper(bool, Int8Dumper)


def _adapter_classes(psycopg):
    from psycopg.adapt import Loader

    class Numeric(Loader):
        # sum() of integers and arithmetic with a 1.0 are numeric in PostgreSQL: an int when whole
        # (sum), a float otherwise, as SQLite returns them.
        def load(self, data):
            text = bytes(data).decode()
            try:
                return int(text)
            except ValueError:
                return float(text)

    class Bool(Loader):  # EXISTS (...) AS x, comparisons: 1 and 0, as SQLite
        def load(self, data):
            return 1 if bytes(data) == b"t" else 0

    return Numeric, Bool


# Columns of BLOB type: a str bound to one is stored as its UTF-8 bytes (PostgreSQL would parse
# a str as bytea's escape syntax, turning JSON's backslashes into other bytes).
BYTEA_COLUMNS = {("bodies", "content")}


@dialect.functools.lru_cache(maxsize=256)
def _bytea_slots(sql: str) -> tuple[tuple, ...]:
    m = re.match(r"\s*INSERT\s+(?:OR\s+\w+\s+)?INTO\s+(\w+)\s*\(([^)]*)\)", sql, flags=re.I)
    if not m:
        return ()
    table = m.group(1).lower()
    cols = [c.strip().lower() for c in m.group(2).split(",")]
    return tuple((i, c) for i, c in enumerate(cols) if (table, c) in BYTEA_COLUMNS)


def _encode_bytea(sql: str, params):
    slots = _bytea_slots(sql)
    if not slots or params is None:
        return params
    if isinstance(params, dict):
        out = dict(params)
        for _, col in slots:
            if isinstance(out.get(col), str):
                out[col] = out[col].encode()
        return out
    out = list(params)
    for i, _ in slots:
        if i < len(out) and isinstance(out[i], str):
            out[i] = out[i].encode()
    return out


def _encode_bytea_row(row, slots: list[int]):
    if not any(isinstance(row[i], str) for i in slots):
        return row
    row = list(row)
    for i in slots:
        if isinstance(row[i], str):
            row[i] = row[i].encode()
    return row


def _nul_error(e: Exception) -> bool:
    # psycopg refuses a str holding NUL before sending it: PostgreSQL text cannot hold one, SQLite's can.
    return "NUL" in str(e) or "0x00" in str(e)


def _without_nul(params):
    """The parameters with NUL in strings replaced (U+FFFD): the rare row that has one is stored, not lost."""
    def clean(v):
        return v.replace("\x00", "\ufffd") if isinstance(v, str) else v

    if isinstance(params, dict):
        return {k: clean(v) for k, v in params.items()}
    return [clean(v) for v in params]


class Cursor:
    """What the code reads from sqlite3's cursors: fetchone, fetchall, iteration, description, rowcount."""

    def __init__(self, cur=None, rows: list | None = None) -> None:
        self._cur = cur
        self._rows = rows

    def fetchone(self):
        if self._cur is None:
            return self._rows.pop(0) if self._rows else None
        return self._cur.fetchone() if self._cur.description is not None else None

    def fetchall(self):
        if self._cur is None:
            rows, self._rows = self._rows or [], []
            return rows
        return self._cur.fetchall() if self._cur.description is not None else []

    def __iter__(self):
        return iter(self.fetchall())

    @property
    def description(self):
        if self._cur is None or self._cur.description is None:
            return None
        return [(c.name, None, None, None, None, None, None) for c in self._cur.description]

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount if self._cur is not None else -1

    lastrowid = None


# The rules read the calls table run by run. With the default random_page_cost (4, set for spinning
# disks) the planner reads the whole table for each run's query once a run is a sizeable share of
# it; 1.1 is the usual setting for SSD-backed and managed servers, and makes those queries walk the
# (run_id, seq) index instead (bench: the PostgreSQL phase's scan --all). Only this session's, and
# only when the user set none (in the URL's options or PGOPTIONS).
PLANNER_OPTIONS = "-c random_page_cost=1.1"


def _planner_options(url: str) -> dict:
    if "random_page_cost" in url or "random_page_cost" in os.environ.get("PGOPTIONS", "") or "options=" in url:
        return {}
    return {"options": PLANNER_OPTIONS}


# Tables whose rows go over COPY's binary format, with each column's type. Text COPY hex-encodes a
# bytea value on the client (about 0.8 ms of the writer's CPU per 100 KB body, measured, against
# 0.05 ms in binary), which is the writer's main cost under large streams. Binary needs a value of
# exactly the declared type: a batch holding anything else goes as text.
BINARY_COPY = {"bodies": {"id": ("text", str), "content": ("bytea", bytes), "size": ("int8", int),
                          "content_type": ("text", str), "truncated": ("int8", int)}}


# Tables whose rows many calls share, by their key: inserted once, whichever writer comes first.
SHARED_KEYS = {"bodies": "id", "prompts": "sha256"}


# Shared rows go as one INSERT ... SELECT FROM unnest(arrays) ON CONFLICT DO NOTHING per table, each
# column an array of exactly this type (see PgConnection.write_batch).
UNNEST_TYPES = {"bodies": BINARY_COPY["bodies"],
                "prompts": {"sha256": ("text", str), "kind": ("text", str), "text": ("text", str)}}


COPY_SHARED_OVER_BYTES = 256 * 1024


def _payload_bytes(table: str, cols: list[str], rows: list) -> int:
    slots = [i for i, c in enumerate(cols) if (table, c) in BYTEA_COLUMNS]
    return sum(len(r[i]) for r in rows for i in slots if r[i] is not None)


def _binary_types(table: str, cols: list[str], rows: list, types_by_table: dict = BINARY_COPY) -> list[str] | None:
    types = types_by_table.get(table)
    if types is None or any(c not in types for c in cols):
        return None
    kinds = [types[c][1] for c in cols]
    for row in rows:
        for value, kind in zip(row, kinds):
            if value is not None and type(value) is not kind:
                return None
    return [types[c][0] for c in cols]


class PgConnection:
    """sqlite3.Connection's surface over a psycopg connection (autocommit; BEGIN/COMMIT as written)."""

    dialect = dialect.POSTGRESQL

    def __init__(self, url: PgUrl) -> None:
        self.url = url
        self._raw = None
        self._staging: set[str] = set()
        self.reconnect()

    def reconnect(self) -> None:
        psycopg = _psycopg()
        if self._raw is not None:
            try:
                self._raw.close()
            except Exception:  # noqa: BLE001 - a broken connection may fail to close; it is gone either way
                pass
            self._raw = None
        try:
            raw = psycopg.connect(self.url.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                                  application_name="agentprobe", **_planner_options(self.url.url))
        except psycopg.Error as e:
            raise self._error(e, connecting=True) from None
        _adapt(raw.adapters, psycopg)
        self._raw = raw
        self._staging = set()

    @property
    def closed(self) -> bool:
        return self._raw is None or self._raw.closed or self._raw.broken

    @property
    def in_transaction(self) -> bool:
        if self.closed:
            return False
        from psycopg.pq import TransactionStatus

        return self._raw.info.transaction_status != TransactionStatus.IDLE

    def _error(self, e: Exception, *, connecting: bool = False) -> sqlite3.Error:
        """sqlite3's class for a psycopg error, its message masked and on one line."""
        psycopg = _psycopg()
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        text = self.url.mask(first)
        if connecting or self.closed:  # no server, wrong credentials, or the connection died under us
            err = sqlite3.OperationalError(f"cannot connect to the PostgreSQL database {self.url}: {text}")
            err.connection_lost = True  # type: ignore[attr-defined]
            return err
        if isinstance(e, psycopg.OperationalError):  # a deadlock, a cancelled statement: the connection lives
            return sqlite3.OperationalError(text)
        if isinstance(e, psycopg.errors.IntegrityError):
            return sqlite3.IntegrityError(text)
        if isinstance(e, (psycopg.errors.InsufficientPrivilege, psycopg.errors.ReadOnlySqlTransaction)):
            return sqlite3.OperationalError(text)
        return sqlite3.DatabaseError(text)

    def execute(self, sql: str, params: Any = None) -> Cursor:
        head = sql.lstrip()[:6].upper()
        if head == "PRAGMA":  # SQLite's tuning knobs: nothing to do on a server
            return Cursor(rows=[])
        if self.closed:
            raise self._error(_psycopg().OperationalError("the connection is closed"))
        named = isinstance(params, dict)
        text = dialect.to_postgres(sql, named)
        params = _encode_bytea(sql, params if params is not None else ())
        try:
            try:
                cur = self._raw.execute(text, params if named else tuple(params))
            except _psycopg().DataError as e:
                if not _nul_error(e):
                    raise
                cur = self._raw.execute(text, _without_nul(params) if named else tuple(_without_nul(params)))
        except Exception as e:  # noqa: BLE001 - every driver error becomes sqlite3's, masked
            if isinstance(e, _psycopg().Error):
                raise self._error(e) from None
            raise
        return Cursor(cur)

    def executemany(self, sql: str, seq) -> Cursor:
        rows = list(seq)
        if not rows:
            return Cursor(rows=[])
        named = isinstance(rows[0], dict)
        text = dialect.to_postgres(sql, named)
        if _bytea_slots(sql):
            rows = [_encode_bytea(sql, r) for r in rows]
        rows = rows if named else [tuple(r) for r in rows]
        try:
            try:
                with self._raw.cursor() as cur:
                    # psycopg sends the batch in pipeline mode: one round trip, not one per row.
                    cur.executemany(text, rows)
            except _psycopg().DataError as e:
                if not _nul_error(e):
                    raise
                with self._raw.cursor() as cur:
                    cur.executemany(text, [_without_nul(r) for r in rows])
        except Exception as e:  # noqa: BLE001
            if isinstance(e, _psycopg().Error):
                raise self._error(e) from None
            raise
        return Cursor(rows=[])

    def insert_rows(self, table: str, cols: list[str], rows: list, *, ignore_conflicts: bool = False) -> None:
        """Many rows (tuples in cols order) at once, with COPY: straight into the table when no row can
        conflict (calls), else into a temporary twin that INSERT ... SELECT ... ON CONFLICT DO NOTHING
        empties (bodies and prompts, shared between calls). Measured, executemany's statement per row
        took the writer to 75% of SQLite's calls/s, and a multi-row VALUES statement to ~90%."""
        if not rows:
            return
        psycopg = _psycopg()
        rows = self._bytea_encoded(table, cols, rows)
        try:
            try:
                self._insert_rows(table, cols, rows, ignore_conflicts)
            except psycopg.DataError as e:
                if not _nul_error(e):
                    raise
                self._insert_rows(table, cols, [_without_nul(r) for r in rows], ignore_conflicts)
        except Exception as e:  # noqa: BLE001
            if isinstance(e, psycopg.Error):
                raise self._error(e) from None
            raise

    def write_batch(self, shared: list[tuple[str, list[str], list]], calls: list[tuple[list[str], list]],
                    statements: list[tuple[str, list]]) -> None:
        """A writer's batch as one transaction: shared rows (table, cols, rows; bodies and prompts,
        inserted unless stored), then call rows (cols, rows), then statements in SQLite's SQL with
        positional parameters.

        In four round trips: BEGIN and one INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING
        per shared table, pipelined; a COPY of the calls; COMMIT. insert_rows takes ten more for the
        same batch (a key check and a savepoint around each shared table's COPY), and the writer
        commits from a thread beside the one that builds rows, where each round trip also waits for
        the GIL to come back."""
        psycopg = _psycopg()
        shared = [(t, c, self._bytea_encoded(t, c, r)) for t, c, r in shared if r]
        try:
            try:
                self._write_batch(shared, calls, statements)
            except psycopg.DataError as e:
                if not _nul_error(e):
                    raise
                self._rollback()
                self._write_batch([(t, c, [_without_nul(r) for r in rows]) for t, c, rows in shared],
                                  [(c, [_without_nul(r) for r in rows]) for c, rows in calls],
                                  [(sql, _without_nul(params)) for sql, params in statements])
        except Exception as e:  # noqa: BLE001
            self._rollback()
            if isinstance(e, psycopg.Error):
                raise self._error(e) from None
            raise

    def _write_batch(self, shared, calls, statements) -> None:
        by_copy = []
        with self._raw.pipeline(), self._raw.cursor() as cur:
            cur.execute("BEGIN")
            for table, cols, rows in shared:
                types = _binary_types(table, cols, rows, UNNEST_TYPES)
                # COPY for a value of another type (SQLite's columns take any; COPY coerces it), and for
                # large bodies, which COPY writes straight into the table, where unnest copies them on
                # the server once more.
                if types is None or _payload_bytes(table, cols, rows) > COPY_SHARED_OVER_BYTES:
                    by_copy.append((table, cols, rows))
                    continue
                arrays = ", ".join(f"%b::{t}[]" for t in types)  # binary: text would hex-encode each bytea
                cur.execute(f"INSERT INTO {table} ({', '.join(cols)}) SELECT * FROM unnest({arrays})"
                            " ON CONFLICT DO NOTHING", [list(col) for col in zip(*rows)])
        for table, cols, rows in by_copy:
            self._insert_rows(table, cols, rows, True)
        for cols, rows in calls:
            if rows:
                self._copy("calls", cols, rows)
        for sql, params in statements:
            self._raw.execute(dialect.to_postgres(sql), tuple(params))
        self._raw.execute("COMMIT")

    def _rollback(self) -> None:
        if self.in_transaction:
            try:
                self._raw.execute("ROLLBACK")
            except Exception:  # noqa: BLE001 - a lost connection cannot roll back: it is gone
                pass

    @staticmethod
    def _bytea_encoded(table: str, cols: list[str], rows: list) -> list:
        slots = [i for i, c in enumerate(cols) if (table, c) in BYTEA_COLUMNS]
        return [_encode_bytea_row(r, slots) for r in rows] if slots else rows

    def _insert_rows(self, table: str, cols: list[str], rows: list, ignore_conflicts: bool) -> None:
        key = SHARED_KEYS.get(table) if ignore_conflicts else None
        if not ignore_conflicts:
            self._copy(table, cols, rows)
            return
        if key in cols:
            # Shared rows (a body or prompt many calls name): COPY the ones not stored yet straight into
            # the table. Through a staging table each large body was written, and compressed, twice
            # (2.2 ms against 0.3-0.8 ms per 100 KB body, measured). If another writer stores one of
            # them meanwhile, the savepoint undoes the COPY and the staging path below skips it.
            at = cols.index(key)
            stored = self._stored_keys(table, key, [r[at] for r in rows])
            rows = [r for r in rows if r[at] not in stored]
            if not rows:
                return
            try:
                with self._raw.transaction():
                    self._copy(table, cols, rows)
                return
            except _psycopg().errors.UniqueViolation:
                pass
        into = f"agentprobe_stage_{table}"
        names = ", ".join(cols)
        with self._raw.cursor() as cur:
            if into not in self._staging:  # per session: temporary tables die with the connection
                cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {into} (LIKE {table})")
                self._staging.add(into)
        self._copy(into, cols, rows, like=table)
        with self._raw.cursor() as cur:  # emptied and moved in one statement: one round trip less
            cur.execute(f"WITH moved AS (DELETE FROM {into} RETURNING {names})"
                        f" INSERT INTO {table} ({names}) SELECT {names} FROM moved ON CONFLICT DO NOTHING")

    def _stored_keys(self, table: str, key: str, keys: list) -> set:
        with self._raw.cursor() as cur:
            cur.execute(f"SELECT {key} FROM {table} WHERE {key} = ANY(%s)", [keys])
            return {k for (k,) in cur.fetchall()}

    def _copy(self, into: str, cols: list[str], rows: list, like: str | None = None) -> None:
        binary = _binary_types(like or into, cols, rows)
        with self._raw.cursor() as cur:
            with cur.copy(f"COPY {into} ({', '.join(cols)}) FROM STDIN" + (" (FORMAT BINARY)" if binary else "")) as copy:
                if binary:
                    copy.set_types(binary)
                for row in rows:
                    copy.write_row(row)

    def close(self) -> None:
        if self._raw is not None:
            try:
                self._raw.close()
            except Exception:  # noqa: BLE001
                pass
            self._raw = None

    def table_exists(self, name: str) -> bool:
        return self.execute("SELECT to_regclass(?) IS NOT NULL", [name]).fetchone()[0] == 1


class PgDatabase:
    """The slice of sqlite_utils.Database the read side uses: query (dicts), execute, conn."""

    dialect = dialect.POSTGRESQL

    def __init__(self, conn: PgConnection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Any = None) -> Cursor:
        return self.conn.execute(sql, params)

    def query(self, sql: str, params: Any = None):
        cur = self.conn.execute(sql, params)
        names = [d[0] for d in cur.description or []]
        for row in cur.fetchall():
            yield dict(zip(names, row))

    def close(self) -> None:
        self.conn.close()
