"""`trace`, `record`, `ca`, `runs`, `calls` as a user runs them: real processes, real proxy."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from proxy_fixtures import run_cli

AGENT = textwrap.dedent(
    """
    import os, sys, openai
    client = openai.OpenAI(base_url=os.environ["FAKE_URL"] + "/v1", api_key="sk-proj-TRACEDkeyTRACEDkey0123456789")
    for i in range(3):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"q{i}"}])
    try:
        client.with_options(max_retries=0).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "boom"}], extra_headers={"x-fake": "status=503"})
    except openai.APIStatusError:
        pass
    sys.exit(int(os.environ.get("EXIT_WITH", "0")))
    """
)


@pytest.fixture
def workdir(tmp_path, tls_ca_bundle, fake_provider_tls):
    (tmp_path / "agent.py").write_text(AGENT)
    env = {"FAKE_URL": fake_provider_tls.url, "AGENTPROBE_CONFDIR": str(tmp_path / "conf"),
           "AGENTPROBE_DB": str(tmp_path / "ap.db")}
    return tmp_path, env, str(tls_ca_bundle)


def test_trace_records_the_child_and_passes_its_exit_code(workdir):
    tmp, env, ca = workdir
    r = run_cli("trace", "--label", "dev", "--upstream-ca", ca, "--", sys.executable, str(tmp / "agent.py"),
                env={**env, "EXIT_WITH": "3"})
    assert r.returncode == 3, r.stderr
    assert "calls 4" in r.stderr and "503" in r.stderr and "tokens in" in r.stderr
    runs = json.loads(run_cli("runs", "--json", env=env).stdout)
    assert len(runs) == 1 and runs[0]["label"] == "dev" and runs[0]["exit_code"] == 3
    assert runs[0]["calls"] == 4 and runs[0]["errors"] == 1
    calls = json.loads(run_cli("calls", "--run", "latest", "--json", env=env).stdout)
    assert [c["status"] for c in calls] == [200, 200, 200, 503]
    nl = run_cli("calls", "--nl", env=env).stdout.strip().splitlines()
    assert len(nl) == 4 and json.loads(nl[0])["seq"] == 1
    csv_out = run_cli("calls", "--csv", env=env).stdout.splitlines()
    assert csv_out[0].startswith("id,run_id,seq") and len(csv_out) == 5
    table = run_cli("calls", env=env)
    assert table.returncode == 0 and "gpt-4o-mini" in table.stdout
    assert b"TRACEDkey" not in open(env["AGENTPROBE_DB"], "rb").read()


def test_trace_json_summary(workdir):
    tmp, env, ca = workdir
    talker = tmp / "talks.py"
    talker.write_text("print('the agent says hello')\n" + AGENT)
    r = run_cli("trace", "--json", "--upstream-ca", ca, "--", sys.executable, str(talker), env=env)
    summary = json.loads(r.stdout)  # stdout is only the JSON, so `| jq` works
    assert "the agent says hello" in r.stderr
    assert summary["calls"] == 4 and summary["errors_by_status"] == {"503": 1}
    assert summary["input_tokens"] > 0 and summary["calls_lost"] == 0


@pytest.mark.parametrize(
    "args,needle",
    [
        (["trace"], "no command to run"),
        (["trace", "--"], "no command to run"),
        (["calls", "--run", "NOSUCHRUN"], "no run"),
        (["calls", "--bogus-flag"], "No such option"),
        (["record", "--host", "0.0.0.0"], "refusing to listen"),
        (["record", "--upstream", "ftp://x"], "--upstream must be"),
        (["record", "--upstream", "ftp://me:hunter2pass@x"], "--upstream must be"),
        (["record", "--upstream", "http://me:hunter2pass@127.0.0.1:9"], "a user name or password"),
        (["record", "--upstream", "http://me:hunter2pass@[::1"], "not a valid URL"),
    ],
)
def test_bad_input_one_line_exit_2(workdir, args, needle):
    tmp, env, _ = workdir
    run_cli("trace", "--", sys.executable, "-c", "pass", env=env)  # a DB with one run
    before = open(env["AGENTPROBE_DB"], "rb").read()
    r = run_cli(*args, env=env)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and "hunter2pass" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert open(env["AGENTPROBE_DB"], "rb").read() == before


def test_missing_db_is_one_line(tmp_path):
    r = run_cli("runs", "--db", str(tmp_path / "missing.db"))
    assert r.returncode == 2 and "no agentprobe database" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "missing.db").exists()


def test_command_not_found(workdir):
    tmp, env, _ = workdir
    r = run_cli("trace", "--", "definitely-not-a-command-xyz", env=env)
    assert r.returncode == 127 and "command not found" in r.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_record(args, env):
    base = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    proc = subprocess.Popen([sys.executable, "-m", "agentprobe", "record", *args], env={**base, **env},
                            stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    assert "agentprobe: recording " in line, line
    return proc


def test_record_ca_env_and_ctrl_c_flushes(workdir):
    tmp, env, ca = workdir
    port = _free_port()
    proc = _start_record(["--port", str(port), "--upstream-ca", ca], env)
    try:
        exports = run_cli("ca", "--env", env=env).stdout
        assert f"HTTPS_PROXY=http://127.0.0.1:{port}" in exports and "SSL_CERT_FILE=" in exports
        bundle = run_cli("ca", "--bundle", env=env).stdout.strip()
        assert f"SSL_CERT_FILE={bundle}" in exports
        shell = f'{exports}\n"{sys.executable}" "{tmp / "agent.py"}"'
        out = subprocess.run(["bash", "-c", shell], env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        second = run_cli("record", "--port", str(port), env=env)  # port in use
        assert second.returncode == 2 and len(second.stderr.strip().splitlines()) == 1
        assert "cannot listen on 127.0.0.1" in second.stderr and "Address already in use" in second.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "calls 4" in err
    calls = json.loads(run_cli("calls", "--json", env=env).stdout)
    assert len(calls) == 4


def test_record_reverse_mode_needs_no_ca(tmp_path):
    from agentprobe.fakeprovider import FakeProvider

    with FakeProvider() as provider:  # plain HTTP upstream, as a local vLLM or Ollama would be
        env = {"AGENTPROBE_CONFDIR": str(tmp_path / "conf"), "AGENTPROBE_DB": str(tmp_path / "ap.db")}
        port = _free_port()
        proc = _start_record(["--port", str(port), "--upstream", provider.url], env)
        try:
            import openai

            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-reverse-0123456789abcdef",
                                   http_client=openai.DefaultHttpxClient(trust_env=False))
            reply = client.chat.completions.create(model="llama3.1", messages=[{"role": "user", "content": "hi"}])
            assert reply.choices[0].message.content
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
        assert proc.returncode == 0
        [call] = json.loads(run_cli("calls", "--json", env=env).stdout)
        assert call["model"] == "llama3.1" and call["provider"] == "openai_compatible"
        assert call["status"] == 200 and call["output_tokens"] > 0
        runs = json.loads(run_cli("runs", "--json", env=env).stdout)
        assert runs[0]["mode"].startswith("reverse:")


def test_a_key_in_the_traced_command_line_is_not_stored(workdir, fake_provider_tls):
    """The usual way: the shell expands $OPENAI_API_KEY into curl's arguments before agentprobe sees them."""
    tmp, env, ca = workdir
    key = "sk-proj-CMDLINEkeyCMDLINE0123456789"
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    r = run_cli("trace", "--label", f"api_key={key}", "--upstream-ca", ca, "--", "curl", "-sS", "--fail",
                "-H", f"Authorization: Bearer {key}", "-H", "content-type: application/json", "-d", body,
                f"{fake_provider_tls.url}/v1/chat/completions", env=env)
    assert r.returncode == 0, r.stderr
    assert "chat.completion" in r.stdout  # curl went through the proxy to the provider
    [sent] = fake_provider_tls.requests
    assert sent["headers"]["authorization"] == f"Bearer {key}"  # the agent's own request is untouched
    [run] = json.loads(run_cli("runs", "--json", env=env).stdout)
    assert run["calls"] == 1 and "curl" in run["command"] and "Authorization: [REDACTED]" in run["command"]
    assert key not in r.stderr + r.stdout.replace(sent["headers"]["authorization"], "")
    db = tmp / "ap.db"
    stored = b"".join(p.read_bytes() for p in tmp.glob("ap.db*"))
    assert key.encode() not in stored and db.exists()


def test_a_sigint_sent_to_trace_alone_reaches_the_command(workdir):
    tmp, env, ca = workdir
    child = tmp / "waits.py"
    child.write_text(textwrap.dedent("""
        import signal, sys, time
        def stop(signum, frame):
            print("got", signal.Signals(signum).name, flush=True)
            sys.exit(5)
        signal.signal(signal.SIGINT, stop)
        print("ready", flush=True)
        time.sleep(60)
    """))
    base = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    proc = subprocess.Popen([sys.executable, "-m", "agentprobe", "trace", "--upstream-ca", ca, "--", sys.executable,
                             str(child)], env={**base, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)  # no terminal: as under a CI runner
    assert proc.stdout.readline().strip() == "ready"
    os.kill(proc.pid, signal.SIGINT)  # to trace only, not its process group
    out, err = proc.communicate(timeout=60)
    assert out.strip() == "got SIGINT" and proc.returncode == 5, err


def test_a_daemon_left_running_by_the_command_is_named(workdir):
    tmp, env, ca = workdir
    child = tmp / "forks.py"
    child.write_text(textwrap.dedent("""
        import os, subprocess, sys
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    """))
    r = run_cli("trace", "--upstream-ca", ca, "--", sys.executable, str(child), env=env)
    assert r.returncode == 0, r.stderr
    left = re.search(r"warning: (\S+) \(pid (\d+)\), started by the command, is still running", r.stderr)
    assert left, r.stderr
    os.kill(int(left.group(2)), signal.SIGKILL)


def test_an_existing_open_confdir_is_not_chmodded_but_warned_about(tmp_path):
    confdir = tmp_path / "shared-conf"
    confdir.mkdir(mode=0o755)
    os.chmod(confdir, 0o755)
    r = run_cli("ca", "--confdir", str(confdir))
    assert r.returncode == 0 and r.stdout.strip().endswith("mitmproxy-ca-cert.pem")
    assert (confdir.stat().st_mode & 0o777) == 0o755  # the user's directory is as they left it
    assert "readable by other users (mode 755)" in r.stderr and f"chmod 700 {confdir}" in r.stderr
    fresh = tmp_path / "new-conf"
    assert run_cli("ca", "--confdir", str(fresh)).returncode == 0
    assert (fresh.stat().st_mode & 0o777) == 0o700


def test_an_upstream_the_proxy_cannot_verify_is_said_and_found_not_taken_for_wasted_tokens(workdir):
    tmp, env, _ca = workdir  # no --upstream-ca: the fake provider's private CA is not trusted
    r = run_cli("trace", "--", sys.executable, str(tmp / "agent.py"), env={**env, "EXIT_WITH": "0"})
    assert "ERROR: the proxy could not reach 127.0.0.1:" in r.stderr
    assert "Certificate verify failed" in r.stderr and "--upstream-ca" in r.stderr
    out = run_cli("scan", "--json", "--fail-on", "high", env=env)
    assert out.returncode == 1
    found = {f["rule"]: f for f in json.loads(out.stdout)["findings"]}
    assert found["api_latency/upstream_unreachable"]["data"]["error_type"] == "upstream_tls_error"
    assert "usage/wasted" not in found  # nothing reached the provider, nothing was billed
    assert "upstream_unreachable" in out.stderr  # the exit line names what tripped --fail-on
