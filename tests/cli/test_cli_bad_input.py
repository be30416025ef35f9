"""Every command that reads the database: bad input is one line on stderr, exit 2, DB untouched."""

from __future__ import annotations

import pytest

from agentprobe.cli import cli
from agentprobe.store.db import open_db
from proxy_fixtures import run_cli

# The arguments that make each database-reading command look up a run.
READERS = {
    "runs": [],
    "calls": ["--run", "{run}"],
    "scan": ["--run", "{run}"],
    "diff": ["{run}", "{run}"],
    "export": ["{run}", "-o", "{tmp}/out.json"],
    "replay": ["{run}"],
    "report": ["{run}", "-o", "{tmp}/r.html"],
    "analyze": ["--architecture", "{tmp}/arch.md", "--scenario", "{tmp}/scenario.md", "--run", "{run}", "--print"],
}
COMMANDS = sorted(set(READERS) & set(cli.commands))


def _db(tmp_path, kind: str):
    path = tmp_path / "ap.db"
    if kind == "missing":
        return path
    if kind == "corrupt":
        path.write_bytes(b"SQLite format 3\x00" + b"\x13" * 5000)
        return path
    db = open_db(path, create=True)
    db["runs"].insert({"id": "01RUN", "status": "completed", "calls_lost": 0})
    if kind == "newer":
        db.execute("INSERT INTO _migrations VALUES ('m999_future', 'x')")
    db.conn.commit()
    db.conn.close()
    return path


CASES = [
    ("missing", "01RUN", "no agentprobe database"),
    ("corrupt", "01RUN", "not a readable SQLite database"),
    ("newer", "01RUN", "newer"),
    ("ok", "NOSUCHRUN", "no run"),
]
# `runs` takes no run id, so the unknown-run case does not apply to it.
MATRIX = [(c, *case) for c in COMMANDS for case in CASES if "{run}" in " ".join(READERS[c]) or case[0] != "ok"]


@pytest.mark.parametrize("command,kind,run,needle", MATRIX)
def test_bad_database_or_run(tmp_path, command, kind, run, needle):
    path = _db(tmp_path, kind)
    before = path.read_bytes() if path.exists() else None
    for name in ("arch.md", "scenario.md"):
        (tmp_path / name).write_text("An agent that answers support tickets.")
    args = [a.format(run=run, tmp=tmp_path) for a in READERS[command]]
    r = run_cli(command, "--db", str(path), *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert needle in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert (path.read_bytes() if path.exists() else None) == before


def test_every_reader_is_covered():
    assert {"runs", "calls"} <= set(COMMANDS)


@pytest.mark.parametrize("args", [
    ["scan", "--format", "sarif", "-o", "{tmp}/no/such/dir/out.sarif"],
    ["report", "-o", "{tmp}/no/such/dir/r.html"],
    ["export", "-o", "{tmp}/no/such/dir/t.json"],
])
def test_unwritable_output_is_one_line(tmp_path, args):
    path = _db(tmp_path, "ok")
    before = path.read_bytes()
    r = run_cli(*[a.format(tmp=tmp_path) for a in args], "--db", str(path))
    assert r.returncode == 2 and "cannot write" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and path.read_bytes() == before


# -- hostile files named on the command line (issue 21) --------------------------------------------
# Each command that reads a file a user names, with {f} where the file goes.
FILE_READERS = {
    "scan --config": ["scan", "--config", "{f}"],
    "report --config": ["report", "--config", "{f}", "-o", "{tmp}/r.html"],
    "analyze --config": ["analyze", "--config", "{f}", "--architecture", "{tmp}/arch.md",
                         "--scenario", "{tmp}/scenario.md", "--print"],
    "analyze --architecture": ["analyze", "--architecture", "{f}", "--scenario", "{tmp}/scenario.md", "--print"],
    "analyze --scenario": ["analyze", "--architecture", "{tmp}/arch.md", "--scenario", "{f}", "--print"],
    "analyze --answer": ["analyze", "--answer", "{f}"],
    "import": ["import", "{f}"],
    "diff": ["diff", "{f}", "{f}"],
    "system_prompt file": ["scan", "--config", "{tmp}/with_prompt_file.json"],
}
JSON_READERS = ["scan --config", "report --config", "analyze --config", "import", "diff"]


def _hostile(tmp_path, kind: str):
    import os

    from agentprobe.util.userfile import TEXT_LIMIT, TRACE_LIMIT

    path = tmp_path / "hostile.json"
    if kind == "device":
        return "/dev/zero"
    if kind == "fifo":
        os.mkfifo(path)  # nobody ever writes to it
    elif kind == "directory":
        path.mkdir()
    elif kind == "oversized":
        path.write_bytes(b"{}")
        os.truncate(path, TRACE_LIMIT + 1)  # sparse: over every cap, costs no disk
    elif kind == "oversized_text":
        path.write_bytes(b"{}")
        os.truncate(path, TEXT_LIMIT + 1)
    elif kind == "deep":
        path.write_text("[" * 100_000 + "]" * 100_000)
    elif kind == "deep_object":
        path.write_text('{"a":' * 50_000 + "1" + "}" * 50_000)
    elif kind == "long_number":
        path.write_text('{"format": "agentprobe-trace", "version": ' + "1" * 5001 + "}")
    return path


@pytest.fixture
def alarm():
    """Fail a test whose command blocks (a FIFO with no writer) instead of hanging the suite."""
    import signal

    def expired(*_):
        raise TimeoutError("the command blocked for 20 s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


KIND_NEEDLES = {"device": "a character device", "fifo": "a named pipe (FIFO)", "directory": "a directory",
                "oversized": "limit", "oversized_text": "limit", "deep": "levels deep", "deep_object": "levels deep",
                "long_number": "4,300 digits"}
HOSTILE = ([(reader, kind) for reader in FILE_READERS for kind in ("device", "fifo", "directory", "oversized")]
           + [(reader, kind) for reader in JSON_READERS for kind in ("deep", "deep_object", "long_number")]
           + [("scan --config", "oversized_text"), ("analyze --answer", "oversized_text")])


@pytest.mark.parametrize("reader,kind", HOSTILE)
def test_hostile_file_is_one_line_and_exit_2(tmp_path, alarm, reader, kind):
    import json

    path = _db(tmp_path, "ok")
    before = path.read_bytes()
    for name in ("arch.md", "scenario.md"):
        (tmp_path / name).write_text("An agent that answers support tickets.")
    hostile = _hostile(tmp_path, kind)
    (tmp_path / "with_prompt_file.json").write_text(json.dumps(
        {"provider": "openai", "model": "gpt-4o-mini", "system_prompt": {"file": str(hostile)}}))
    args = [a.format(f=hostile, tmp=tmp_path) for a in FILE_READERS[reader]]
    r = run_cli(*args, "--db", str(path))
    assert r.returncode == 2, (r.stdout, r.stderr)
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1 and line.startswith("agentprobe: error: "), r.stderr
    if kind == "long_number" and reader in ("scan --config", "report --config", "analyze --config"):
        assert "4,300 digits" in line, line
    elif kind == "long_number":  # trace files: a number no column could hold
        assert "hostile.json" in line, line
    else:
        assert KIND_NEEDLES[kind] in line and str(hostile) in line, line
    assert path.read_bytes() == before


def test_caps_are_said_in_the_error(tmp_path, alarm):
    from agentprobe.util.userfile import TEXT_LIMIT, size_text

    r = run_cli("scan", "--config", str(_hostile(tmp_path, "oversized_text")))
    assert f"over the {size_text(TEXT_LIMIT)} limit for a config file" in r.stderr, r.stderr


@pytest.mark.parametrize("kind", ["device", "fifo", "no_pem"])
def test_hostile_upstream_ca_stops_record_before_the_database(tmp_path, kind):
    """--upstream-ca /dev/zero made the proxy thread read forever; now one line before anything starts."""
    import subprocess
    import sys

    ca = tmp_path / "ca.pem"
    if kind == "no_pem":
        ca.write_text("not a certificate\n")
    else:
        ca = _hostile(tmp_path, kind)
    db = tmp_path / "new.db"
    r = subprocess.run([sys.executable, "-m", "agentprobe", "record", "--port", "0", "--db", str(db),
                        "--confdir", str(tmp_path / "conf"), "--upstream-ca", str(ca)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "CA file" in r.stderr and not db.exists()


# -- record: a bad --upstream or a port in use touches no database (issue 21) ----------------------
def _record(tmp_path, db, *args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "agentprobe", "record", "--db", str(db),
                           "--confdir", str(tmp_path / "conf"), *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("existing", [False, True])
@pytest.mark.parametrize("case", ["port_in_use", "upstream_with_path", "upstream_bad_host", "upstream_bad_port"])
def test_record_refuses_before_the_database_is_touched(tmp_path, case, existing):
    import socket

    db = _db(tmp_path, "ok") if existing else tmp_path / "fresh" / "ap.db"
    before = db.read_bytes() if existing else None
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = {"port_in_use": ["--port", str(port)],
                "upstream_with_path": ["--port", "0", "--upstream", "https://api.openai.com/v1"],
                "upstream_bad_host": ["--port", "0", "--upstream", "https://exa mple.com"],
                "upstream_bad_port": ["--port", "0", "--upstream", "http://localhost:99999"]}[case]
        r = _record(tmp_path, db, *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert ("cannot listen on" if case == "port_in_use" else "--upstream") in r.stderr, r.stderr
    if existing:
        assert db.read_bytes() == before
        assert not db.with_name(db.name + "-wal").exists()
    else:
        assert not db.exists() and not db.parent.exists()


# -- damaged databases (issue 21) -------------------------------------------------------------------
# Every command that reads runs, with the arguments that make it read a run's calls.
DAMAGE_READERS = {
    "runs": ["runs"],
    "calls": ["calls", "--run", "{run}"],
    "calls --json": ["calls", "--run", "{run}", "--json"],
    "scan": ["scan", "--run", "{run}"],
    "scan --format sarif": ["scan", "--run", "{run}", "--format", "sarif"],
    "diff": ["diff", "{run}", "{run}"],
    "export": ["export", "{run}", "-o", "{tmp}/out.json"],
    "export --format har": ["export", "{run}", "--format", "har", "-o", "{tmp}/out.har"],
    "report": ["report", "{run}", "-o", "{tmp}/r.html"],
    "analyze --run": ["analyze", "--architecture", "{tmp}/arch.md", "--scenario", "{tmp}/scenario.md",
                      "--run", "{run}", "--print"],
    "replay": ["replay", "{run}", "--times", "1", "--confdir", "{tmp}/conf"],
    "serve": ["serve", "{run}", "--port", "0", "--confdir", "{tmp}/conf"],
}
# Proxy-starting readers on a database they can read go on to serve or replay: only the damage
# they must refuse is tried on them.
LONG_RUNNING = {"replay", "serve"}


@pytest.fixture(scope="module")
def recorded_db(tmp_path_factory):
    from synthetic import write_run

    path = tmp_path_factory.mktemp("recorded") / "ap.db"
    run_id = write_run(path, calls=300)
    return path, run_id


def _copy_db(recorded_db, tmp_path):
    import shutil

    source, run_id = recorded_db
    path = tmp_path / "a.db"
    shutil.copy(source, path)
    for name in ("arch.md", "scenario.md"):
        (tmp_path / name).write_text("An agent that answers support tickets.")
    return path, run_id


def _damage(path, how: str) -> None:
    import sqlite3

    conn = sqlite3.connect(path)
    if how == "pages":
        # Overwrite every page of the calls table and its indexes, mid-file; the header, the schema
        # and the runs table stay readable, so the damage is met only when calls are read.
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = [r[0] for r in conn.execute(
            "SELECT pageno FROM dbstat WHERE name = 'calls' OR name LIKE 'calls_%' OR name LIKE"
            " 'sqlite_autoindex_calls%'")]
        conn.close()
        with open(path, "r+b") as f:
            for page in pages:
                f.seek((page - 1) * page_size)
                f.write(bytes([0x13]) * page_size)
        return
    if how == "missing_column":
        conn.execute("ALTER TABLE calls DROP COLUMN latency_ms")
    elif how == "text_latency":
        conn.execute("UPDATE calls SET latency_ms = 'fast' WHERE seq = 2")
    elif how == "text_seq":
        conn.execute("UPDATE calls SET seq = 'first' WHERE seq = 1")
    elif how == "text_tokens":
        conn.execute("UPDATE calls SET input_tokens = 'many', ttft_ms = x'00ff' WHERE seq = 3")
    conn.commit()
    conn.close()


DAMAGE = {"pages": "database disk image is malformed", "missing_column": "has no column latency_ms",
          "text_latency": "calls.latency_ms", "text_seq": "calls.seq", "text_tokens": "calls."}
DAMAGE_MATRIX = [(reader, how) for reader in DAMAGE_READERS for how in DAMAGE
                 if reader not in LONG_RUNNING or how in ("pages", "missing_column")]


@pytest.mark.parametrize("reader,how", DAMAGE_MATRIX)
def test_damaged_database_is_one_line_and_untouched(recorded_db, tmp_path, reader, how):
    path, run_id = _copy_db(recorded_db, tmp_path)
    _damage(path, how)
    before = path.read_bytes()
    args = [a.format(run=run_id, tmp=tmp_path) for a in DAMAGE_READERS[reader]]
    r = run_cli(*args, "--db", str(path), timeout=60)
    assert "Traceback" not in r.stderr, r.stderr
    if how in ("pages", "missing_column") and reader != "runs":
        assert r.returncode == 2, (r.returncode, r.stderr)
    if r.returncode == 2:
        line = r.stderr.strip()
        assert len(line.splitlines()) == 1 and DAMAGE[how] in line and str(path) in line, line
        if how == "pages":
            assert ".recover" in line, line
    else:  # the read path tolerated the odd value
        assert r.returncode in (0, 1), r.stderr
    assert path.read_bytes() == before


@pytest.mark.parametrize("reader", [r for r in DAMAGE_READERS if r not in LONG_RUNNING])
def test_read_commands_open_the_database_read_only(recorded_db, tmp_path, reader):
    """A read-write connection checkpoints the WAL into the database and deletes it on close; a
    read-only one leaves both files as they were."""
    import subprocess
    import sys

    path, wal = _wal_copy(recorded_db, tmp_path, None)
    for name in ("arch.md", "scenario.md"):
        (tmp_path / name).write_text("An agent that answers support tickets.")
    before, wal_before = path.read_bytes(), wal.read_bytes()
    _, run_id = recorded_db
    # A process of its own: connections are closed, as at the end of any command.
    r = subprocess.run([sys.executable, "-m", "agentprobe", *[a.format(run=run_id, tmp=tmp_path)
                                                               for a in DAMAGE_READERS[reader]], "--db", str(path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    assert path.read_bytes() == before and wal.read_bytes() == wal_before


def _wal_copy(recorded_db, tmp_path, damage: str | None):
    """A copy of the database taken while a writer still had 20 runs in its WAL, then damaged."""
    import shutil
    import sqlite3

    source, _ = recorded_db
    live = tmp_path / "live.db"
    shutil.copy(source, live)
    conn = sqlite3.connect(live, isolation_level=None)
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    for i in range(20):
        conn.execute("INSERT INTO runs (id, label, status, calls_lost) VALUES (?, 'wal', 'completed', 0)",
                     [f"01WAL{i:04d}"])
    path = tmp_path / "a.db"
    shutil.copy(live, path)
    shutil.copy(live.with_name("live.db-wal"), path.with_name("a.db-wal"))
    conn.close()
    wal = path.with_name("a.db-wal")
    size = wal.stat().st_size
    if damage == "truncated":
        os_truncate = __import__("os").truncate
        os_truncate(wal, size // 2 + 100)  # mid-frame
    elif damage == "flipped_byte":  # a flipped byte in the page of a frame in the middle
        with open(wal, "r+b") as f:
            f.seek(32 + (size - 32) // 2)
            byte = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([byte[0] ^ 0xFF]))
    return path, wal


@pytest.mark.parametrize("damage", ["truncated", "flipped_byte"])
def test_a_damaged_wal_is_reported_and_kept(recorded_db, tmp_path, damage):
    path, wal = _wal_copy(recorded_db, tmp_path, damage)
    before, wal_before = path.read_bytes(), wal.read_bytes()
    r = run_cli("runs", "--json", "--db", str(path))
    assert r.returncode == 0, r.stderr
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1 and line.startswith("agentprobe: warning: ") and str(wal) in line, line
    assert "damaged" in line
    assert path.read_bytes() == before and wal.read_bytes() == wal_before  # not merged, not deleted
    import json

    seen = {r["id"] for r in json.loads(r.stdout)}
    assert 0 < len({i for i in seen if i.startswith("01WAL")}) < 20  # what SQLite could replay, no more


def test_a_healthy_wal_says_nothing(recorded_db, tmp_path):
    import shutil
    import sqlite3

    source, _ = recorded_db
    path = tmp_path / "a.db"
    shutil.copy(source, path)
    conn = sqlite3.connect(path, isolation_level=None)  # a writer still open: its WAL is live
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("INSERT INTO runs (id, label, status, calls_lost) VALUES ('01LIVE', 'x', 'running', 0)")
    try:
        r = run_cli("runs", "--json", "--db", str(path))
        assert r.returncode == 0 and r.stderr == "", r.stderr
        assert "01LIVE" in r.stdout
    finally:
        conn.close()


def test_a_bug_in_a_renderer_is_still_a_traceback(recorded_db, tmp_path, monkeypatch):
    """A healthy database and a failing renderer: that is our bug, and it must show as one."""
    path, run_id = _copy_db(recorded_db, tmp_path)

    def broken(*_a, **_k):
        raise TypeError("a bug of ours")

    monkeypatch.setattr("agentprobe.report.console.print_findings", broken)
    r = run_cli("scan", "--run", run_id, "--db", str(path))
    assert r.returncode == 1 and "Traceback" in r.stderr and "a bug of ours" in r.stderr
