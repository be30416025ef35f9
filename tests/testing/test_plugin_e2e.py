"""The pytest plugin end to end: real pytest sessions over a project that uses the real SDKs and curl."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlite_utils

from proxy_fixtures import PLANTED_ANTHROPIC_KEY, PLANTED_OPENAI_KEY
from testing.agent_project import TEST_AGENT


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    (root / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    (root / "test_agent.py").write_text(TEST_AGENT)
    return root


def pytest_in(root: Path, *args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items()
            if not k.lower().endswith("_proxy") and k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "SSL_CERT_FILE",
                                                             "REQUESTS_CA_BUNDLE", "PYTEST_ADDOPTS")
            and not k.startswith("PYTEST_XDIST")}
    base.update({"AGENTPROBE_DB": str(root.parent / "ap.db"), "AGENTPROBE_CONFDIR": str(root.parent / "conf")})
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", *args], cwd=root, capture_output=True,
                          text=True, timeout=timeout, env={**base, **(env or {})})


def keys(url: str) -> dict:
    return {"FAKE_URL": url, "OPENAI_API_KEY": PLANTED_OPENAI_KEY, "ANTHROPIC_API_KEY": PLANTED_ANTHROPIC_KEY}


def test_record_then_replay_offline(project, fake_provider_tls, tls_ca_bundle):
    url = fake_provider_tls.url
    r = pytest_in(project, "--agentprobe-record-mode=once", f"--agentprobe-upstream-ca={tls_ca_bundle}",
                  env=keys(url))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "5 passed" in r.stdout
    cassettes = sorted(p.relative_to(project) for p in (project / "cassettes").rglob("*.json"))
    assert [str(p) for p in cassettes] == [
        "cassettes/test_agent/test_anthropic_stream.json", "cassettes/test_agent/test_curl_agent_in_a_subprocess.json",
        "cassettes/test_agent/test_openai_chat.json", "cassettes/test_agent/test_openai_stream_and_three_calls.json"]
    for path in cassettes:
        text = (project / path).read_text()
        assert PLANTED_OPENAI_KEY not in text and PLANTED_ANTHROPIC_KEY not in text
        assert json.loads(text)["format"] == "agentprobe-trace"
    db = sqlite_utils.Database(project.parent / "ap.db")
    labels = {row["label"]: row for row in db.query("SELECT * FROM runs")}
    assert labels["test_agent.py::test_openai_stream_and_three_calls"]["status"] == "completed"
    three = labels["test_agent.py::test_openai_stream_and_three_calls"]["id"]
    assert [c["seq"] for c in db.query("SELECT seq FROM calls WHERE run_id = ? ORDER BY seq", [three])] == [1, 2, 3]
    provider_calls = fake_provider_tls.count()
    assert provider_calls == 6

    # Offline: the provider is gone, no key is set, and the same tests pass from the cassettes.
    fake_provider_tls.stop()
    r = pytest_in(project, "--agentprobe-record-mode=none", env={"FAKE_URL": url})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "5 passed" in r.stdout

    # A prompt the code changed is not in the cassette: the test fails naming the call and the difference.
    r = pytest_in(project, "--agentprobe-record-mode=none", "-k", "openai_chat or curl",
                  env={"FAKE_URL": url, "PROMPT_SUFFIX": " (v2)"})
    assert r.returncode == 1, r.stdout + r.stderr
    assert "2 failed" in r.stdout
    assert "not in the cassette" in r.stdout
    assert "closest recorded call is seq 1 (gpt-4o-mini" in r.stdout
    assert "differs at messages[0].content: recorded 'Name a colour', sent 'Name a colour (v2)'" in r.stdout
    assert "recorded 'From curl', sent 'From curl (v2)'" in r.stdout


def test_fail_on_high_fails_the_test_and_prints_its_findings(project, fake_provider_tls, tls_ca_bundle):
    (project / "test_bad.py").write_text(
        "import os, openai\n"
        "def test_swallowed():\n"
        "    client = openai.OpenAI(base_url=os.environ['FAKE_URL'] + '/v1', max_retries=0)\n"
        "    try:\n"
        "        client.chat.completions.create(model='gpt-4o-mini', temperature=0,\n"
        "            messages=[{'role': 'user', 'content': 'x'}], extra_headers={'x-fake': 'status=500'})\n"
        "    except openai.APIStatusError:\n"
        "        pass\n"
        "    client.chat.completions.create(model='gpt-4o-mini', temperature=0,\n"
        "        messages=[{'role': 'user', 'content': 'carry on'}])\n")
    r = pytest_in(project, "test_bad.py", "--agentprobe-fail-on=high", f"--agentprobe-upstream-ca={tls_ca_bundle}",
                  env=keys(fake_provider_tls.url))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 failed" in r.stdout
    assert "finding(s) at or above high" in r.stdout and "api_latency/swallowed_error" in r.stdout
    # Without the gate the same test passes, with its findings in the report section.
    r = pytest_in(project, "test_bad.py", "--agentprobe", f"--agentprobe-upstream-ca={tls_ca_bundle}",
                  env=keys(fake_provider_tls.url))
    assert r.returncode == 0, r.stdout + r.stderr


def test_missing_and_corrupt_cassettes(project, fake_provider_tls):
    url = fake_provider_tls.url
    bad = project / "cassettes" / "test_agent" / "test_openai_chat.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"format": "agentprobe-trace", "version": 1, "run": ')
    r = pytest_in(project, "--agentprobe-record-mode=none", "-k", "openai_chat or anthropic or no_model",
                  env={"FAKE_URL": url})
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 failed, 1 passed, 2 deselected, 1 error" in r.stdout  # corrupt: error at setup; missing: the calls fail
    assert "ERROR at setup of test_openai_chat" in r.stdout and "not valid JSON" in r.stdout
    assert "record it again with --agentprobe-record-mode=all" in r.stdout
    assert "no cassette at" in r.stdout and "test_anthropic_stream.json" in r.stdout
    assert "INTERNALERROR" not in r.stdout + r.stderr
    assert fake_provider_tls.count() == 0  # replay-only mode never reached the provider


def test_with_xdist_each_worker_records_its_own_tests(project, fake_provider_tls, tls_ca_bundle):
    r = pytest_in(project, "-n", "2", "--agentprobe", f"--agentprobe-upstream-ca={tls_ca_bundle}",
                  env=keys(fake_provider_tls.url))
    assert r.returncode == 0, r.stdout + r.stderr
    db = sqlite_utils.Database(project.parent / "ap.db")
    sessions = {row["label"] for row in db.query("SELECT label FROM runs WHERE label LIKE 'pytest%'")}
    assert sessions <= {"pytest gw0", "pytest gw1"} and sessions
    per_test = {row["label"]: row["n"] for row in db.query(
        "SELECT r.label, count(c.id) AS n FROM runs r LEFT JOIN calls c ON c.run_id = r.id AND c.api IS NOT NULL"
        " WHERE r.label LIKE 'test_agent.py::%' GROUP BY r.id")}
    assert per_test == {"test_agent.py::test_openai_chat": 1, "test_agent.py::test_openai_stream_and_three_calls": 3,
                        "test_agent.py::test_anthropic_stream": 1, "test_agent.py::test_curl_agent_in_a_subprocess": 1,
                        "test_agent.py::test_no_model_call": 0}


def test_installed_but_not_enabled_changes_nothing(project, tmp_path):
    (project / "test_plain.py").write_text(
        "import os\n"
        "def test_env_untouched():\n"
        "    assert not os.environ.get('HTTPS_PROXY')\n"
        "def test_fixture_needs_the_flag(agentprobe):\n"
        "    pass\n")
    r = pytest_in(project, "test_plain.py")
    assert "1 passed, 1 error" in r.stdout, r.stdout + r.stderr
    assert "run pytest with --agentprobe" in r.stdout
    assert not (project.parent / "ap.db").exists() and not (project / "cassettes").exists()
    loaded = pytest_in(project, "test_plain.py", "-p", "no:agentprobe", "-k", "env_untouched")
    assert "1 passed" in loaded.stdout


def test_new_episodes_records_what_the_cassette_lacks(project, fake_provider_tls, tls_ca_bundle):
    url, ca = fake_provider_tls.url, f"--agentprobe-upstream-ca={tls_ca_bundle}"
    r = pytest_in(project, "-k", "openai_chat", "--agentprobe-record-mode=once", ca, env=keys(url))
    assert r.returncode == 0, r.stdout + r.stderr
    cassette = project / "cassettes" / "test_agent" / "test_openai_chat.json"
    assert "Name a colour" in cassette.read_text()
    fake_provider_tls.clear()
    changed = {**keys(url), "PROMPT_SUFFIX": " (v2)"}
    r = pytest_in(project, "-k", "openai_chat", "--agentprobe-record-mode=new_episodes", ca, env=changed)
    assert r.returncode == 0, r.stdout + r.stderr
    assert fake_provider_tls.count() == 1 and "Name a colour (v2)" in cassette.read_text()
    fake_provider_tls.stop()
    r = pytest_in(project, "-k", "openai_chat", "--agentprobe-record-mode=none", env={"FAKE_URL": url,
                                                                                     "PROMPT_SUFFIX": " (v2)"})
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_plugin_records_into_postgresql(project, fake_provider_tls, tls_ca_bundle, pg_url):
    """--agentprobe-db postgresql://...: each test's run lands in the team database, cassettes as on SQLite."""
    from agentprobe.store.db import open_db

    r = pytest_in(project, f"--agentprobe-db={pg_url}", "--agentprobe-record-mode=once",
                  f"--agentprobe-upstream-ca={tls_ca_bundle}", "-k", "openai", env=keys(fake_provider_tls.url))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 passed" in r.stdout
    db = open_db(pg_url)
    runs = {row["label"]: row for row in db.query("SELECT id, label, status FROM runs")}
    three = runs["test_agent.py::test_openai_stream_and_three_calls"]
    assert three["status"] == "completed"
    assert [c["seq"] for c in db.query("SELECT seq FROM calls WHERE run_id = ? ORDER BY seq", [three["id"]])] == [1, 2, 3]
    assert db.execute("SELECT count(*) FROM calls").fetchone()[0] == fake_provider_tls.count() == 4
    assert (project / "cassettes/test_agent/test_openai_chat.json").is_file()
    assert not (project.parent / "ap.db").exists()  # nothing went to the SQLite default
