"""Trace files: lossless JSON round trips, HAR out and in, OTLP export, and clear errors on bad files."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from otlp_receiver import Receiver, attributes
from proxy_fixtures import PLANTED_ANTHROPIC_KEY, PLANTED_OPENAI_KEY, Recorded, run_cli

AZURE_KEY = "azure-PLANTED-key-0123456789"


@pytest.fixture
def run_db(tmp_path, tls_ca_bundle, fake_provider_tls):
    """A recorded run with a conversation, a stream, an Anthropic call, a retried 429 and planted keys."""
    rec = Recorded(tmp_path, Path(tls_ca_bundle))
    oa = rec.openai(fake_provider_tls, max_retries=2, default_headers={"api-key": AZURE_KEY})
    messages = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Name a river."}]
    first = oa.chat.completions.create(model="gpt-4o-mini", messages=messages, temperature=0)
    messages += [{"role": "assistant", "content": first.choices[0].message.content},
                 {"role": "user", "content": f"Now one more. My key is {PLANTED_OPENAI_KEY}"}]
    stream = oa.chat.completions.create(model="gpt-4o-mini", messages=messages, temperature=0, stream=True,
                                        extra_headers={"x-fake": "status=429; retry_after=0; fail_times=1"})
    "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    rec.anthropic(fake_provider_tls).messages.create(model="claude-haiku-4-5", max_tokens=50,
                                                     messages=[{"role": "user", "content": "hi"}])
    rec.stop()
    return rec.db_path, rec.recording.run_id


def cli(*args, db):
    return run_cli(*args, "--db", str(db))


def test_export_import_export_is_byte_identical(run_db, tmp_path):
    db, run_id = run_db
    assert cli("export", run_id, "-o", str(tmp_path / "one.json"), db=db).returncode == 0
    other = tmp_path / "other.db"
    imported = cli("import", str(tmp_path / "one.json"), db=other)
    assert imported.returncode == 0 and imported.stdout.strip() == run_id
    assert cli("export", run_id, "-o", str(tmp_path / "two.json"), db=other).returncode == 0
    assert (tmp_path / "one.json").read_bytes() == (tmp_path / "two.json").read_bytes()
    trace = json.loads((tmp_path / "one.json").read_text())
    assert trace["format"] == "agentprobe-trace" and trace["version"] == 1
    assert len(trace["calls"]) == 4 and trace["run"]["id"] == run_id
    # Everything a diff or a replay needs is inside: bodies and prompt texts of every call.
    for call in trace["calls"]:
        assert call["request_body"] in trace["bodies"]
    assert "Be terse." in {p["text"] for p in trace["prompts"].values()}
    # Scanning the imported copy finds what scanning the original finds.
    scans = [json.loads(cli("scan", "--run", run_id, "--format", "json", db=d).stdout) for d in (db, other)]
    assert [f["rule"] for f in scans[0]["findings"]] == [f["rule"] for f in scans[1]["findings"]]


def test_importing_the_same_trace_twice_keeps_one_run(run_db, tmp_path):
    db, run_id = run_db
    cli("export", run_id, "-o", str(tmp_path / "t.json"), db=db)
    for _ in range(2):
        assert cli("import", str(tmp_path / "t.json"), db=tmp_path / "o.db").stdout.strip() == run_id
    assert sqlite3.connect(tmp_path / "o.db").execute("SELECT count(*) FROM calls").fetchone()[0] == 4


def test_har_export_is_har_1_2_and_imports_back_with_the_same_calls(run_db, tmp_path):
    db, run_id = run_db
    assert cli("export", run_id, "--format", "har", "-o", str(tmp_path / "run.har"), db=db).returncode == 0
    har = json.loads((tmp_path / "run.har").read_text())
    log = har["log"]
    assert log["version"] == "1.2" and log["creator"]["name"] == "agentprobe" and len(log["entries"]) == 4
    for entry in log["entries"]:
        assert set(entry) >= {"startedDateTime", "time", "request", "response", "cache", "timings"}
        assert set(entry["request"]) >= {"method", "url", "httpVersion", "cookies", "headers", "queryString",
                                         "headersSize", "bodySize"}
        assert set(entry["response"]) >= {"status", "statusText", "httpVersion", "cookies", "headers", "content",
                                          "redirectURL", "headersSize", "bodySize"}
        assert entry["request"]["url"].startswith("https://127.0.0.1:")
    assert [e["response"]["status"] for e in log["entries"]] == [200, 429, 200, 200]
    out = cli("import", str(tmp_path / "run.har"), db=tmp_path / "h.db")
    assert out.returncode == 0, out.stderr
    new_id = out.stdout.strip()
    cols = "seq, status, model, provider, api, stream, attempt, turn, finish_reason, request_sha256, output_sha256"
    original = sqlite3.connect(db).execute(f"SELECT {cols} FROM calls ORDER BY seq").fetchall()
    imported = sqlite3.connect(tmp_path / "h.db").execute(
        f"SELECT {cols} FROM calls WHERE run_id = ? ORDER BY seq", [new_id]).fetchall()
    assert imported == original
    # And the runs compare as identical.
    compared = run_cli("diff", str(tmp_path / "run.har"), run_id, "--db", str(db))
    assert compared.returncode == 0, compared.stdout


def test_no_key_reaches_an_export(run_db, tmp_path):
    db, run_id = run_db
    outputs = []
    for fmt in ("json", "har"):
        path = tmp_path / f"out.{fmt}"
        assert cli("export", run_id, "--format", fmt, "-o", str(path), db=db).returncode == 0
        outputs.append(path.read_bytes())
    for data in outputs:
        for secret in (PLANTED_OPENAI_KEY, PLANTED_ANTHROPIC_KEY, AZURE_KEY):
            assert secret.encode() not in data
    assert b"[REDACTED]" in outputs[0]  # the key the user pasted into a message was scrubbed, not dropped


def test_export_otlp_sends_one_span_per_call_with_findings(run_db):
    db, run_id = run_db
    receiver = Receiver()
    try:
        out = cli("export", run_id, "--format", "otlp", "--endpoint", receiver.url, db=db)
        assert out.returncode == 0, out.stderr
        spans = receiver.spans()
    finally:
        receiver.server.shutdown()
    assert [p for p, _ in receiver.posts] == ["/v1/traces"]
    assert len(spans) == 4 and len({s["traceId"] for s in spans}) == 1
    assert {s["name"] for s in spans} == {"chat gpt-4o-mini", "chat claude-haiku-4-5"}
    attrs = [attributes(s) for s in spans]
    assert {a["gen_ai.request.model"] for a in attrs} == {"gpt-4o-mini", "claude-haiku-4-5"}
    assert all(a["agentprobe.run.id"] == run_id for a in attrs)
    assert any(a.get("error.type") for a in attrs)  # the 429
    events = {e["name"] for s in spans for e in s.get("events", [])}
    assert "api_latency/rate_limited" in events
    assert PLANTED_OPENAI_KEY not in json.dumps(receiver.posts)


@pytest.mark.parametrize("mangle, message", [
    (lambda t: t[: len(t) // 2], "not valid JSON"),
    (lambda t: t.replace('"version": 1', '"version": 7', 1), "newer than this agentprobe"),
    (lambda t: t.replace('"format": "agentprobe-trace"', '"format": "other"', 1), "not an agentprobe trace"),
    (lambda t: t.replace('"calls": [', '"calls": 3, "x": [', 1), "field calls"),
])
def test_bad_trace_files_are_one_line_and_exit_2(run_db, tmp_path, mangle, message):
    db, run_id = run_db
    cli("export", run_id, "-o", str(tmp_path / "t.json"), db=db)
    bad = tmp_path / "bad.json"
    bad.write_text(mangle((tmp_path / "t.json").read_text()))
    before = db.read_bytes()
    for args in (["import", str(bad)], ["diff", str(bad), run_id], ["replay", "--trace", str(bad)]):
        out = cli(*args, db=db)
        assert out.returncode == 2, (args, out.stderr)
        assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert db.read_bytes() == before


def test_a_malformed_har_is_one_line_and_creates_no_database(tmp_path):
    bad = tmp_path / "bad.har"
    bad.write_text(json.dumps({"log": {"entries": [{"request": {"url": "https://x/v1/chat/completions"}}]}}))
    out = cli("import", str(bad), db=tmp_path / "new.db")
    assert out.returncode == 2 and "HAR entry 0" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "new.db").exists()


def test_a_har_round_trip_keeps_a_stream_the_agent_abandoned(tmp_path, tls_ca_bundle, fake_provider_tls):
    import openai

    rec = Recorded(tmp_path, Path(tls_ca_bundle))
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "long"}]}
    with rec.http_client(openai) as client:
        with client.stream("POST", f"{fake_provider_tls.url}/v1/chat/completions", json=body,
                           headers={"x-fake": "words=200; chunk_delay=0.02"}) as r:
            for _ in r.iter_raw():
                break  # the agent gives up after the first chunk
    rec.stop()
    db, run_id = rec.db_path, rec.recording.run_id
    assert cli("export", run_id, "--format", "har", "-o", str(tmp_path / "cut.har"), db=db).returncode == 0
    out = cli("import", str(tmp_path / "cut.har"), db=tmp_path / "h.db")
    assert out.returncode == 0, out.stderr
    cols = "status, error_type, stream_complete, request_sha256"
    original = sqlite3.connect(db).execute(f"SELECT {cols} FROM calls").fetchall()
    imported = sqlite3.connect(tmp_path / "h.db").execute(
        f"SELECT {cols} FROM calls WHERE run_id = ?", [out.stdout.strip()]).fetchall()
    assert original[0][0] == 200 and original[0][1] in ("client_disconnected", "stream_cut")
    assert imported == original
    compared = run_cli("diff", str(tmp_path / "cut.har"), run_id, "--db", str(db))
    assert compared.returncode == 0, compared.stdout
