"""A recorder that dies without ending its run: the run is shown as stale, not as running for ever.

The writer stamps the runs it records (runs.alive_at) every AGENTPROBE_HEARTBEAT_S; a run whose
stamp is three beats overdue has no recorder any more. Real parts: `agentprobe record` processes
in reverse mode in front of the fake provider, the openai SDK, SQLite and a real PostgreSQL server.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

from pg_server import PASSWORD, new_database
from proxy_fixtures import run_cli, wait_until

from agentprobe.store.db import open_db

BEAT_S = 0.3  # stale once 3 beats + 2 s overdue: 2.9 s


def start_recorder(db: str, upstream: str, label: str, confdir) -> tuple[subprocess.Popen, str, list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["AGENTPROBE_HEARTBEAT_S"] = str(BEAT_S)
    proc = subprocess.Popen([sys.executable, "-m", "agentprobe", "record", "--upstream", upstream, "--port", "0",
                             "--label", label, "--confdir", str(confdir), "--db", db, "--runs-by", "recorder"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)  # its own process group: kill -9 takes the writer too
    lines: list[str] = []
    while True:
        line = proc.stderr.readline()
        if not line:
            raise AssertionError("record did not start: " + "".join(lines))
        lines.append(line)
        m = re.search(r"recording run \S+ on (http://\S+?)[,;]", line)
        if m:
            def drain() -> None:
                for rest in proc.stderr:
                    lines.append(rest)

            threading.Thread(target=drain, daemon=True).start()
            return proc, m.group(1), lines


def ask(base: str, n: int, tag: str) -> None:
    import openai

    client = openai.OpenAI(base_url=base + "/v1", api_key="sk-test-stale-0123456789", max_retries=0)
    for i in range(n):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"{tag} {i}"}])


def listed(db: str) -> tuple[dict[str, dict], str]:
    r = run_cli("runs", "--db", db, "--json")
    assert r.returncode == 0, r.stderr
    return {run["label"]: run for run in json.loads(r.stdout)}, r.stderr


def test_a_recorder_killed_outright_leaves_a_stale_run_that_prune_can_take(tmp_path, fake_provider):
    db = str(tmp_path / "ap.db")
    dead, dead_url, _ = start_recorder(db, fake_provider.url, "killed", tmp_path / "conf-a")
    live, live_url, _ = start_recorder(db, fake_provider.url, "alive", tmp_path / "conf-b")
    try:
        ask(dead_url, 3, "killed")
        ask(live_url, 2, "alive")
        assert wait_until(lambda: open_db(db).execute("SELECT count(*) FROM calls").fetchone()[0] == 5)
        runs, _ = listed(db)
        assert runs["killed"]["status"] == "running" and runs["killed"]["alive_every_s"] == BEAT_S
        os.killpg(dead.pid, signal.SIGKILL)  # the proxy and its writer process, as an OOM kill or a crash would
        dead.wait(10)
        assert wait_until(lambda: listed(db)[0]["killed"]["status"] == "stale", 15)
        runs, err = listed(db)
        assert runs["killed"]["left_as"] == "running" and runs["killed"]["calls"] == 3
        assert "1 run(s) stale" in err
        # The idle recorder beside it keeps stamping its run: well past the threshold, still running.
        time.sleep(3 * BEAT_S + 2.5)
        assert listed(db)[0]["alive"]["status"] == "running"
        table = run_cli("runs", "--db", db, "--columns", "label,status").stdout
        assert re.search(r"killed\s+.*stale", table) and re.search(r"alive\s+.*running", table)
        # Retention takes the dead recorder's run and keeps the live one, however old both are.
        pruned = run_cli("prune", "--db", db, "--older-than", "1s")
        assert pruned.returncode == 0, pruned.stderr
        assert "kept 1 old run(s) still recording" in pruned.stdout + pruned.stderr
        assert sorted(listed(db)[0]) == ["alive"]
    finally:
        for proc in (dead, live):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                proc.wait(30)
    assert live.returncode == 0
    assert listed(db)[0]["alive"]["status"] == "completed"


def test_the_database_down_when_record_stops(tmp_path, fake_provider, pg_server_control):
    """The run's end cannot be written: record says so, and the run reads as stale once the server is back."""
    server = pg_server_control
    url = new_database(server.base_url())
    proc, base, lines = start_recorder(url, fake_provider.url, "cut-off", tmp_path / "conf")
    ask(base, 3, "before")
    assert wait_until(lambda: open_db(url).execute("SELECT count(*) FROM calls").fetchone()[0] == 3)
    server.stop("fast")
    ask(base, 2, "during")  # the agent's traffic does not notice
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) != 0  # the run's end is not on record: not a clean exit
    err = "".join(lines)
    assert re.search(r"could not end run \S+ in postgresql://agentprobe:\*\*\*@", err), err
    assert "2 call(s) were lost" in err and "shows it as stale" in err and PASSWORD not in err
    server.start()
    runs, _ = listed(url)
    assert runs["cut-off"]["status"] in ("running", "stale") and runs["cut-off"]["calls"] == 3
    assert wait_until(lambda: listed(url)[0]["cut-off"]["status"] == "stale", 15)
    assert PASSWORD not in json.dumps(listed(url)[0])
