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
