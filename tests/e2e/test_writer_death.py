"""The writer process killed under load (kill -9, the OOM killer): noticed at once, said, restarted,
and every call the provider answered is either a row or counted in calls_lost; never `running`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import sqlite_utils

from proxy_fixtures import wait_until

AGENT = textwrap.dedent("""
    import os, openai, sys, time
    client = openai.OpenAI(base_url=os.environ["FAKE_URL"] + "/v1", api_key="sk-death-0123456789abcdefghij",
                           max_retries=0)
    for i in range(int(os.environ["CALLS"])):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"call {i}"}])
        if i == int(os.environ["SIGNAL_AT"]):
            open(os.environ["READY"], "w").close()  # the test kills the writer now
            while os.path.exists(os.environ["READY"]):
                time.sleep(0.01)
        time.sleep(0.002)
""")


def _writers_of(pid: int) -> list[int]:
    """Writer processes below `pid` (the trace or record process)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"agentprobe.store.writer_process" in cmdline:
            found.append(int(entry.name))
    return found


def trace_and_kill_the_writer(tmp_path, db: str, tls_ca_bundle: str, fake_url: str) -> str:
    """`trace` an agent of 200 calls into `db`, kill -9 its writer after call 120, let it finish; its stderr."""
    (tmp_path / "agent.py").write_text(AGENT)
    ready = tmp_path / "ready"
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(AGENTPROBE_DB=db, AGENTPROBE_CONFDIR=str(tmp_path / "conf"),
               FAKE_URL=fake_url, CALLS="200", SIGNAL_AT="120", READY=str(ready))
    trace = subprocess.Popen([sys.executable, "-m", "agentprobe", "trace", "--upstream-ca", tls_ca_bundle, "--",
                              sys.executable, str(tmp_path / "agent.py")], env=env, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(trace.stderr), daemon=True)
    reader.start()
    assert wait_until(ready.exists, timeout=120)
    [writer] = _writers_of(trace.pid)
    os.kill(writer, signal.SIGKILL)
    assert wait_until(lambda: any("WARNING: the writer process died" in line for line in lines), timeout=30), lines
    ready.unlink()
    assert trace.wait(120) == 0
    reader.join(10)
    return "".join(lines)


def test_a_writer_killed_mid_run_is_replaced_and_nothing_goes_uncounted(tmp_path, tls_ca_bundle, fake_provider_tls):
    err = trace_and_kill_the_writer(tmp_path, str(tmp_path / "ap.db"), tls_ca_bundle, fake_provider_tls.url)
    assert "killed by signal 9" in err and "restarted it" in err, err
    db = sqlite_utils.Database(tmp_path / "ap.db")
    run = db.execute("SELECT status, calls_lost FROM runs").fetchone()
    rows = db.execute("SELECT count(*) FROM calls").fetchone()[0]
    assert fake_provider_tls.count() == 200
    assert rows + run[1] == 200, (rows, run)  # each call answered is a row or counted as lost
    assert run[0] == "degraded"
    assert rows > 120  # the replacement kept recording
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    summary = re.search(r"WARNING: (\d+) call\(s\) could not be recorded", err)
    assert (int(summary.group(1)) if summary else 0) == run[1]


def test_a_recorder_whose_writers_keep_dying_still_serves_and_counts(tmp_path, tls_ca_bundle, fake_provider_tls):
    import openai

    from agentprobe.proxy.ca import bundle_path
    from agentprobe.store.writer_process import MAX_RESTARTS

    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(AGENTPROBE_DB=str(tmp_path / "ap.db"), AGENTPROBE_CONFDIR=str(tmp_path / "conf"))
    record = subprocess.Popen([sys.executable, "-m", "agentprobe", "record", "--port", "0", "--upstream-ca",
                               tls_ca_bundle], env=env, stderr=subprocess.PIPE, text=True)
    url = re.search(r"on (http://[\d.:]+)", record.stderr.readline()).group(1)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(record.stderr), daemon=True).start()
    import ssl

    client = openai.OpenAI(base_url=f"{fake_provider_tls.url}/v1", api_key="sk-x-0123456789abcdefghij", max_retries=0,
                           http_client=openai.DefaultHttpxClient(
                               proxy=url, trust_env=False,
                               verify=ssl.create_default_context(cafile=str(bundle_path(tmp_path / "conf")))))
    sent = 0
    for death in range(MAX_RESTARTS + 1):
        for _ in range(10):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"q{sent}"}])
            sent += 1
        time.sleep(0.5)  # let the writer catch up, so the kill takes nothing with it
        [writer] = _writers_of(record.pid)
        os.kill(writer, signal.SIGKILL)
        assert wait_until(lambda: sum("WARNING: the writer process died" in line for line in lines) == death + 1,
                          timeout=30)
    # No writer left: traffic still flows, and is counted.
    for _ in range(5):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"q{sent}"}])
        sent += 1
    assert not _writers_of(record.pid)
    record.send_signal(signal.SIGINT)
    record.wait(60)
    err = "".join(lines)
    assert "calls are counted, not recorded" in err, err
    db = sqlite_utils.Database(tmp_path / "ap.db")
    status, lost = db.execute("SELECT status, calls_lost FROM runs").fetchone()
    rows = db.execute("SELECT count(*) FROM calls").fetchone()[0]
    assert fake_provider_tls.count() == sent == rows + lost and lost >= 5
    assert status == "degraded"
    out = subprocess.run([sys.executable, "-m", "agentprobe", "scan", "--json"], env=env, capture_output=True,
                         text=True)
    assert "recording/calls_lost" in {f["rule"] for f in json.loads(out.stdout)["findings"]}
