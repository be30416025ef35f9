"""Append-only schema migrations, one list for both backends.

Each migration runs once, in order, and is recorded by name in `_migrations`.
Never edit or reorder an existing migration: add a new one at the end.

A migration gets a connection with `execute` (sqlite3's, or pg.PgConnection, which translates
SQLite's DDL: see dialect.py) and writes SQLite's SQL; `dialect_of(conn)` tells the two apart
for the rare statement that must differ.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable

Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: list[tuple[str, Migration]] = []


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append((fn.__name__, fn))
    return fn


class SchemaTooNew(Exception):
    """The database was written by a newer agentprobe than this one."""


@migration
def m001_initial(conn: sqlite3.Connection) -> None:
    _script(
        conn,
        """
        CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            started_at TEXT,
            ended_at TEXT,
            label TEXT,
            command TEXT,
            config_sha256 TEXT,
            status TEXT,
            calls_lost INTEGER NOT NULL DEFAULT 0,
            exit_code INTEGER,
            mode TEXT,
            parent_run_id TEXT,
            agentprobe_version TEXT
        );
        CREATE TABLE bodies (
            id TEXT PRIMARY KEY,
            content BLOB,
            size INTEGER,
            content_type TEXT,
            truncated INTEGER NOT NULL DEFAULT 0
        );
        CREATE TABLE prompts (
            sha256 TEXT PRIMARY KEY,
            kind TEXT,
            text TEXT
        );
        CREATE TABLE calls (
            id TEXT PRIMARY KEY,
            run_id TEXT NOT NULL REFERENCES runs(id),
            seq INTEGER NOT NULL,
            completion_seq INTEGER,
            started_at TEXT,
            first_byte_at TEXT,
            ended_at TEXT,
            latency_ms REAL,
            ttft_ms REAL,
            method TEXT,
            scheme TEXT,
            host TEXT,
            port INTEGER,
            path TEXT,
            provider TEXT,
            api TEXT,
            model TEXT,
            response_model TEXT,
            response_id TEXT,
            stream INTEGER,
            include_usage INTEGER,
            temperature REAL,
            top_p REAL,
            max_tokens INTEGER,
            seed INTEGER,
            parallel_tool_calls INTEGER,
            status INTEGER,
            error_type TEXT,
            error_message TEXT,
            attempt INTEGER NOT NULL DEFAULT 1,
            retry_of TEXT,
            conversation_id TEXT,
            turn INTEGER,
            message_count INTEGER,
            system_prompt_sha256 TEXT,
            prompt_sha256 TEXT,
            tools_sha256 TEXT,
            request_sha256 TEXT,
            output_sha256 TEXT,
            input_tokens INTEGER,
            output_tokens INTEGER,
            cached_input_tokens INTEGER,
            reasoning_tokens INTEGER,
            usage_source TEXT,
            counted_input_tokens INTEGER,
            tokenizer TEXT,
            finish_reason TEXT,
            raw_finish_reason TEXT,
            stream_complete INTEGER,
            tool_calls TEXT,
            tool_result_ids TEXT,
            retry_after_s REAL,
            ratelimit TEXT,
            request_headers TEXT,
            response_headers TEXT,
            request_body TEXT REFERENCES bodies(id),
            response_body TEXT REFERENCES bodies(id),
            parse_error TEXT
        );
        CREATE INDEX calls_run_seq ON calls(run_id, seq);
        CREATE INDEX calls_conversation ON calls(conversation_id, turn);
        CREATE INDEX calls_request_sha ON calls(request_sha256);
        CREATE INDEX calls_prompt_sha ON calls(system_prompt_sha256);
        CREATE INDEX runs_label ON runs(label);
        """
    )


@migration
def m002_run_fastpath(conn: sqlite3.Connection) -> None:
    # Which of agentprobe's mitmproxy patches were active: on, off (and why), or the list.
    conn.execute("ALTER TABLE runs ADD COLUMN fastpath TEXT")


@migration
def m003_run_bypass(conn: sqlite3.Connection) -> None:
    # Connections of a traced command that went around the proxy (NULL: not checked), and who made
    # them: JSON with each process's pid and name, the remote address and port, and the count.
    conn.execute("ALTER TABLE runs ADD COLUMN bypassed_connections INTEGER")
    conn.execute("ALTER TABLE runs ADD COLUMN bypass_detail TEXT")


@migration
def m004_call_server_context(conn: sqlite3.Connection) -> None:
    # What the provider held of the conversation (previous_response_id, conversation, cachedContent):
    # the request alone then undercounts the context.
    conn.execute("ALTER TABLE calls ADD COLUMN server_context TEXT")


@migration
def m005_mcp(conn: sqlite3.Connection) -> None:
    # MCP calls (provider 'mcp', no api): one row per JSON-RPC request with the answer it got.
    for column, kind in (
        ("mcp_method", "TEXT"),  # initialize, server/discover, tools/list, tools/call, prompts/get, ...
        ("mcp_name", "TEXT"),  # what the method acts on: the tool, the prompt, the resource URI
        ("mcp_id", "TEXT"),  # the JSON-RPC id as typed JSON (1 and "1" differ)
        ("mcp_session", "TEXT"),  # a digest of the session id (Mcp-Session-Id, the legacy ?session_id=)
        ("mcp_protocol", "TEXT"),  # protocol revision, e.g. 2025-11-25 or 2026-07-28
        ("mcp_transport", "TEXT"),  # streamable_http | http+sse | stdio
        ("mcp_server", "TEXT"),  # the server's name (serverInfo)
        ("tool_arguments", "TEXT"),  # tools/call and prompts/get arguments, redacted canonical JSON (cut)
        ("arguments_sha256", "TEXT"),  # digest of the whole arguments
        ("tool_is_error", "INTEGER"),  # the result's isError
        ("rpc_error_code", "INTEGER"),  # a JSON-RPC error's code
        ("tool_call_id", "TEXT"),  # the model's tool call this execution ran
        ("asked_by_call_id", "TEXT"),  # calls.id of the LLM call whose answer asked for it
        ("returned_by_call_id", "TEXT"),  # calls.id of the LLM call that sent its result back to the model
        ("tool_link", "TEXT"),  # how the execution was matched: arguments | name | repeat
    ):
        conn.execute(f"ALTER TABLE calls ADD COLUMN {column} {kind}")
    conn.execute("CREATE INDEX calls_tool_call ON calls(tool_call_id)")
    # The tool rules read only a run's MCP rows; partial, so recording an LLM call never touches it.
    conn.execute("CREATE INDEX calls_mcp ON calls(run_id, mcp_method) WHERE provider = 'mcp'")


@migration
def m006_run_sessions(conn: sqlite3.Connection) -> None:
    # A long-running recorder splits its traffic into one run per agent session; each such run says
    # how it was keyed (header | traceparent | process | address | recorder) and who the client was.
    for column, kind in (
        ("session", "TEXT"),  # the client's name for the run (X-Agentprobe-Run), when it gave one
        ("session_key_by", "TEXT"),
        ("client_pid", "INTEGER"),  # the client process on the recorder's host
        ("client_command", "TEXT"),  # its command line, scrubbed as every stored command is
        ("client_address", "TEXT"),  # the client's IP address
        ("trace_id", "TEXT"),  # the W3C trace id (32 hex digits) of a run keyed by traceparent
    ):
        conn.execute(f"ALTER TABLE runs ADD COLUMN {column} {kind}")


@migration
def m007_run_alive(conn: sqlite3.Connection) -> None:
    # A recorder killed outright (or cut off from its database) cannot end its runs: they would show
    # as running for ever. The writer stamps its live runs every `alive_every_s`; a reader that sees
    # a running run whose stamp is well past due knows its recorder is gone (queries.liveness).
    conn.execute("ALTER TABLE runs ADD COLUMN alive_at TEXT")
    conn.execute("ALTER TABLE runs ADD COLUMN alive_every_s REAL")


@migration
def m008_pg_body_compression(conn: sqlite3.Connection) -> None:
    # PostgreSQL compresses a large bytea with pglz by default: about 0.8 ms of the server's CPU per
    # 100 KB body, which under streams of that size made it the writer's slowest step. lz4 (PostgreSQL
    # 14+, when the server was built with it) compresses the same bodies in a fifth of the time, and no
    # worse. Existing rows keep their compression; a server without lz4 keeps pglz. SQLite: nothing.
    if dialect_of(conn) != "postgresql":
        return
    for table, column in (("bodies", "content"), ("prompts", "text")):
        conn.execute("SAVEPOINT lz4")
        try:
            conn.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION lz4")
            conn.execute("RELEASE SAVEPOINT lz4")
        except sqlite3.Error:
            conn.execute("ROLLBACK TO SAVEPOINT lz4")


def dialect_of(conn) -> str:
    return getattr(conn, "dialect", "sqlite")


# Migrators of one PostgreSQL database take turns on this advisory lock (any 64-bit key of ours).
PG_MIGRATION_LOCK = 0x61676E7470726F62  # "agntprob"


def applied(conn) -> list[str]:
    if dialect_of(conn) == "postgresql":
        if not conn.table_exists("_migrations"):
            return []
        return [r[0] for r in conn.execute("SELECT name FROM _migrations ORDER BY applied_at, name")]
    if not conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='_migrations'"
    ).fetchone():
        return []
    return [r[0] for r in conn.execute("SELECT name FROM _migrations ORDER BY rowid")]


def check_not_newer(conn: sqlite3.Connection) -> None:
    known = {name for name, _ in MIGRATIONS}
    unknown = [name for name in applied(conn) if name not in known]
    if unknown:
        raise SchemaTooNew(
            f"database schema is newer than this agentprobe (unknown migration {unknown[0]}); upgrade agentprobe"
        )


def migrate(conn) -> list[str]:
    """Apply every migration not yet applied; return the names applied now."""
    if dialect_of(conn) != "postgresql":
        return _migrate(conn)
    # Several recorders starting at once on a new database: one migrates, the others wait and
    # then find nothing left to do. The lock is the session's, released even if a migration fails.
    conn.execute("SELECT pg_advisory_lock(?)", [PG_MIGRATION_LOCK])
    try:
        return _migrate(conn)
    finally:
        if not conn.closed:
            conn.execute("SELECT pg_advisory_unlock(?)", [PG_MIGRATION_LOCK])


def _migrate(conn) -> list[str]:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT)"
    )
    check_not_newer(conn)
    done = set(applied(conn))
    ran = []
    for name, fn in MIGRATIONS:
        if name in done:
            continue
        # BEGIN IMMEDIATE so two processes opening a new DB at once cannot both migrate.
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("SELECT 1 FROM _migrations WHERE name=?", (name,)).fetchone():
                conn.execute("ROLLBACK")
                continue
            fn(conn)
            conn.execute(
                "INSERT INTO _migrations (name, applied_at) VALUES (?, ?)",
                (name, dt.datetime.now(dt.UTC).isoformat()),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        ran.append(name)
    return ran


def _script(conn: sqlite3.Connection, sql: str) -> None:
    # executescript() would COMMIT the surrounding BEGIN IMMEDIATE; run statements one by one.
    for statement in sql.split(";"):
        if statement.strip():
            conn.execute(statement)
