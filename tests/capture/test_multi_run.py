"""One recorder, several runs in turn (what the pytest plugin does with one run per test)."""

from __future__ import annotations

from pathlib import Path

import sqlite_utils

from proxy_fixtures import Recorded


def test_runs_switch_and_each_counts_from_one(tmp_path, fake_provider_tls, tls_ca_bundle):
    rec = Recorded(tmp_path, Path(tls_ca_bundle))
    client = rec.openai(fake_provider_tls)
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "before"}])
        first = rec.recording.begin_run(label="tests/test_a.py::test_one", command="pytest tests/test_a.py::test_one")
        assert rec.recording.current_run_id == first
        for i in range(2):
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"one {i}"}])
        assert rec.recording.flush()
        db = sqlite_utils.Database(rec.db_path)
        # Readable before the run ends: the flush is a barrier behind every completed call.
        assert [r["seq"] for r in db.query("SELECT seq FROM calls WHERE run_id = ? ORDER BY seq", [first])] == [1, 2]
        assert rec.recording.end_run(first)
        second = rec.recording.begin_run(label="tests/test_a.py::test_two")
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "two"}],
                                       stream=True).close()
        rec.recording.end_run(second, status="failed")
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "after"}])
    finally:
        rec.stop()
    db = sqlite_utils.Database(rec.db_path)
    runs = {r["id"]: r for r in db.query("SELECT * FROM runs")}
    assert set(runs) == {rec.recording.run_id, first, second}
    assert runs[first]["label"] == "tests/test_a.py::test_one" and runs[first]["status"] == "completed"
    assert runs[second]["status"] == "failed" and runs[second]["ended_at"]
    assert runs[first]["mode"] == runs[rec.recording.run_id]["mode"] == "regular"
    seqs = {run_id: [(r["seq"], r["completion_seq"]) for r in
                     db.query("SELECT seq, completion_seq FROM calls WHERE run_id = ? ORDER BY seq", [run_id])]
            for run_id in runs}
    assert seqs[first] == [(1, 1), (2, 2)]
    assert seqs[second] == [(1, 1)]
    assert seqs[rec.recording.run_id] == [(1, 1), (2, 2)]  # before and after the two runs
    # Conversation linking is per run: the run of test_two starts its own conversations.
    convs = {r["run_id"]: r["conversation_id"] for r in db.query("SELECT run_id, conversation_id FROM calls")}
    assert convs[first] != convs[second]


def test_a_run_never_ended_is_marked_interrupted(tmp_path, tls_ca_bundle):
    rec = Recorded(tmp_path, Path(tls_ca_bundle))
    run_id = rec.recording.begin_run(label="left open")
    rec.stop()
    row = next(sqlite_utils.Database(rec.db_path).query("SELECT status, ended_at FROM runs WHERE id = ?", [run_id]))
    assert row["status"] == "interrupted" and row["ended_at"]
