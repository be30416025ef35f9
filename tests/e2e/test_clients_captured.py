"""`trace` steers clients that ignore one setting or another through the proxy.

Each test runs a real client under `agentprobe trace` and compares the calls the fake provider
saw with the calls recorded, call by call.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import sqlite_utils

from proxy_fixtures import assert_same_calls, run_cli

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hi."}]}


def _trace(tmp: Path, ca: str, *command: str, env: dict | None = None, extra: tuple[str, ...] = ()):
    base = {"AGENTPROBE_DB": str(tmp / "ap.db"), "AGENTPROBE_CONFDIR": str(tmp / "conf"), **(env or {})}
    return run_cli("trace", "--upstream-ca", ca, *extra, "--", *command, env=base)


def _db(tmp: Path) -> sqlite_utils.Database:
    return sqlite_utils.Database(tmp / "ap.db")


def test_aiohttp_without_trust_env_is_captured(tmp_path, tls_ca_bundle, fake_provider_tls):
    agent = tmp_path / "agent.py"
    agent.write_text(textwrap.dedent(f"""
        import asyncio, aiohttp, json
        async def main():
            async with aiohttp.ClientSession() as session:  # trust_env is False by default
                for i in range(2):
                    body = {json.dumps(CHAT)}
                    body["messages"][0]["content"] += str(i)
                    async with session.post("{fake_provider_tls.url}/v1/chat/completions", json=body) as r:
                        print(r.status, (await r.json())["object"])
        asyncio.run(main())
    """))
    r = _trace(tmp_path, tls_ca_bundle, sys.executable, str(agent))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["200", "chat.completion", "200", "chat.completion"]
    assert "calls 2 (LLM 2" in r.stderr
    assert_same_calls(fake_provider_tls, _db(tmp_path))


def test_an_explicit_trust_env_false_is_respected_and_reported(tmp_path, tls_ca_bundle, fake_provider_tls):
    """The hook changes a default, not an agent's choice: such a session still goes direct."""
    agent = tmp_path / "agent.py"
    agent.write_text(textwrap.dedent(f"""
        import asyncio, aiohttp, ssl
        async def main():
            ctx = ssl.create_default_context(cafile={tls_ca_bundle!r})
            async with aiohttp.ClientSession(trust_env=False) as session:
                async with session.post("{fake_provider_tls.url}/v1/chat/completions", json={CHAT!r}, ssl=ctx) as r:
                    print(r.status)
        asyncio.run(main())
    """))
    r = _trace(tmp_path, tls_ca_bundle, sys.executable, str(agent))
    assert r.returncode == 0 and r.stdout.strip() == "200", r.stderr
    assert fake_provider_tls.count() == 1
    assert _db(tmp_path).execute("SELECT count(*) FROM calls").fetchone()[0] == 0


def test_the_shadowed_sitecustomize_still_runs(tmp_path, tls_ca_bundle, fake_provider_tls):
    mine = tmp_path / "site"
    mine.mkdir()
    (mine / "sitecustomize.py").write_text("import os\nos.environ['USER_SITECUSTOMIZE_RAN'] = '1'\n")
    agent = tmp_path / "agent.py"
    agent.write_text("import os, sys\nprint(os.environ.get('USER_SITECUSTOMIZE_RAN'), '' in sys.path)\n")
    r = _trace(tmp_path, tls_ca_bundle, sys.executable, str(agent), env={"PYTHONPATH": str(mine)})
    assert r.returncode == 0, r.stderr
    # The user's own sitecustomize ran, and no empty (current-directory) entry was added to sys.path.
    assert r.stdout.split() == ["1", "False"]


def test_no_proxy_for_localhost_does_not_hide_a_local_model_server(tmp_path, tls_ca_bundle, fake_provider_tls):
    """Shells and images often set NO_PROXY=localhost,127.0.0.1; a local vLLM or Ollama then went unseen."""
    agent = tmp_path / "agent.py"
    agent.write_text(textwrap.dedent(f"""
        import openai, os
        assert os.environ["NO_PROXY"] == "" and os.environ["no_proxy"] == ""
        client = openai.OpenAI(base_url="{fake_provider_tls.url}/v1", api_key="sk-local-0123456789abcdefghij")
        for q in ("a", "b", "c"):
            client.chat.completions.create(model="llama3.1:8b", messages=[{{"role": "user", "content": q}}])
    """))
    r = _trace(tmp_path, tls_ca_bundle, sys.executable, str(agent),
               env={"NO_PROXY": "localhost,127.0.0.1", "no_proxy": "localhost,127.0.0.1,::1"})
    assert r.returncode == 0, r.stderr
    assert_same_calls(fake_provider_tls, _db(tmp_path))
    assert [c["model"] for c in _db(tmp_path).query("SELECT model FROM calls ORDER BY seq")] == ["llama3.1:8b"] * 3


def test_the_users_own_roots_stay_trusted(tmp_path, tls_ca_bundle, fake_provider_tls):
    """A private CA the user already trusts (SSL_CERT_FILE) is in the bundle the child gets."""
    from agentprobe.proxy.ca import BUNDLE

    agent = tmp_path / "agent.py"
    agent.write_text("import os\nprint(open(os.environ['SSL_CERT_FILE']).read())\n")
    # Only the user's trust settings name the fake provider's CA: no --upstream-ca this time.
    base = {"AGENTPROBE_DB": str(tmp_path / "ap.db"), "AGENTPROBE_CONFDIR": str(tmp_path / "conf"),
            "SSL_CERT_FILE": tls_ca_bundle}
    r = run_cli("trace", "--", sys.executable, str(agent), env=base)
    assert r.returncode == 0, r.stderr
    private = Path(tls_ca_bundle).read_text().strip()
    assert private in r.stdout and str(tmp_path / "conf" / BUNDLE)
    # And the proxy trusts it upstream: a call to the HTTPS provider works with no --upstream-ca.
    call = tmp_path / "call.py"
    call.write_text(textwrap.dedent(f"""
        import openai
        openai.OpenAI(base_url="{fake_provider_tls.url}/v1", api_key="sk-x-0123456789abcdefghij").chat.completions\\
            .create(model="gpt-4o-mini", messages=[{{"role": "user", "content": "hi"}}])
    """))
    r = run_cli("trace", "--", sys.executable, str(call), env=base)
    assert r.returncode == 0, r.stderr
    assert_same_calls(fake_provider_tls, _db(tmp_path))


CORPORATE = textwrap.dedent("""
    import json, os
    from mitmproxy import http

    class Seen:
        def http_connect(self, flow: http.HTTPFlow) -> None:
            with open(os.environ["SEEN"], "a") as f:
                f.write(json.dumps({"connect": flow.request.pretty_host + ":" + str(flow.request.port),
                                    "auth": flow.request.headers.get("proxy-authorization", "")}) + "\\n")

        def request(self, flow: http.HTTPFlow) -> None:
            with open(os.environ["SEEN"], "a") as f:
                f.write(json.dumps({"request": flow.request.path}) + "\\n")

    addons = [Seen()]
""")


@pytest.fixture
def corporate_proxy(tmp_path, tls_ca_bundle):
    """A second mitmproxy standing in for a company's egress proxy: it intercepts TLS and wants a password."""
    script, seen, conf = tmp_path / "corporate.py", tmp_path / "seen.jsonl", tmp_path / "corp-conf"
    script.write_text(CORPORATE)
    mitmdump = str(Path(sys.executable).parent / "mitmdump")
    proc = subprocess.Popen([mitmdump, "--listen-host", "127.0.0.1", "--listen-port", "0", "-s", str(script),
                             "--set", f"confdir={conf}", "--set", "proxyauth=corp:s3cret-PW-0123",
                             "--set", f"ssl_verify_upstream_trusted_ca={tls_ca_bundle}"],
                            env={**os.environ, "SEEN": str(seen)}, stdout=subprocess.PIPE, text=True)
    port = None
    deadline = time.monotonic() + 30
    while port is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "listening at" in line:
            port = int(line.rsplit(":", 1)[1].split()[0].rstrip("."))
    assert port, "the corporate mitmdump did not start"
    try:
        yield port, seen, conf / "mitmproxy-ca-cert.pem"
    finally:
        proc.terminate()
        proc.wait(10)


def test_an_existing_corporate_proxy_is_chained_not_bypassed(tmp_path, tls_ca_bundle, fake_provider_tls,
                                                            corporate_proxy):
    port, seen, corp_ca = corporate_proxy
    agent = tmp_path / "agent.py"
    agent.write_text(textwrap.dedent(f"""
        import openai
        client = openai.OpenAI(base_url="{fake_provider_tls.url}/v1", api_key="sk-corp-0123456789abcdefghij")
        for q in ("one", "two"):
            client.chat.completions.create(model="gpt-4o-mini", messages=[{{"role": "user", "content": q}}])
    """))
    # The company's proxy intercepts TLS, so its CA is in the user's trust settings, as it would be.
    user_trust = tmp_path / "user-roots.pem"
    user_trust.write_text(corp_ca.read_text() + Path(tls_ca_bundle).read_text())
    env = {"HTTPS_PROXY": f"http://corp:s3cret-PW-0123@127.0.0.1:{port}", "NO_PROXY": "internal.example",
           "SSL_CERT_FILE": str(user_trust)}
    r = _trace(tmp_path, tls_ca_bundle, sys.executable, str(agent), env=env)
    assert r.returncode == 0, r.stderr
    assert_same_calls(fake_provider_tls, _db(tmp_path))
    lines = [json.loads(line) for line in seen.read_text().splitlines()]
    connects = [entry for entry in lines if "connect" in entry]
    assert connects and all(c["connect"] == f"127.0.0.1:{fake_provider_tls.port}" for c in connects)
    assert [entry["request"] for entry in lines if "request" in entry] == ["/v1/chat/completions"] * 2
    # The password went to the corporate proxy and nowhere else.
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("ap.db*"))
    for secret in (b"s3cret-PW-0123", b"Y29ycDpzM2NyZXQtUFctMDEyMw"):
        assert secret not in stored
    assert "s3cret" not in r.stdout + r.stderr


def test_upstream_proxy_none_connects_directly(tmp_path, tls_ca_bundle, fake_provider_tls, corporate_proxy):
    port, seen, _ = corporate_proxy
    agent = tmp_path / "agent.py"
    agent.write_text(textwrap.dedent(f"""
        import openai
        openai.OpenAI(base_url="{fake_provider_tls.url}/v1", api_key="sk-corp-0123456789abcdefghij")\\
            .chat.completions.create(model="gpt-4o-mini", messages=[{{"role": "user", "content": "direct"}}])
    """))
    r = _trace(tmp_path, tls_ca_bundle, sys.executable, str(agent), extra=("--upstream-proxy", "none"),
               env={"HTTPS_PROXY": f"http://corp:s3cret-PW-0123@127.0.0.1:{port}"})
    assert r.returncode == 0, r.stderr
    assert_same_calls(fake_provider_tls, _db(tmp_path))
    assert not seen.exists() or not seen.read_text().strip()


@pytest.mark.parametrize("value, message", [
    ("ftp://proxy:21", "must be an http:// or https:// URL"),
    ("http://user:hunter2@:3128", "must be an http:// or https:// URL with a host"),
    ("http://proxy:99999", "not a valid URL"),
])
def test_a_bad_upstream_proxy_is_one_line_without_its_password(tmp_path, value, message):
    r = run_cli("trace", "--upstream-proxy", value, "--", "true",
                env={"AGENTPROBE_DB": str(tmp_path / "ap.db"), "AGENTPROBE_CONFDIR": str(tmp_path / "conf")})
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "hunter2" not in r.stderr and not (tmp_path / "ap.db").exists()


JAVA_AGENT = textwrap.dedent("""
    import java.net.URI;
    import java.net.http.HttpClient;
    import java.net.http.HttpRequest;
    import java.net.http.HttpResponse;
    import java.net.HttpURLConnection;
    import java.net.URL;

    public class Agent {
        public static void main(String[] args) throws Exception {
            String body = args[1];
            HttpClient client = HttpClient.newHttpClient();
            HttpRequest request = HttpRequest.newBuilder(URI.create(args[0]))
                .header("content-type", "application/json").POST(HttpRequest.BodyPublishers.ofString(body)).build();
            System.out.println(client.send(request, HttpResponse.BodyHandlers.ofString()).statusCode());
            HttpURLConnection old = (HttpURLConnection) new URL(args[0]).openConnection();
            old.setRequestMethod("POST");
            old.setDoOutput(true);
            old.setRequestProperty("content-type", "application/json");
            old.getOutputStream().write(body.replace("Say hi.", "Say hello.").getBytes());
            System.out.println(old.getResponseCode());
        }
    }
""")


def test_a_java_agent_on_loopback_is_captured(tmp_path, tls_ca_bundle, fake_provider_tls):
    java = shutil.which("java")
    assert java, "a JDK is needed for this test (.ci/run installs one)"
    (tmp_path / "Agent.java").write_text(JAVA_AGENT)
    r = _trace(tmp_path, tls_ca_bundle, java, str(tmp_path / "Agent.java"),
               f"{fake_provider_tls.url}/v1/chat/completions", json.dumps(CHAT))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["200", "200"]
    assert_same_calls(fake_provider_tls, _db(tmp_path))
