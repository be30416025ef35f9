"""`trace` makes bypass loud: a connection around the proxy is named at the end, on the run row and by `scan`,
and a run without one LLM call says so. Real processes, the real proxy, the fake provider on plain HTTP."""

from __future__ import annotations

import json
import os
import re
import sys
import textwrap

import pytest

from agentprobe.proxy import bypass_watch
from proxy_fixtures import run_cli

SECRET = "sk-proj-BYPASSkeyBYPASSkey0123456789"

# Calls the fake provider CALLS times through the proxy with the openai SDK (it honours HTTP_PROXY),
# then, with DIRECT=1, once more with http.client, which ignores every proxy variable, holding that
# connection open half a second. Writes its pid to PID_FILE.
AGENT = textwrap.dedent(
    f"""
    import http.client, os, sys, time
    open(os.environ["PID_FILE"], "w").write(str(os.getpid()))
    url = os.environ["FAKE_URL"]
    if int(os.environ.get("CALLS", "1")):
        import openai
        client = openai.OpenAI(base_url=url + "/v1", api_key="{SECRET}")
        for i in range(int(os.environ.get("CALLS", "1"))):
            client.chat.completions.create(model="gpt-4o-mini", messages=[{{"role": "user", "content": f"q{{i}}"}}])
    if os.environ.get("DIRECT") == "1":
        host, port = url.split("//")[1].split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("POST", "/v1/chat/completions",
                     body='{{"model": "gpt-4o-mini", "messages": [{{"role": "user", "content": "direct"}}]}}',
                     headers={{"content-type": "application/json", "authorization": "Bearer {SECRET}"}})
        conn.getresponse().read()
        time.sleep(0.5)
        conn.close()
    sys.exit(int(os.environ.get("EXIT_WITH", "0")))
    """
)

pytestmark = pytest.mark.skipif(not bypass_watch.SUPPORTED, reason="connections are watched on Linux only")


@pytest.fixture
def agent(tmp_path, fake_provider):
    (tmp_path / "agent.py").write_text(AGENT)
    env = {"FAKE_URL": fake_provider.url, "PID_FILE": str(tmp_path / "pid"),
           "AGENTPROBE_CONFDIR": str(tmp_path / "conf"), "AGENTPROBE_DB": str(tmp_path / "ap.db")}

    def trace(*options: str, **extra: str):
        r = run_cli("trace", "--bypass-ports", f"+{fake_provider.port}", *options, "--", sys.executable,
                    str(tmp_path / "agent.py"), env={**env, **extra})
        return r, int((tmp_path / "pid").read_text())

    trace.env = env
    trace.provider = fake_provider
    return trace


def test_a_connection_around_the_proxy_is_reported_recorded_and_scanned(agent):
    r, pid = agent(DIRECT="1")
    port = agent.provider.port
    assert r.returncode == 0, r.stderr
    assert agent.provider.count() == 2  # one call through the proxy, one around it
    warnings = [line for line in r.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1, r.stderr
    m = re.fullmatch(rf"agentprobe: WARNING: 1 connection from (\S+) \(pid {pid}\) to 127\.0\.0\.1:{port}"
                     r" bypassed the proxy and was not recorded", warnings[0])
    assert m, r.stderr
    assert m.group(1).startswith("python")
    assert "calls 1 (LLM 1" in r.stderr and "bypassed connections 1 (ports" in r.stderr

    [run] = json.loads(run_cli("runs", "--json", env=agent.env).stdout)
    assert run["bypassed_connections"] == 1 and run["calls"] == 1
    detail = json.loads(run["bypass_detail"])
    assert detail["checked"] and port in detail["ports"] and 443 in detail["ports"]
    assert detail["bypasses"] == [{"pid": pid, "process": m.group(1), "address": "127.0.0.1", "port": port,
                                   "connections": 1}]
    # The run row names processes by pid and name, never by command line.
    assert "agent.py" not in run["bypass_detail"] and SECRET not in run["bypass_detail"]
    assert "bypassed" in run_cli("runs", env=agent.env).stdout  # the table's column

    scan = run_cli("scan", "--run", "latest", "--json", env=agent.env)
    [finding] = [f for f in json.loads(scan.stdout)["findings"] if f["rule"] == "recording/bypassed"]
    assert finding["severity"] == "high" and finding["data"]["bypassed_connections"] == 1
    assert f"(pid {pid}) to 127.0.0.1:{port}" in finding["evidence"]
    assert "HTTPS_PROXY" in finding["fix"] and f"--upstream http://127.0.0.1:{port}" in finding["fix"]
    assert "no LLM call" not in r.stderr


def test_a_command_that_only_uses_the_proxy_has_no_bypass(agent):
    r, _ = agent("--json", CALLS="3")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["llm_calls"] == 3 and summary["bypassed_connections"] == 0
    assert summary["bypass"]["checked"] and summary["bypass"]["bypasses"] == []
    assert summary["bypass"]["polls"] > 0
    assert "WARNING" not in r.stderr and "not checked" not in r.stderr
    [run] = json.loads(run_cli("runs", "--json", env=agent.env).stdout)
    assert run["bypassed_connections"] == 0
    scan = json.loads(run_cli("scan", "--run", "latest", "--json", env=agent.env).stdout)
    assert not [f for f in scan["findings"] if f["rule"] == "recording/bypassed"]


def test_a_run_without_an_llm_call_says_so_with_the_likely_causes(agent):
    r, pid = agent(CALLS="0", DIRECT="1", EXIT_WITH="3")
    assert r.returncode == 3, r.stderr
    lines = r.stderr.splitlines()
    start = lines.index("agentprobe: WARNING: no LLM call was recorded in this run. Likely causes:")
    causes = "\n".join(lines[start + 1:])
    assert "1 connection(s) went around the proxy" in causes
    assert "a client that reads no proxy setting" in causes and "trust_env=False" in causes
    assert "NO_PROXY" in causes and "base URL" in causes and "agentprobe record --upstream" in causes
    assert "the command failed before its first call (it exited with 3)" in causes
    assert f"(pid {pid})" in r.stderr  # and the bypass line names the process


def test_a_quiet_command_gets_the_message_without_a_bypass_line(agent):
    r, _ = agent(CALLS="0")
    assert r.returncode == 0, r.stderr
    assert "no LLM call was recorded in this run" in r.stderr
    assert "went around the proxy" not in r.stderr and "bypassed the proxy" not in r.stderr
    assert "it exited with" not in r.stderr


@pytest.mark.parametrize("how", ["option", "env"])
def test_malformed_bypass_ports_are_one_line_and_exit_2(agent, how):
    args = ["--bypass-ports", "443,http"] if how == "option" else []
    env = {**agent.env, **({"AGENTPROBE_BYPASS_PORTS": "443,http"} if how == "env" else {})}
    r = run_cli("trace", *args, "--", sys.executable, "-c", "pass", env=env)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "AGENTPROBE_BYPASS_PORTS" in r.stderr and "bad bypass port 'http'" in r.stderr
    assert "Traceback" not in r.stderr
    assert not os.path.exists(agent.env["AGENTPROBE_DB"])  # nothing started, nothing written


def test_the_check_can_be_switched_off(agent):
    r, _ = agent(DIRECT="1", AGENTPROBE_BYPASS_PORTS="none")
    # --bypass-ports given on the command line wins over the variable: the fixture passes +PORT.
    assert "bypassed the proxy" in r.stderr
    r = run_cli("trace", "--", sys.executable, "-c", "pass", env={**agent.env, "AGENTPROBE_BYPASS_PORTS": "none"})
    assert r.returncode == 0, r.stderr
    assert "agentprobe: bypassed connections were not checked: the check is switched off" in r.stderr
    runs = json.loads(run_cli("runs", "--json", env=agent.env).stdout)
    assert runs[0]["bypassed_connections"] is None
