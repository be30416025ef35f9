"""`trace --config --prompt`: one prompt, sent as the config says, through the proxy with the real SDK."""

from __future__ import annotations

import json
import ssl

import pytest
import sqlite_utils

from agentprobe.fakeprovider import FakeProvider
from proxy_fixtures import PLANTED_ANTHROPIC_KEY, PLANTED_OPENAI_KEY, run_cli

SYSTEM = "You answer in one short sentence."


@pytest.fixture
def varying_provider(tls_ca):
    """Replies vary at temperature > 0, as a real model's do."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    with FakeProvider(ssl_context=context, vary=True) as provider:
        yield provider


def write_config(tmp_path, **extra):
    config = {"model": "gpt-4o-mini", "provider": "openai", "system_prompt": {"text": SYSTEM},
              "environments": {"dev": {"temperature": 0.0, "max_tokens": 200}, "prod": {"temperature": 0.9}},
              **extra}
    path = tmp_path / "agent_config.json"
    path.write_text(json.dumps(config))
    return path


def oneshot(tmp_path, tls_ca_bundle, provider, *args, key_env=None, base="/v1"):
    env = {"OPENAI_API_KEY": PLANTED_OPENAI_KEY} if key_env is None else key_env
    target = [] if base is None else ["--base-url", f"{provider.url}{base}"]
    return run_cli("trace", "--db", str(tmp_path / "a.db"), "--confdir", str(tmp_path / "conf"),
                   "--upstream-ca", tls_ca_bundle, *target, *args, env=env)


def test_times_at_prod_temperature_shows_varying_answers_and_is_recorded(tmp_path, tls_ca_bundle, varying_provider):
    cfg = write_config(tmp_path)
    out = oneshot(tmp_path, tls_ca_bundle, varying_provider, "--config", str(cfg), "--prompt", "Name a colour.",
                  "--env", "prod", "--times", "4", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert len(report["answers"]) == 4 and report["errors"] == 0
    assert report["distinct_answers"] > 1 and report["settings"] == {"temperature": 0.9}
    db = sqlite_utils.Database(tmp_path / "a.db")
    run = db.execute("SELECT id, label, config_sha256, status FROM runs").fetchone()
    assert run[0] == report["run_id"] and run[1] == "prod" and run[2] and run[3] == "completed"
    calls = list(db.query("SELECT temperature, system_prompt_sha256, model FROM calls"))
    assert len(calls) == 4 and {c["temperature"] for c in calls} == {0.9}
    prompt = db.execute("SELECT text FROM prompts WHERE sha256 = ?", [calls[0]["system_prompt_sha256"]]).fetchone()
    assert prompt[0] == SYSTEM
    assert PLANTED_OPENAI_KEY.encode() not in (tmp_path / "a.db").read_bytes()


def test_dev_temperature_zero_gives_one_answer_and_findings_are_printed(tmp_path, tls_ca_bundle, varying_provider):
    cfg = write_config(tmp_path)
    out = oneshot(tmp_path, tls_ca_bundle, varying_provider, "--config", str(cfg), "--prompt", "Name a colour.",
                  "--times", "3")
    assert out.returncode == 0, out.stderr
    assert "3 answer(s), 1 distinct, at temperature=0.0, max_tokens=200" in out.stderr
    assert out.stdout.count("[") >= 3  # each answer numbered on stdout
    # The config's own finding: dev and prod run at different temperatures.
    assert "temperature_drift" in out.stdout


def test_anthropic_config_uses_the_anthropic_sdk(tmp_path, tls_ca_bundle, fake_provider_tls):
    cfg = write_config(tmp_path, model="claude-sonnet-4-6", provider="anthropic")
    out = oneshot(tmp_path, tls_ca_bundle, fake_provider_tls, "--config", str(cfg), "--prompt", "hi", "--json",
                  key_env={"ANTHROPIC_API_KEY": PLANTED_ANTHROPIC_KEY}, base="")
    assert out.returncode == 0, out.stderr
    [call] = sqlite_utils.Database(tmp_path / "a.db").query("SELECT provider, api, max_tokens FROM calls")
    assert call["provider"] == "anthropic" and call["api"] == "messages"
    assert call["max_tokens"] == 200


def test_rate_limited_prompt_exits_1_and_is_recorded(tmp_path, tls_ca_bundle, fake_provider_tls):
    cfg = write_config(tmp_path)
    out = oneshot(tmp_path, tls_ca_bundle, fake_provider_tls, "--config", str(cfg),
                  "--prompt", "hello [fake status=429 retry_after=2]", "--json")
    assert out.returncode == 1
    report = json.loads(out.stdout)
    assert report["errors"] == 1 and "429" in report["answers"][0]["error"]
    assert "api_latency/rate_limited" in {f["rule"] for f in report["findings"]}


@pytest.mark.parametrize("args, env, message", [
    (["--prompt", "hi"], {"OPENAI_API_KEY": "x"}, "needs both --config"),
    (["--config", "CFG", "--prompt", "hi", "NO_BASE_URL"], {}, "set OPENAI_API_KEY"),
    (["--config", "CFG", "--prompt", "hi", "--env", "staging"], {"OPENAI_API_KEY": "x"}, "'staging' is not in"),
    (["--config", "CFG", "--prompt", "hi", "--", "python", "x.py"], {"OPENAI_API_KEY": "x"}, "not both"),
])
def test_bad_one_shot_input_is_one_line_and_exit_2(tmp_path, tls_ca_bundle, fake_provider_tls, args, env, message):
    cfg = write_config(tmp_path)
    base = None if "NO_BASE_URL" in args else "/v1"
    args = [str(cfg) if a == "CFG" else a for a in args if a != "NO_BASE_URL"]
    out = oneshot(tmp_path, tls_ca_bundle, fake_provider_tls, *args, key_env=env, base=base)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "a.db").exists()


def test_a_base_url_needs_no_key(tmp_path, tls_ca_bundle, fake_provider_tls):
    """A server of the user's own (vLLM, Ollama) takes any key: the one-shot sends a placeholder, as analyze does."""
    cfg = write_config(tmp_path)
    out = oneshot(tmp_path, tls_ca_bundle, fake_provider_tls, "--config", str(cfg), "--prompt", "hi", "--json",
                  key_env={})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["errors"] == 0
    [request] = fake_provider_tls.requests
    assert request["headers"]["authorization"] == "Bearer not-needed"
    assert json.loads(request["body"])["max_tokens"] == 200  # a compatible server gets the older name
