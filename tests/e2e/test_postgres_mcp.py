"""MCP recorded into PostgreSQL: the official-SDK agent of test_e2e_mcp.py traced straight into PG gives
the rows, tool links and findings it gives in SQLite, and one recording copied from SQLite to PG
scans to the same JSON (the tool rules are written once too)."""

from __future__ import annotations

import json
import sys

from agentprobe.store.db import open_db
from e2e.test_e2e_mcp import (  # noqa: F401 - http_server is a fixture
    EXPECTED_COMPLETIONS,
    HERE,
    assert_sdk_agent_findings,
    completion_order,
    http_server,
    links,
    rows,
    the_sdk_agents_rows,
    without_completion,
)
from pg_server import new_database
from proxy_fixtures import run_cli


def test_the_mcp_agent_recorded_into_postgres(tmp_path, fake_provider, http_server, pg_url, pg_base_url):  # noqa: F811
    agent = [sys.executable, str(HERE / "sdk_agent.py"), fake_provider.url + "/v1", "http", http_server]
    env = {"AGENTPROBE_CONFDIR": str(tmp_path / "conf")}
    done = run_cli("trace", "--db", pg_url, "--", *agent, env=env, timeout=180)
    assert done.returncode == 0, done.stderr
    db = open_db(pg_url)
    assert without_completion(rows(db)) == the_sdk_agents_rows("streamable_http", "probe-tools")
    assert completion_order(db) == EXPECTED_COMPLETIONS
    assert links(db) == [(4, 3, 7), (5, 3, 7), (6, 3, 7)]  # the writer's updates of earlier rows, on PG
    scan = run_cli("scan", "--db", pg_url, "--json")
    assert scan.returncode == 0, scan.stderr
    assert_sdk_agent_findings(json.loads(scan.stdout)["findings"], [4, 5, 6], 7)

    sqlite_db = tmp_path / "ap.db"
    done = run_cli("trace", "--db", str(sqlite_db), "--", *agent, env=env, timeout=180)
    assert done.returncode == 0, done.stderr
    run_id = json.loads(run_cli("runs", "--json", "--db", str(sqlite_db)).stdout)[0]["id"]
    copied = new_database(pg_base_url)
    assert run_cli("copy", run_id, "--from", str(sqlite_db), "--to", copied).returncode == 0
    for args in (("scan", "--all", "--json"), ("calls", "--run", run_id, "--json")):
        on_sqlite = run_cli(*args, "--db", str(sqlite_db))
        on_pg = run_cli(*args, "--db", copied)
        assert on_sqlite.returncode == on_pg.returncode == 0, (on_sqlite.stderr, on_pg.stderr)
        assert on_pg.stdout == on_sqlite.stdout, args
