"""The PostgreSQL store, end to end: a real server (tests/pg_server.py), the real proxy, the real
openai SDK against the bundled fake provider, and the same CLI a user runs.

Every URL here carries a password (the server asks for one over TCP): it must show nowhere.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agentprobe.store.db import open_db
from pg_server import PASSWORD
from proxy_fixtures import Recorded, assert_same_calls, run_cli


def _agent(client, tag: str, n: int = 3) -> None:
    """A small agent: plain calls, a stream with usage, one without, a truncated answer, a retried 429."""
    for i in range(n):
        client.chat.completions.create(model="gpt-4o-mini", messages=[
            {"role": "system", "content": "You answer in one line."}, {"role": "user", "content": f"q{i}"}],
            temperature=0 if tag == "dev" else 0.7)
    for usage in (True, False):
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"{tag} stream {usage}"}], stream=True,
            **({"stream_options": {"include_usage": True}} if usage else {}),
            extra_headers={} if usage else {"x-fake": "no_usage=1"})
        for _ in stream:
            pass
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"{tag} long"}],
                                   max_tokens=5, extra_headers={"x-fake": "words=40"})
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"{tag} limited"}],
                                   extra_headers={"x-fake": "status=429;retry_after=0;fail_times=1"})


def _no_password(*texts) -> None:
    for text in texts:
        assert PASSWORD not in (text if isinstance(text, str) else json.dumps(text, default=str))


def test_record_into_postgres_holds_what_the_provider_saw(tmp_path, tls_ca_bundle, fake_provider_tls, pg_url):
    rec = Recorded(tmp_path, Path(tls_ca_bundle), db=pg_url)
    try:
        _agent(rec.openai(fake_provider_tls), "dev")
    finally:
        rec.stop()
    db = open_db(pg_url)
    assert_same_calls(fake_provider_tls, db)
    [run] = list(db.query("SELECT * FROM runs"))
    assert run["status"] == "completed" and run["calls_lost"] == 0
    _no_password(run)
    # Streams recorded with their usage, or flagged without it, as on SQLite.
    streams = list(db.query("SELECT stream, input_tokens, stream_complete FROM calls WHERE stream = 1 ORDER BY seq"))
    assert [(s["input_tokens"] is not None, s["stream_complete"]) for s in streams] == [(True, 1), (False, 1)]


def test_the_same_recording_scans_the_same_on_both_stores(tmp_path, tls_ca_bundle, fake_provider_tls, pg_url):
    """Record once (three runs, two labels) into SQLite, copy to PostgreSQL and back: scan, diff, runs
    and export agree byte for byte."""
    sqlite_db = tmp_path / "agentprobe.db"
    for n, label in enumerate(("dev", "prod", "dev")):
        rec = Recorded(tmp_path, Path(tls_ca_bundle), label=label)
        try:
            _agent(rec.openai(fake_provider_tls), label, n=2 + n)
        finally:
            rec.stop()
    run_ids = [r["id"] for r in open_db(sqlite_db).query("SELECT id FROM runs ORDER BY id")]
    assert len(run_ids) == 3
    copied = run_cli("copy", *run_ids, "--from", str(sqlite_db), "--to", pg_url, "--json")
    assert copied.returncode == 0, copied.stderr
    assert json.loads(copied.stdout)["calls"] == len(fake_provider_tls.requests) > 20
    back = tmp_path / "back.db"
    assert run_cli("copy", *run_ids, "--from", pg_url, "--to", str(back)).returncode == 0

    def out(db, *args):
        done = run_cli(*args, "--db", str(db))
        assert done.returncode in (0, 1), done.stderr
        _no_password(done.stdout, done.stderr)
        return done.stdout

    for args in (("scan", "--all", "--json"), ("scan", "--label", "dev", "--json"),
                 ("diff", run_ids[0], run_ids[2], "--json"), ("runs", "--json"),
                 ("calls", "--run", run_ids[1], "--json")):
        on_sqlite, on_pg, round_trip = out(sqlite_db, *args), out(pg_url, *args), out(back, *args)
        assert on_pg == on_sqlite, args
        assert round_trip == on_sqlite, args
    findings = json.loads(out(pg_url, "scan", "--all", "--json"))
    rules = {f["rule"] for f in findings["findings"]} if isinstance(findings, dict) else {f["rule"] for f in findings}
    # The recording exercises the cross-run and the per-call rules alike.
    assert {"temperature_drift/env_mismatch", "token_limit/truncated", "usage/missing",
            "api_latency/rate_limited"} <= rules
    for run_id in run_ids:
        exports = []
        for db in (sqlite_db, pg_url):
            path = tmp_path / f"{run_id}-{len(exports)}.json"
            assert run_cli("export", run_id, "-o", str(path), "--db", str(db)).returncode == 0
            exports.append(path.read_bytes())
        assert exports[0] == exports[1]
    report = tmp_path / "report.html"
    done = run_cli("report", run_ids[0], "-o", str(report), "--db", pg_url)
    assert done.returncode == 0, done.stderr
    _no_password(report.read_text())


def test_copy_twice_adds_nothing(tmp_path, pg_url):
    from synthetic import write_run

    src = tmp_path / "src.db"
    run_id = write_run(src, 12)
    first = json.loads(run_cli("copy", run_id, "--from", str(src), "--to", pg_url, "--json").stdout)
    again = json.loads(run_cli("copy", run_id, "--from", str(src), "--to", pg_url, "--json").stdout)
    assert first["calls"] == 12 and first["bodies"] > 0
    assert again == {"runs": [run_id], "calls": 0, "bodies": 0, "prompts": 0}
    db = open_db(pg_url)
    assert db.execute("SELECT count(*) FROM calls").fetchone()[0] == 12
    assert db.execute("SELECT count(*) FROM runs").fetchone()[0] == 1


def test_import_into_postgres_and_export_again(tmp_path, pg_url):
    from synthetic import write_run

    src = tmp_path / "src.db"
    run_id = write_run(src, 5)
    trace = tmp_path / "t.json"
    assert run_cli("export", run_id, "-o", str(trace), "--db", str(src)).returncode == 0
    for _ in range(2):  # twice: the second import finds the run and adds nothing
        done = run_cli("import", str(trace), "--db", pg_url)
        assert done.returncode == 0 and done.stdout.strip() == run_id, done.stderr
    again = tmp_path / "again.json"
    assert run_cli("export", run_id, "-o", str(again), "--db", pg_url).returncode == 0
    assert again.read_bytes() == trace.read_bytes()


def test_prune_on_postgres_frees_old_runs_and_what_only_they_named(tmp_path, pg_url):
    from synthetic import write_run

    src = tmp_path / "src.db"
    # The old run's first 4 calls send what the new run's do (the same bodies, stored once): only
    # the bodies of its last 4 go.
    old, new = write_run(src, 8, label="old"), write_run(src, 4, label="new")
    assert run_cli("copy", old, new, "--from", str(src), "--to", pg_url).returncode == 0
    db = open_db(pg_url)
    db.execute("UPDATE runs SET started_at = '2020-01-01T00:00:00+00:00' WHERE id = ?", [old])
    db.execute("INSERT INTO runs (id, started_at, status, calls_lost) VALUES"
               " ('01OLDRUNNING', '2020-01-01T00:00:00+00:00', 'running', 0)")
    dry = json.loads(run_cli("prune", "--older-than", "30d", "--dry-run", "--json", "--db", pg_url).stdout)
    assert dry["runs"] == 1 and dry["calls"] == 8 and dry["kept_running"] == 1 and dry["dry_run"]
    assert dry["bodies"] == 8  # 4 requests, 4 answers
    assert db.execute("SELECT count(*) FROM calls").fetchone()[0] == 12
    done = run_cli("prune", "--older-than", "30d", "--json", "--db", pg_url)
    freed = json.loads(done.stdout)
    assert {k: freed[k] for k in ("runs", "calls", "bodies", "prompts")} == \
        {k: dry[k] for k in ("runs", "calls", "bodies", "prompts")}
    assert freed["body_bytes"] > 0
    assert [r[0] for r in db.execute("SELECT id FROM runs ORDER BY id")] == sorted([new, "01OLDRUNNING"])
    # Nothing the remaining calls name is gone.
    dangling = db.execute("SELECT count(*) FROM calls c WHERE (c.request_body IS NOT NULL AND NOT EXISTS"
                          " (SELECT 1 FROM bodies b WHERE b.id = c.request_body)) OR (c.response_body IS NOT NULL"
                          " AND NOT EXISTS (SELECT 1 FROM bodies b WHERE b.id = c.response_body))").fetchone()[0]
    assert dangling == 0
    human = run_cli("prune", "--older-than", "30d", "--db", pg_url)
    assert human.returncode == 0 and "freed 0 run(s)" in human.stdout


def test_prune_on_sqlite_matches(tmp_path):
    from synthetic import write_run

    db_path = tmp_path / "a.db"
    write_run(db_path, 3, label="x")
    new = write_run(db_path, 3, label="y")
    open_db(db_path, create=True).execute("UPDATE runs SET started_at = '2020-01-01T00:00:00+00:00'")
    done = json.loads(run_cli("prune", "--older-than", "1d", "--label", "x", "--json", "--db", str(db_path)).stdout)
    assert done["runs"] == 1 and done["calls"] == 3
    assert [r[0] for r in open_db(db_path).execute("SELECT id FROM runs")] == [new]
    # Bad input: one line, exit 2, and no database made where there was none.
    _one_line_exit_2(run_cli("prune", "--older-than", "1d", "--db", str(tmp_path / "none.db")))
    assert not (tmp_path / "none.db").exists()
    _one_line_exit_2(run_cli("prune", "--older-than", "thirty days", "--db", str(db_path)))
    _one_line_exit_2(run_cli("copy", new, "--from", str(db_path), "--to", str(db_path)))


def test_migrations_concurrent_and_newer_schema_refused(pg_url):
    from agentprobe.store.db import connect
    from agentprobe.store.migrations import MIGRATIONS

    errors = []

    def migrate():
        try:
            connect(open_db.__globals__["resolve_path"](pg_url), create=True).close()
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=migrate) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    db = open_db(pg_url)
    assert [r[0] for r in db.execute("SELECT name FROM _migrations ORDER BY applied_at, name")] == \
        [name for name, _ in MIGRATIONS]
    # Large bodies and prompts are compressed with lz4 where the server has it (Debian's does).
    compression = dict(db.execute("SELECT attname, attcompression FROM pg_attribute WHERE attrelid IN"
                                  " ('bodies'::regclass, 'prompts'::regclass) AND attname IN ('content', 'text')"))
    assert compression == {"content": "l", "text": "l"}
    db.execute("INSERT INTO _migrations (name, applied_at) VALUES ('m999_from_the_future', '2099-01-01')")
    done = run_cli("runs", "--db", pg_url)
    assert done.returncode == 2 and "newer than this agentprobe" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    _no_password(done.stderr)


def _one_line_exit_2(done) -> None:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr
    _no_password(done.stdout, done.stderr)


def test_unreachable_server_and_wrong_credentials_are_one_line(pg_base_url):
    from pg_server import free_port

    _one_line_exit_2(run_cli("runs", "--db", f"postgresql://agentprobe:{PASSWORD}@127.0.0.1:{free_port()}/x"))
    wrong = pg_base_url.replace(PASSWORD, "not-the-password") + "/postgres"
    done = run_cli("scan", "--all", "--db", wrong)
    _one_line_exit_2(done)
    assert "password authentication failed" in done.stderr and "not-the-password" not in done.stderr
    # The password is masked as the URL is shown, even in the environment variable's form.
    done = run_cli("runs", env={"AGENTPROBE_DB": pg_base_url + "/no_such_database"})
    _one_line_exit_2(done)
    assert "***" in done.stderr


def test_record_refuses_an_unreachable_database_in_one_line(tmp_path):
    from pg_server import free_port

    done = run_cli("record", "--port", "0", "--confdir", str(tmp_path / "conf"), "--db",
                   f"postgresql://agentprobe:{PASSWORD}@127.0.0.1:{free_port()}/x", timeout=60)
    _one_line_exit_2(done)


def test_a_postgresql_url_without_psycopg_says_how_to_install_it(tmp_path):
    # A real interpreter in which psycopg cannot be imported, as when the extra is not installed.
    code = ("import sys; sys.modules['psycopg'] = None; from agentprobe.cli import main;"
            f" main(['runs', '--db', 'postgresql://agentprobe:{PASSWORD}@127.0.0.1:1/x'])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    _one_line_exit_2(done)
    assert "pip install 'agentprobe[postgres]'" in done.stderr


def test_datasette_metadata_refuses_a_server(pg_url):
    _one_line_exit_2(run_cli("datasette-metadata", "--db", pg_url))


@pytest.mark.parametrize("sql, expected", [
    ("SELECT a FROM t WHERE b IS ? AND c IS NOT ? AND d IS NULL AND e IS NOT NULL",
     "SELECT a FROM t WHERE b IS NOT DISTINCT FROM %s AND c IS DISTINCT FROM %s AND d IS NULL AND e IS NOT NULL"),
    ("SELECT group_concat(DISTINCT x), max(a, b, 1), max(c) FROM t WHERE m LIKE '%x?'",
     "SELECT string_agg(DISTINCT CAST(x AS TEXT), ','), GREATEST(a, b, 1), max(c) FROM t WHERE m ILIKE '%%x?'"),
    ("SELECT a FROM t ORDER BY tokens DESC, seq", "SELECT a FROM t ORDER BY tokens DESC NULLS LAST, seq "),
    ("INSERT OR IGNORE INTO bodies (id) VALUES (?)", "INSERT INTO bodies (id) VALUES (%s) ON CONFLICT DO NOTHING"),
    ("CREATE TABLE x (id TEXT PRIMARY KEY, n INTEGER, r REAL, b BLOB, y TEXT REFERENCES z(id))",
     'CREATE TABLE x (id TEXT COLLATE "C" PRIMARY KEY, n BIGINT, r DOUBLE PRECISION, b BYTEA, y TEXT COLLATE "C")'),
])
def test_dialect_translation(sql, expected):
    from agentprobe.store.dialect import to_postgres

    assert to_postgres(sql) == expected


def test_trace_replay_and_serve_on_postgres(tmp_path, tls_ca_bundle, fake_provider_tls, pg_url):
    """The commands that record (trace, replay, trace --serve) with $AGENTPROBE_DB a postgresql:// URL."""
    from playback.test_serve import AGENT

    (tmp_path / "agent.py").write_text(AGENT)
    env = {"FAKE_URL": fake_provider_tls.url, "AGENTPROBE_DB": pg_url, "AGENTPROBE_CONFDIR": str(tmp_path / "conf")}
    traced = run_cli("trace", "--upstream-ca", tls_ca_bundle, "--", sys.executable, str(tmp_path / "agent.py"),
                     env=env)
    assert traced.returncode == 0, traced.stderr
    _no_password(traced.stdout, traced.stderr)
    run_id = json.loads(run_cli("runs", "--json", env=env).stdout)[0]["id"]
    replayed = run_cli("replay", run_id, "--upstream-ca", tls_ca_bundle, "--times", "1", "--json", env=env)
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout)["calls"] == 4
    fake_provider_tls.stop()  # from here on there is no provider at all
    served = run_cli("trace", "--serve", run_id, "--", sys.executable, str(tmp_path / "agent.py"), env=env)
    assert served.returncode == 0, served.stderr
    assert served.stdout == traced.stdout
    runs = json.loads(run_cli("runs", "--json", env=env).stdout)
    assert [r["label"] for r in runs[:2]] == ["serve", "replay"]
    assert all(r["parent_run_id"] == run_id for r in runs[:2])
    _no_password(runs, served.stderr, replayed.stderr)
    shown = run_cli("show", f"{run_id}#1", env=env)
    assert shown.returncode == 0 and "Be brief." in shown.stdout


def test_prune_beside_a_recorder_writing(tmp_path, tls_ca_bundle, fake_provider_tls, pg_url):
    """Old runs that sent the same requests as the live one are pruned while it records: the live run
    is kept, and none of its calls names a body or prompt that prune took."""
    rec = Recorded(tmp_path, Path(tls_ca_bundle), db=pg_url, label="old")
    try:
        _agent(rec.openai(fake_provider_tls), "dev")
    finally:
        rec.stop()
    open_db(pg_url).execute("UPDATE runs SET started_at = '2020-01-01T00:00:00+00:00'")
    live = Recorded(tmp_path, Path(tls_ca_bundle), db=pg_url, label="live")
    stop = threading.Event()
    freed = []

    def pruner():
        while not stop.is_set():
            done = run_cli("prune", "--older-than", "1d", "--json", "--db", pg_url)
            assert done.returncode == 0, done.stderr
            freed.append(json.loads(done.stdout))

    thread = threading.Thread(target=pruner)
    try:
        thread.start()
        client = live.openai(fake_provider_tls)
        for _ in range(4):
            _agent(client, "dev")  # the same requests, so the same bodies, as the old run's
    finally:
        stop.set()
        thread.join()
        live.stop()
    assert sum(f["runs"] for f in freed) == 1 and all(f["kept_running"] == 0 for f in freed)
    db = open_db(pg_url)
    assert [r[0] for r in db.execute("SELECT label FROM runs")] == ["live"]
    missing = db.execute(
        "SELECT count(*) FROM calls c WHERE"
        " (c.request_body IS NOT NULL AND c.request_body NOT IN (SELECT id FROM bodies))"
        " OR (c.response_body IS NOT NULL AND c.response_body NOT IN (SELECT id FROM bodies))"
        " OR (c.system_prompt_sha256 IS NOT NULL AND c.system_prompt_sha256 NOT IN (SELECT sha256 FROM prompts))"
        " OR (c.output_sha256 IS NOT NULL AND c.output_sha256 NOT IN (SELECT sha256 FROM prompts))").fetchone()[0]
    assert missing == 0
    assert db.execute("SELECT count(*) FROM calls").fetchone()[0] == len(fake_provider_tls.requests) - 8


def test_a_shared_body_another_writer_stored_meanwhile_is_skipped_not_lost(pg_url, monkeypatch):
    """Bodies go straight into their table with COPY once the writer has checked which are new; if another
    writer stores one in between, the COPY's savepoint is undone and the rows go through the staging table."""
    from agentprobe.store.db import connect, resolve_path
    from agentprobe.store.pg import PgConnection

    target = resolve_path(pg_url)
    first, second = connect(target, create=True), connect(target, create=True)
    cols = ["id", "content", "size", "content_type", "truncated"]
    shared = ("body-shared", b"x" * 5000, 5000, "application/json", 0)
    first.insert_rows("bodies", cols, [shared], ignore_conflicts=True)
    monkeypatch.setattr(PgConnection, "_stored_keys", lambda self, table, key, keys: set())  # the race
    second.execute("BEGIN")
    second.insert_rows("bodies", cols, [shared, ("body-new", b"y" * 7, 7, "text/plain", 0)], ignore_conflicts=True)
    second.execute("INSERT INTO prompts (sha256, kind, text) VALUES ('p1', 'system', 'in the same transaction')")
    second.execute("COMMIT")
    rows = open_db(pg_url).execute("SELECT id, length(content) FROM bodies ORDER BY id").fetchall()
    assert [tuple(r) for r in rows] == [("body-new", 7), ("body-shared", 5000)]
    assert open_db(pg_url).execute("SELECT text FROM prompts").fetchall()[0][0] == "in the same transaction"
