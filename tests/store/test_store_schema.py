"""The database schema is a contract: DESIGN.md's names, append-only migrations."""

import sqlite3

import pytest
import sqlite_utils

from agentprobe.store.db import StoreError, connect, open_db
from agentprobe.store.migrations import MIGRATIONS, migrate

CONTRACT = {
    "runs": "id started_at ended_at label command config_sha256 status calls_lost",
    "calls": (
        "id run_id seq completion_seq started_at first_byte_at ended_at latency_ms ttft_ms method host path"
        " provider api model response_model stream temperature top_p max_tokens seed parallel_tool_calls"
        " status error_type error_message attempt retry_of conversation_id turn system_prompt_sha256"
        " prompt_sha256 tools_sha256 request_sha256 output_sha256 input_tokens output_tokens"
        " cached_input_tokens reasoning_tokens usage_source counted_input_tokens tokenizer finish_reason"
        " tool_calls retry_after_s request_body response_body"
    ),
    "bodies": "id content size",
    "prompts": "sha256 text",
    "_migrations": "name",
}


def test_contract_columns(tmp_path):
    db = open_db(tmp_path / "a.db", create=True)
    for table, names in CONTRACT.items():
        columns = set(db[table].columns_dict)
        missing = set(names.split()) - columns
        assert not missing, f"{table} lacks {missing}"


def test_migrations_recorded_once_and_idempotent(tmp_path):
    path = tmp_path / "a.db"
    conn = connect(path, create=True)
    names = [r[0] for r in conn.execute("SELECT name FROM _migrations ORDER BY rowid")]
    assert names == [name for name, _ in MIGRATIONS]
    assert migrate(conn) == []
    schema_before = conn.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
    conn.close()
    conn = connect(path, create=True)
    assert conn.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall() == schema_before


def test_wal_mode(tmp_path):
    conn = connect(tmp_path / "a.db", create=True)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_newer_schema_refused_and_untouched(tmp_path):
    path = tmp_path / "a.db"
    connect(path, create=True).execute("INSERT INTO _migrations VALUES ('m999_from_the_future', 'x')").connection.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="newer"):
        open_db(path)
    with pytest.raises(StoreError, match="newer"):
        open_db(path, create=True)
    assert path.read_bytes() == before


def test_missing_db_is_not_created_by_readers(tmp_path):
    path = tmp_path / "nope.db"
    with pytest.raises(StoreError, match="no agentprobe database"):
        open_db(path)
    assert not path.exists()


def test_garbage_file(tmp_path):
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError, match="not a readable SQLite database"):
        open_db(path)
    assert path.read_bytes() == b"this is not sqlite at all" * 100


def test_foreign_sqlite_db(tmp_path):
    path = tmp_path / "other.db"
    sqlite_utils.Database(path)["t"].insert({"a": 1})
    with pytest.raises(StoreError, match="not an agentprobe database"):
        open_db(path)


def test_plain_sqlite3_reads_it(tmp_path):
    path = tmp_path / "a.db"
    open_db(path, create=True)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# The whole schema a fresh database gets, column by column (as llm's test_migrate does): a
# migration that changes anything must change this too, so every change to the contract is seen.
EXPECTED_SCHEMA = """
_migrations.name TEXT PRIMARY KEY
_migrations.applied_at TEXT
bodies.id TEXT PRIMARY KEY
bodies.content BLOB
bodies.size INTEGER
bodies.content_type TEXT
bodies.truncated INTEGER NOT NULL DEFAULT 0
calls.id TEXT PRIMARY KEY
calls.run_id TEXT NOT NULL
calls.seq INTEGER NOT NULL
calls.completion_seq INTEGER
calls.started_at TEXT
calls.first_byte_at TEXT
calls.ended_at TEXT
calls.latency_ms REAL
calls.ttft_ms REAL
calls.method TEXT
calls.scheme TEXT
calls.host TEXT
calls.port INTEGER
calls.path TEXT
calls.provider TEXT
calls.api TEXT
calls.model TEXT
calls.response_model TEXT
calls.response_id TEXT
calls.stream INTEGER
calls.include_usage INTEGER
calls.temperature REAL
calls.top_p REAL
calls.max_tokens INTEGER
calls.seed INTEGER
calls.parallel_tool_calls INTEGER
calls.status INTEGER
calls.error_type TEXT
calls.error_message TEXT
calls.attempt INTEGER NOT NULL DEFAULT 1
calls.retry_of TEXT
calls.conversation_id TEXT
calls.turn INTEGER
calls.message_count INTEGER
calls.system_prompt_sha256 TEXT
calls.prompt_sha256 TEXT
calls.tools_sha256 TEXT
calls.request_sha256 TEXT
calls.output_sha256 TEXT
calls.input_tokens INTEGER
calls.output_tokens INTEGER
calls.cached_input_tokens INTEGER
calls.reasoning_tokens INTEGER
calls.usage_source TEXT
calls.counted_input_tokens INTEGER
calls.tokenizer TEXT
calls.finish_reason TEXT
calls.raw_finish_reason TEXT
calls.stream_complete INTEGER
calls.tool_calls TEXT
calls.tool_result_ids TEXT
calls.retry_after_s REAL
calls.ratelimit TEXT
calls.request_headers TEXT
calls.response_headers TEXT
calls.request_body TEXT
calls.response_body TEXT
calls.parse_error TEXT
calls.server_context TEXT
calls.mcp_method TEXT
calls.mcp_name TEXT
calls.mcp_id TEXT
calls.mcp_session TEXT
calls.mcp_protocol TEXT
calls.mcp_transport TEXT
calls.mcp_server TEXT
calls.tool_arguments TEXT
calls.arguments_sha256 TEXT
calls.tool_is_error INTEGER
calls.rpc_error_code INTEGER
calls.tool_call_id TEXT
calls.asked_by_call_id TEXT
calls.returned_by_call_id TEXT
calls.tool_link TEXT
prompts.sha256 TEXT PRIMARY KEY
prompts.kind TEXT
prompts.text TEXT
runs.id TEXT PRIMARY KEY
runs.started_at TEXT
runs.ended_at TEXT
runs.label TEXT
runs.command TEXT
runs.config_sha256 TEXT
runs.status TEXT
runs.calls_lost INTEGER NOT NULL DEFAULT 0
runs.exit_code INTEGER
runs.mode TEXT
runs.parent_run_id TEXT
runs.agentprobe_version TEXT
runs.fastpath TEXT
runs.bypassed_connections INTEGER
runs.bypass_detail TEXT
runs.session TEXT
runs.session_key_by TEXT
runs.client_pid INTEGER
runs.client_command TEXT
runs.client_address TEXT
runs.trace_id TEXT
runs.alive_at TEXT
runs.alive_every_s REAL
index calls_conversation: calls(conversation_id, turn)
index calls_mcp: calls(run_id, mcp_method) WHERE provider = 'mcp'
index calls_prompt_sha: calls(system_prompt_sha256)
index calls_request_sha: calls(request_sha256)
index calls_run_seq: calls(run_id, seq)
index calls_tool_call: calls(tool_call_id)
index runs_label: runs(label)
"""


def describe(conn: sqlite3.Connection) -> str:
    out = []
    for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name"):
        for _, name, kind, notnull, default, pk in conn.execute(f"PRAGMA table_info({table})"):
            parts = [name, kind, "NOT NULL" if notnull else "", f"DEFAULT {default}" if default is not None else "",
                     "PRIMARY KEY" if pk else ""]
            out.append(f"{table}." + " ".join(p for p in parts if p))
    for name, sql in conn.execute("SELECT name, sql FROM sqlite_master WHERE type='index' AND sql IS NOT NULL"
                                  " ORDER BY name"):
        out.append(f"index {name}: {sql.split(' ON ', 1)[1]}")
    return "\n".join(out)


def test_the_whole_schema(tmp_path):
    assert describe(connect(tmp_path / "a.db", create=True)) == EXPECTED_SCHEMA.strip()


def test_an_old_database_migrates_to_the_same_schema(tmp_path):
    """A database made by the first release, then opened by this one, ends up exactly like a new one."""
    old = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    old.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT)")
    name, first = MIGRATIONS[0]
    first(old)
    old.execute("INSERT INTO _migrations VALUES (?, 'then')", [name])
    old.execute("INSERT INTO runs (id, status) VALUES ('r1', 'completed')")
    old.close()
    conn = connect(tmp_path / "old.db", create=True)
    assert describe(conn) == EXPECTED_SCHEMA.strip()
    assert conn.execute("SELECT id, status FROM runs").fetchall() == [("r1", "completed")]
