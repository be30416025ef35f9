"""Several recorders, one PostgreSQL database, under load and under failure.

- three `record` processes (reverse mode, real subprocesses) write one database while 16
  streaming agents (the real openai SDK) run against each; one recorder is killed with SIGKILL
  halfway: nothing it completed more than 1 s before is missing, and the other two keep going;
- the database server stops under a recorder and comes back: the agent's traffic never stops,
  the calls made meanwhile are counted in calls_lost, and recording resumes.
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
from pathlib import Path

from agentprobe.store.db import open_db
from pg_server import PASSWORD, new_database
from proxy_fixtures import Recorded, wait_until

RECORDERS = 3
AGENTS = 16  # per recorder: 48 streaming agents on this 2-core machine
RUN_S = 8.0
KILL_AT_S = 4.0


def _start_recorder(url: str, upstream: str, label: str, confdir: Path) -> tuple[subprocess.Popen, str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    proc = subprocess.Popen([sys.executable, "-m", "agentprobe", "record", "--upstream", upstream, "--port", "0",
                             "--label", label, "--confdir", str(confdir), "--db", url,
                             "--runs-by", "recorder"],  # one run per recorder: the runs the test compares
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"recording run \S+ on (http://\S+?)[,;]", line)
        if m:
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep the pipe drained
            return proc, m.group(1)
    proc.kill()
    raise AssertionError(f"record did not start: {''.join(lines)}")


class Agent(threading.Thread):
    """Streams chat calls until told to stop; remembers when each one finished."""

    def __init__(self, base_url: str, tag: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        import openai

        self.client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="sk-proj-LOADtestKEY0123456789abcdefgh",
                                    max_retries=0, timeout=20)
        self.tag, self.stop = tag, stop
        self.done: list[tuple[str, float]] = []  # (prompt, monotonic time the stream ended)
        self.failed = 0

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            prompt = f"{self.tag}-c{i}"
            i += 1
            try:
                stream = self.client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}], stream=True,
                    stream_options={"include_usage": True})
                for _ in stream:
                    pass
                self.done.append((prompt, time.monotonic()))
            except Exception:  # noqa: BLE001 - its recorder was killed: this agent is done
                self.failed += 1
                if self.failed > 3:
                    return
                time.sleep(0.05)


def _stored(url: str) -> dict[str, list[str]]:
    """run id -> the user prompts of its calls."""
    db = open_db(url)
    out: dict[str, list[str]] = {}
    for run_id, content in db.execute("SELECT c.run_id, b.content FROM calls c JOIN bodies b ON b.id = c.request_body"):
        text = content.decode() if isinstance(content, bytes) else content
        out.setdefault(run_id, []).append(json.loads(text)["messages"][-1]["content"])
    return out


def test_three_recorders_one_database_one_killed(tmp_path, fake_provider, pg_base_url):
    url = new_database(pg_base_url)
    recorders = [_start_recorder(url, fake_provider.url, f"load{k}", tmp_path / f"conf{k}") for k in range(RECORDERS)]
    stops = [threading.Event() for _ in range(RECORDERS)]
    agents = [[Agent(base, f"r{k}-a{j}", stops[k]) for j in range(AGENTS)] for k, (_, base) in enumerate(recorders)]
    for group in agents:
        for a in group:
            a.start()
    time.sleep(KILL_AT_S)
    killed_at = time.monotonic()
    recorders[0][0].send_signal(signal.SIGKILL)
    stops[0].set()
    time.sleep(RUN_S - KILL_AT_S)
    for s in stops:
        s.set()
    for group in agents:
        for a in group:
            a.join(30)
    for proc, _ in recorders[1:]:
        proc.send_signal(signal.SIGINT)
    for proc, _ in recorders:
        proc.wait(60)
    assert [p.returncode for p, _ in recorders[1:]] == [0, 0]
    # The killed recorder's writer process writes what it was handed, then marks the run interrupted.
    assert wait_until(lambda: open_db(url).execute(
        "SELECT count(*) FROM runs WHERE label = 'load0' AND status != 'running'").fetchone()[0] == 1, 30)

    stored = _stored(url)
    by_tag: dict[str, str] = {}
    for run_id, prompts in stored.items():
        tags = {p.split("-")[0] for p in prompts}
        assert len(tags) == 1, f"run {run_id} mixes recorders: {sorted(tags)}"  # no run mixed
        by_tag[tags.pop()] = run_id
    assert sorted(by_tag) == ["r0", "r1", "r2"]
    for k in (1, 2):  # the survivors: every call the agents completed is recorded, and only those
        completed = sorted(p for a in agents[k] for p, _ in a.done)
        assert len(completed) > 50
        assert sorted(stored[by_tag[f"r{k}"]]) == completed
        assert all(a.failed == 0 for a in agents[k])
    # The killed one: everything that completed more than 1 s before the kill is there.
    early = {p for a in agents[0] for p, t in a.done if t < killed_at - 1.0}
    assert early and early <= set(stored[by_tag["r0"]])
    # And the provider saw exactly what the database holds for the survivors.
    provider_prompts = [json.loads(r["body"])["messages"][-1]["content"] for r in fake_provider.requests]
    for k in (1, 2):
        assert sorted(p for p in provider_prompts if p.startswith(f"r{k}-")) == sorted(stored[by_tag[f"r{k}"]])
    db = open_db(url)
    statuses = dict(db.execute("SELECT label, status FROM runs").fetchall())
    assert statuses["load1"] == statuses["load2"] == "completed"
    assert statuses["load0"] in ("interrupted", "degraded", "running")
    total = sum(len(v) for v in stored.values())
    print(f"\nload: {total} calls from {RECORDERS} recorders x {AGENTS} streaming agents in {RUN_S:.0f} s")


def test_the_database_going_away_under_record(tmp_path, tls_ca_bundle, fake_provider_tls, pg_server_control):
    server = pg_server_control
    url = new_database(server.base_url())
    rec = Recorded(tmp_path, Path(tls_ca_bundle), db=url)
    client = rec.openai(fake_provider_tls, max_retries=0)

    def call(prompt: str) -> None:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}])

    try:
        for i in range(5):
            call(f"before {i}")
        # Durable within a second on an idle machine; a loaded one (the writer yields the CPU) gets longer.
        assert wait_until(lambda: open_db(url).execute("SELECT count(*) FROM calls").fetchone()[0] == 5)
        server.stop("fast")
        for i in range(5):  # the agent's traffic does not notice
            call(f"during {i}")
            time.sleep(0.1)
        time.sleep(0.5)
        server.start()
        time.sleep(1.5)  # the writer asks again at most once a second
        for i in range(5):
            call(f"after {i}")
    finally:
        rec.stop()
    db = open_db(url)
    prompts = [json.loads(bytes(c).decode())["messages"][-1]["content"] for (c,) in db.execute(
        "SELECT b.content FROM calls c JOIN bodies b ON b.id = c.request_body ORDER BY c.seq")]
    assert prompts[:5] == [f"before {i}" for i in range(5)]
    assert prompts[-5:] == [f"after {i}" for i in range(5)]
    [(lost, status)] = db.execute("SELECT calls_lost, status FROM runs").fetchall()
    assert lost == 15 - len(prompts) and lost >= 4, (lost, prompts)  # the writer may have held the first
    assert status == "completed"
    assert len(fake_provider_tls.requests) == 15
    assert PASSWORD not in str(rec.recording.writer.last_error or "")


def test_a_writer_killed_mid_run_on_postgres(tmp_path, tls_ca_bundle, fake_provider_tls, pg_url):
    """test_writer_death's kill -9 of the writer process, recording into PostgreSQL: replaced, and every
    call answered is a row or counted."""

    from e2e.test_writer_death import trace_and_kill_the_writer

    err = trace_and_kill_the_writer(tmp_path, pg_url, tls_ca_bundle, fake_provider_tls.url)
    assert PASSWORD not in err
    db = open_db(pg_url)
    status, lost = db.execute("SELECT status, calls_lost FROM runs").fetchone()
    rows = db.execute("SELECT count(*) FROM calls").fetchone()[0]
    assert fake_provider_tls.count() == 200
    assert rows + lost == 200, (rows, lost)
    assert status == "degraded" and rows > 120
