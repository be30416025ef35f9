"""Any bytes into `import`: a run or one TraceError, never another exception, and a failed import
leaves the database byte for byte as it was (issue 21)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentprobe.traces import TraceError, load_file
from synthetic import har_entry, write_run

# AGENTPROBE_FUZZ_EXAMPLES=2000 for a longer hunt by hand.
FUZZ = settings(max_examples=int(os.environ.get("AGENTPROBE_FUZZ_EXAMPLES", "150")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=25,
)


OUTCOMES = {"run": 0, "error": 0}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A database with one recorded run, and a small valid trace file of another run."""
    from proxy_fixtures import run_cli

    tmp = tmp_path_factory.mktemp("fuzz")
    source = tmp / "source.db"
    run_id = write_run(source, calls=3)
    trace = tmp / "trace.json"
    assert run_cli("export", run_id, "-o", str(trace), "--db", str(source)).returncode == 0
    db = tmp / "base.db"
    write_run(db, calls=2)
    return db, json.loads(trace.read_text())


def _import(base_db: Path, data: bytes, suffix: str) -> None:
    """Import data into a copy of base_db; the outcome must be a run or a TraceError that changed nothing."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "a.db"
        shutil.copy(base_db, db)
        before = db.read_bytes()
        path = Path(tmp) / f"in{suffix}"
        path.write_bytes(data)
        try:
            run_id = load_file(db, path)
            OUTCOMES["run"] += 1
        except TraceError as e:
            OUTCOMES["error"] += 1
            assert "\n" not in str(e), str(e)
            assert db.read_bytes() == before
            for leftover in ("-wal", "-journal"):
                side = db.with_name(db.name + leftover)
                assert not side.exists() or side.stat().st_size == 0 or db.read_bytes() == before
            return
        import sqlite3

        assert sqlite3.connect(db).execute("SELECT 1 FROM runs WHERE id = ?", [run_id]).fetchone()


@FUZZ
@given(st.binary(max_size=600))
def test_any_bytes(base, data):
    _import(base[0], data, ".json")


@FUZZ
@given(json_values)
def test_any_json_document(base, value):
    _import(base[0], json.dumps(value).encode(), ".json")


# Places in a valid trace where a fuzzed value goes.
TRACE_SPOTS = st.sampled_from([
    ("version",), ("format",), ("run",), ("calls",), ("bodies",), ("prompts",), ("run", "id"), ("run", "label"),
    ("run", "calls_lost"), ("run", "started_at"), ("calls", 0), ("calls", 1, "id"), ("calls", 1, "seq"),
    ("calls", 2, "latency_ms"), ("calls", 0, "run_id"), ("calls", 1, "attempt"), ("calls", 2, "model"),
    ("calls", 0, "tool_calls"), ("calls", 1, "x_unknown"), ("bodies", "*", "content"), ("bodies", "*", "encoding"),
    ("bodies", "*"), ("prompts", "*", "text"), ("prompts", "*"),
])


def _put(doc, spot, value):
    target = doc
    for key in spot[:-1]:
        if key == "*":
            key = next(iter(target)) if target else "k"
        target = target[key]
    last = spot[-1]
    if last == "*":
        last = next(iter(target)) if target else "k"
    target[last] = value


@FUZZ
@given(TRACE_SPOTS, json_values | st.integers(min_value=-2**70, max_value=2**70))
def test_a_valid_trace_with_one_field_fuzzed(base, spot, value):
    doc = json.loads(json.dumps(base[1]))
    _put(doc, spot, value)
    _import(base[0], json.dumps(doc).encode(), ".json")


@FUZZ
@given(st.integers(0, 5000), st.binary(min_size=1, max_size=8))
def test_a_valid_trace_cut_or_spliced(base, at, junk):
    data = json.dumps(base[1]).encode()
    at = at % len(data)
    _import(base[0], data[:at], ".json")
    _import(base[0], data[:at] + junk + data[at:], ".json")


HAR_SPOTS = st.sampled_from([
    ("startedDateTime",), ("time",), ("request",), ("response",), ("timings",), ("timings", "wait"),
    ("request", "url"), ("request", "method"), ("request", "headers"), ("request", "postData"),
    ("request", "postData", "text"), ("response", "status"), ("response", "headers"), ("response", "content"),
    ("response", "content", "text"), ("response", "content", "encoding"), ("response", "_error"),
    ("response", "content", "mimeType"),
])


@FUZZ
@given(HAR_SPOTS, json_values, st.integers(0, 2))
def test_a_valid_har_with_one_field_fuzzed(base, spot, value, which):
    entries = [har_entry(i) for i in range(3)]
    _put(entries[which], spot, value)
    doc = {"log": {"version": "1.2", "creator": {"name": "f", "version": "1"}, "entries": entries}}
    _import(base[0], json.dumps(doc).encode(), ".har")


@FUZZ
@given(st.lists(json_values, max_size=4))
def test_any_har_entries(base, entries):
    _import(base[0], json.dumps({"log": {"entries": entries}}).encode(), ".har")


def test_the_fuzzing_reached_both_outcomes():
    """Runs after the tests above (file order): they must have imported runs and refused files."""
    if OUTCOMES["run"] + OUTCOMES["error"] == 0:
        pytest.skip("run with the fuzz tests above")
    assert OUTCOMES["run"] > 0 and OUTCOMES["error"] > 0, OUTCOMES
