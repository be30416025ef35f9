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
