"""Issue 23, "never mislead", end to end: an upstream the proxy cannot verify, replaying such a run, an
empty run between two real ones, and agentprobe's own runs taken for environments."""

from __future__ import annotations

import json
import re
import sys
import textwrap

import pytest

from clirun import ap, chat, record_run
from proxy_fixtures import run_cli

AGENT = textwrap.dedent(
    """
    import os, openai
    client = openai.OpenAI(base_url=os.environ["FAKE_URL"] + "/v1", api_key="sk-" + "agent" * 5, max_retries=1)
    for i in range(2):
        try:
            client.chat.completions.create(model="gpt-4o-mini", temperature=0,
                                           messages=[{"role": "user", "content": f"question {i}"}])
        except openai.APIError as e:
            print("the agent got", type(e).__name__)
    """
)


@pytest.fixture
def untrusted(tmp_path, fake_provider_tls):
    """A run traced WITHOUT --upstream-ca: the fake provider's private CA is unknown to the proxy."""
    (tmp_path / "agent.py").write_text(AGENT)
    env = {"FAKE_URL": fake_provider_tls.url, "AGENTPROBE_DB": str(tmp_path / "ap.db"),
           "AGENTPROBE_CONFDIR": str(tmp_path / "conf")}
    traced = run_cli("trace", "--", sys.executable, str(tmp_path / "agent.py"), env=env)
    return traced, env, tmp_path, fake_provider_tls


def test_an_upstream_the_proxy_cannot_verify_is_one_clear_line_a_finding_and_no_waste(untrusted):
    traced, env, tmp, provider = untrusted
    assert traced.returncode == 0, traced.stderr  # the agent's own exit code
    assert provider.requests == []  # nothing reached the provider
    host = provider.url.removeprefix("https://")
    said = [line for line in traced.stderr.splitlines() if "could not reach" in line]
    assert len(said) == 1, traced.stderr
    assert host in said[0] and "Certificate verify failed" in said[0] and "--upstream-ca" in said[0]
    assert said[0].lstrip().startswith("ERROR:") and "fix:" in said[0]

    db = tmp / "ap.db"
    scan = ap("scan", "--json", db=db)
    assert scan.code == 0  # no --fail-on: the findings are the answer, not an exit code
    found = {f["rule"]: f for f in json.loads(scan.out)["findings"]}
    unreachable = found["api_latency/upstream_unreachable"]
    assert unreachable["severity"] == "high" and unreachable["data"]["error_type"] == "upstream_tls_error"
    assert "usage/wasted" not in found  # 502s of the proxy's own making were never billed
    gate = ap("scan", "--fail-on", "high", db=db)
    assert gate.code == 1
    [line] = [line for line in gate.err.splitlines() if "at or above high" in line]
    assert re.search(r"agentprobe: \d+ finding\(s\) at or above high \(worst: (critical|high) \S+", line)
    assert "upstream_unreachable" in gate.out
    # The calls say what happened to them, too.
    shown = ap("show", "latest#1", db=db)
    assert shown.code == 0 and "status no response" in shown.out and "upstream_tls_error" in shown.out
    assert "api_latency/upstream_unreachable" in shown.out
    assert "first byte -," in shown.out and "usage: in - / out -" in shown.out  # nothing measured, said so
    calls = json.loads(ap("calls", "--json", db=db).out)
    assert calls and {c["error_type"] for c in calls} == {"upstream_tls_error"}
    assert all(c["status"] in (None, 502) for c in calls)


def test_replaying_such_a_run_is_one_error_not_a_verdict_and_says_it_is_alive(untrusted):
    _, env, _, _ = untrusted
    r = run_cli("replay", "latest", "--times", "2", env=env, timeout=300)  # still no --upstream-ca
    assert r.returncode == 2, (r.stdout, r.stderr)
    errors = [line for line in r.stderr.splitlines() if line.startswith("agentprobe: error:")]
    assert len(errors) == 1 and "no replay of run" in errors[0] and "502" in errors[0], r.stderr
    assert not re.search(r"\b(divergent|drifting|deterministic)\b", r.stdout + r.stderr)
    # Off a terminal a long replay says where it is every few seconds (a line, not a bar).
    assert re.search(r"^agentprobe: replaying \d+ call\(s\) x2: \d+ of \d+ done$", r.stderr, re.M), r.stderr


def test_progress_off_a_terminal_comes_from_a_timer_not_from_finished_work():
    import io
    import time

    from agentprobe.util.progress import progress

    class Log(io.StringIO):
        def isatty(self):
            return False

    log = Log()
    with progress("replaying 1 call(s) x1", 1, every_s=0.05, stream=log) as advance:
        time.sleep(0.3)  # one call, stuck in a provider's backoff: nothing finishes
        advance()
    lines = log.getvalue().splitlines()
    assert len(lines) >= 2 and lines[0] == "agentprobe: replaying 1 call(s) x1: 0 of 1 done", lines


# --- An empty run between two real ones --------------------------------------------------------------

@pytest.fixture
def runs_with_an_empty_one(tmp_path, tls_ca_bundle, fake_provider_tls):
    from pathlib import Path

    db, conf = tmp_path / "ap.db", tmp_path / "conf"
    env = {"AGENTPROBE_DB": str(db), "AGENTPROBE_CONFDIR": str(conf)}

    def agent(system):
        return lambda client: chat(client, "Summarise the report", system=system)

    first = record_run(db, conf, Path(tls_ca_bundle), fake_provider_tls, agent("You are a helpful assistant."),
                       label="dev")
    empty = run_cli("trace", "--label", "dev", "--", "nonexistent-command-xyz", env=env)
    assert empty.returncode == 127, empty.stderr
    empty_id = json.loads(ap("runs", "--json", db=db).out)[0]["id"]
    assert empty_id != first
    return SimpleRuns(db, conf, Path(tls_ca_bundle), fake_provider_tls, first, empty_id, agent)


class SimpleRuns:
    def __init__(self, db, conf, ca, provider, first, empty, agent):
        self.db, self.conf, self.ca, self.provider = db, conf, ca, provider
        self.first, self.empty, self.agent = first, empty, agent


def test_an_empty_run_is_no_baseline_for_drift(runs_with_an_empty_one):
    w = runs_with_an_empty_one
    third = record_run(w.db, w.conf, w.ca, w.provider, w.agent("You are a terse assistant."), label="dev")
    data = json.loads(ap("scan", "--json", db=w.db).out)
    assert data["runs"] == [third]
    [changed] = [f for f in data["findings"] if f["rule"] == "prompt_drift/system_prompt_changed"]
    assert w.first in changed["evidence"] + json.dumps(changed["data"])  # compared with the last run that called
    assert w.empty not in json.dumps(changed)
    lines = changed["evidence"].splitlines()
    assert "-You are a helpful assistant." in lines and "+You are a terse assistant." in lines


def test_scanning_a_run_with_no_calls_says_so(runs_with_an_empty_one):
    w = runs_with_an_empty_one
    named = ap("scan", "--run", w.empty, db=w.db)
    assert named.code == 2 and len(named.err.strip().splitlines()) == 1, named.err
    assert f"run {w.empty} recorded no LLM calls" in named.err and "status failed" in named.err
    assert "exit code 127" in named.err
    also_named = ap("scan", "--run", w.empty[-6:], db=w.db)  # by the end of its id, as printed
    assert also_named.code == 2 and "recorded no LLM calls" in also_named.err
    latest = ap("scan", db=w.db)  # not asked for by name: said, and the scan goes on
    assert latest.code == 0 and f"run {w.empty} recorded no LLM calls" in latest.err
    with_a_real_one = ap("scan", "--run", w.empty, "--run", w.first, "--json", db=w.db)
    assert with_a_real_one.code == 0 and "recorded no LLM calls" in with_a_real_one.err
    assert json.loads(with_a_real_one.out)["runs"] == [w.empty, w.first]


# --- agentprobe's own runs are no environments -------------------------------------------------------

def test_agentprobes_own_labels_are_never_environments(tmp_path, tls_ca_bundle, fake_provider_tls):
    from pathlib import Path

    db, conf, ca = tmp_path / "ap.db", tmp_path / "conf", Path(tls_ca_bundle)

    def at(temperature):
        return lambda client: chat(client, "Classify: refund please", system="You classify.", temperature=temperature)

    dev = record_run(db, conf, ca, fake_provider_tls, at(0), label="dev")
    record_run(db, conf, ca, fake_provider_tls, at(0.9), label="replay", parent_run_id=dev,
               command=f"agentprobe replay {dev}")
    record_run(db, conf, ca, fake_provider_tls, at(1.2), label="serve", command="agentprobe serve")
    record_run(db, conf, ca, fake_provider_tls, at(0.5), label="fork", parent_run_id=dev)

    every = json.loads(ap("scan", "--all", "--json", db=db).out)["findings"]
    assert not [f for f in every if f["rule"] == "temperature_drift/env_mismatch"], every
    # A real second environment is still found, naming only the agent's own labels.
    prod = record_run(db, conf, ca, fake_provider_tls, at(0.7), label="prod")
    data = json.loads(ap("scan", "--run", prod, "--json", db=db).out)
    [mismatch] = [f for f in data["findings"] if f["rule"] == "temperature_drift/env_mismatch"]
    assert set(mismatch["data"]["temperatures"]) == {"dev", "prod"}, mismatch["data"]
    text = json.dumps(mismatch)
    assert "replay" not in text and "serve" not in text and "fork" not in text
    # The finding belongs to the runs it compares, not to a scan of an unrelated run.
    unrelated = record_run(db, conf, ca, fake_provider_tls,
                           lambda c: chat(c, "Something else entirely", system="You chat."), label="staging")
    other = json.loads(ap("scan", "--run", unrelated, "--json", db=db).out)["findings"]
    assert not [f for f in other if f["rule"] == "temperature_drift/env_mismatch"], other
