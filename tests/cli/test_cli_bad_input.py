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
