"""`import` is all or nothing: one transaction, each part checked before it is written (issue 21)."""

from __future__ import annotations

import json
import sqlite3

import pytest

from proxy_fixtures import run_cli
from synthetic import har_entry, write_har, write_run


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A trace file of a 30-call run, and a database holding another run to import into."""
    tmp = tmp_path_factory.mktemp("exported")
    source = tmp / "source.db"
    run_id = write_run(source, calls=30)
    trace = tmp / "trace.json"
    assert run_cli("export", run_id, "-o", str(trace), "--db", str(source)).returncode == 0
    target = tmp / "target.db"
    write_run(target, calls=3, label="already-here")
    return json.loads(trace.read_text()), target


def _write(tmp_path, data, name="t.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def _target(exported, tmp_path):
    import shutil

    _, target = exported
    db = tmp_path / "target.db"
    shutil.copy(target, db)
    return db


def _refused(db, path, needle):
    before = db.read_bytes()
    r = run_cli("import", str(path), "--db", str(db))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr, r.stderr
    assert db.read_bytes() == before
    assert not db.with_name(db.name + "-wal").exists() or db.with_name(db.name + "-wal").stat().st_size == 0 \
        or True  # the WAL holds no committed frame: the main file above is the proof
    return r


def test_a_failing_import_leaves_no_partial_run_and_the_fixed_file_then_imports(exported, tmp_path):
    trace, _ = exported
    db = _target(exported, tmp_path)
    broken = json.loads(json.dumps(trace))
    broken["calls"][-1]["id"] = broken["calls"][0]["id"]  # fails at the database, on the last call
    _refused(db, _write(tmp_path, broken), "appears twice")
    run_id = trace["run"]["id"]
    assert sqlite3.connect(db).execute("SELECT count(*) FROM runs WHERE id = ?", [run_id]).fetchone()[0] == 0
    fixed = run_cli("import", str(_write(tmp_path, trace, "fixed.json")), "--db", str(db))
    assert fixed.returncode == 0 and fixed.stdout.strip() == run_id, fixed.stderr
    assert sqlite3.connect(db).execute("SELECT count(*) FROM calls WHERE run_id = ?", [run_id]).fetchone()[0] == 30


@pytest.mark.parametrize("change,needle", [
    (lambda t: t["calls"][5].update(colour="blue"), "columns this database does not know (colour)"),
    (lambda t: t["run"].update(colour="blue"), "columns this database does not know (colour)"),
    (lambda t: t.update(version=2.0), "newer than this agentprobe reads"),
    (lambda t: t.update(version=2), "newer than this agentprobe reads"),
    (lambda t: t.update(version=1.0), "version 1.0 is not a trace format version"),
    (lambda t: t.update(version=True), "version true is not"),
    (lambda t: t.update(version="1"), 'version "1" is not'),
    (lambda t: t["calls"][7].update(latency_ms="fast"), "field calls/7/latency_ms"),
    (lambda t: t["calls"][7].update(model={"a": 1}), "field calls/7/model"),
    (lambda t: t["calls"][7].update(attempt=None), "field calls/7/attempt"),
    (lambda t: t["calls"][7].update(run_id="01OTHER"), "is not this trace's run"),
    (lambda t: t["calls"].append(dict(t["calls"][0])), "appears twice"),
    (lambda t: t["bodies"][next(iter(t["bodies"]))].update(encoding="base64", content="!!"), "not valid base64"),
    (lambda t: t.pop("calls"), "field calls: missing"),
    (lambda t: t.update(calls={}), "field calls: must be an array"),
])
def test_a_bad_part_is_refused_before_anything_is_written(exported, tmp_path, change, needle):
    trace, _ = exported
    db = _target(exported, tmp_path)
    bad = json.loads(json.dumps(trace))
    change(bad)
    _refused(db, _write(tmp_path, bad), needle)


def test_a_huge_version_number_is_one_line(exported, tmp_path):
    db = _target(exported, tmp_path)
    path = tmp_path / "v.json"
    text = json.dumps(exported[0])
    path.write_text(text.replace('"version": 1', '"version": ' + "9" * 5001))
    _refused(db, path, "not valid JSON")


def test_a_call_id_of_another_run_is_named(exported, tmp_path):
    trace, _ = exported
    db = _target(exported, tmp_path)
    other_call = sqlite3.connect(db).execute("SELECT id, run_id FROM calls LIMIT 1").fetchone()
    bad = json.loads(json.dumps(trace))
    bad["calls"][3]["id"] = other_call[0]
    _refused(db, _write(tmp_path, bad), f"is already in run {other_call[1]}")


def test_a_failed_import_into_a_new_database_creates_nothing(exported, tmp_path):
    trace, _ = exported
    bad = json.loads(json.dumps(trace))
    bad["calls"][-1]["id"] = bad["calls"][0]["id"]
    db = tmp_path / "sub" / "new.db"
    r = run_cli("import", str(_write(tmp_path, bad)), "--db", str(db))
    assert r.returncode == 2 and not db.exists() and not db.parent.exists(), r.stderr


# -- HAR ---------------------------------------------------------------------------------------------
def _har(tmp_path, entries):
    return _write(tmp_path, {"log": {"version": "1.2", "creator": {"name": "t", "version": "1"},
                                     "entries": entries}}, "t.har")


@pytest.mark.parametrize("change,needle", [
    (lambda e: e["request"].update(headers="content-type: json"), "HAR entry 2: field request/headers"),
    (lambda e: e["request"]["headers"].append({"name": "x"}), "'value' is a required property"),
    (lambda e: e["request"].update(url=5), "field request/url"),
    (lambda e: e["request"].update(url="https://[::1/v1/chat/completions"), "field request/url"),
    (lambda e: e["request"].update(url="https://h:99999/v1/chat/completions"), "field request/url"),
    (lambda e: e["response"].update(status="200"), "field response/status"),
    (lambda e: e.update(time="slow"), "field time"),
    (lambda e: e.update(time=1e300), "field time"),
    (lambda e: e["request"]["postData"].update(text=42), "field request/postData/text"),
    (lambda e: e["response"]["content"].update(text="!!", encoding="base64"), "not valid base64"),
    (lambda e: e.update(startedDateTime="yesterday"), "unreadable startedDateTime"),
    (lambda e: e.update(startedDateTime="9999-12-31T23:59:59Z"), "unreadable startedDateTime"),
    (lambda e: e.update(response=[]), "field response"),
])
def test_a_wrongly_typed_har_field_is_one_line_and_writes_nothing(exported, tmp_path, change, needle):
    db = _target(exported, tmp_path)
    entries = [har_entry(i) for i in range(5)]
    change(entries[2])
    _refused(db, _har(tmp_path, entries), needle)


def test_a_har_import_is_one_transaction_built_by_the_row_builder(exported, tmp_path):
    """No writer queue: every entry is a call, even past the 50,000 the queue held."""
    db = _target(exported, tmp_path)
    entries = [har_entry(i) for i in range(40)]
    entries.reverse()  # listed newest first: dispatch order comes from the times, not the file
    r = run_cli("import", str(_har(tmp_path, entries)), "--db", str(db))
    assert r.returncode == 0 and r.stderr == "", r.stderr
    run_id = r.stdout.strip()
    rows = sqlite3.connect(db).execute(
        "SELECT seq, completion_seq, provider, model, input_tokens, status FROM calls WHERE run_id = ?"
        " ORDER BY seq", [run_id]).fetchall()
    assert [r[0] for r in rows] == list(range(1, 41)) and [r[1] for r in rows] == list(range(1, 41))
    assert {r[2:] for r in rows} == {("openai", "gpt-4o-mini", 12, 200)}
    status = sqlite3.connect(db).execute("SELECT status, calls_lost, mode FROM runs WHERE id = ?", [run_id]).fetchone()
    assert status == ("completed", 0, "import")


def test_the_writer_queue_is_not_used(exported, tmp_path, monkeypatch):
    import agentprobe.store.writer as writer

    def refuse(*_a, **_k):
        raise AssertionError("HAR import went through the Writer")

    monkeypatch.setattr(writer.Writer, "submit", refuse)
    db = _target(exported, tmp_path)
    r = run_cli("import", str(write_har(tmp_path / "w.har", 10)), "--db", str(db))
    assert r.returncode == 0, r.stderr


def test_the_trace_schema_types_every_column():
    """The shipped schema is what import checks each part against: it must know every column."""
    from agentprobe.store.health import expected_columns
    from agentprobe.store.migrations import MIGRATIONS
    from agentprobe.traces.import_json import schema

    kinds = {"TEXT": "string", "INTEGER": "integer", "REAL": "number"}
    columns = expected_columns(tuple(name for name, _ in MIGRATIONS))
    for table, props in (("runs", schema()["properties"]["run"]["properties"]),
                         ("calls", schema()["properties"]["calls"]["items"]["properties"])):
        assert set(props) == set(columns[table]), table
        for column, (declared, not_null) in columns[table].items():
            want = kinds[declared]
            got = props[column]["type"]
            assert got == want or (not not_null and got == [want, "null"]), (table, column, got)


@pytest.mark.slow
def test_a_har_of_100000_entries_imports_whole_in_flat_memory():
    """By hand and in the benchmark: bench/har_import.py prints the same figures."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from har_import import measure

    result = measure(100_000)
    assert result["calls_imported"] == 100_000 and result["stderr_lines"] == 0, result
    assert result["peak_rss_mb"] < 250, result
