"""`replay` against the fake provider through the real proxy: deterministic, drifting, rate limited."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from proxy_fixtures import run_cli

AGENT = textwrap.dedent(
    """
    import os, openai, anthropic
    oa = openai.OpenAI(base_url=os.environ["FAKE_URL"] + "/v1", api_key="sk-replay-0123456789abcdef")
    temperature = float(os.environ.get("TEMP", "0"))
    extra = os.environ.get("EXTRA", "")
    oa.chat.completions.create(model="gpt-4o-mini", temperature=temperature,
                               messages=[{"role": "user", "content": "Summarise the report " + extra}])
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    oa.chat.completions.create(model="gpt-4o-mini", temperature=temperature, tools=tools,
                               messages=[{"role": "user", "content": "Look it up [fake tool_calls=2]"}])
    an = anthropic.Anthropic(base_url=os.environ["FAKE_URL"], api_key="sk-ant-replay-0123456789")
    with an.messages.stream(model="claude-haiku-4-5", max_tokens=100, extra_body={"temperature": temperature},
                            messages=[{"role": "user", "content": "Stream something"}]) as s:
        s.get_final_text()
    if os.environ.get("EMBED"):
        oa.embeddings.create(model="text-embedding-3-small", input=["a passage", "another passage"])
        an.messages.count_tokens(model="claude-haiku-4-5", messages=[{"role": "user", "content": "Count me"}])
    """
)


@pytest.fixture
def record(tmp_path, tls_ca_bundle, fake_provider_tls):
    (tmp_path / "agent.py").write_text(AGENT)
    env = {"FAKE_URL": fake_provider_tls.url, "AGENTPROBE_DB": str(tmp_path / "ap.db"),
           "AGENTPROBE_CONFDIR": str(tmp_path / "conf")}

    def run(**extra_env):
        r = run_cli("trace", "--upstream-ca", tls_ca_bundle, "--", sys.executable, str(tmp_path / "agent.py"),
                    env={**env, **extra_env})
        assert r.returncode == 0, r.stderr
        return json.loads(run_cli("runs", "--json", env=env).stdout)[0]["id"]

    return run, env, tls_ca_bundle, fake_provider_tls


def _replay(env, ca, *args):
    return run_cli("replay", *args, "--upstream-ca", ca, "--times", "3", "--json", env=env)


def test_deterministic_provider_scores_100(record):
    run, env, ca, _ = record
    run_id = run()
    r = _replay(env, ca, run_id)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["calls"] == 3 and result["deterministic"] == 3 and result["deterministic_share"] == 1.0
    assert all(o["ratios"] == [1.0, 1.0, 1.0] for o in result["outcomes"])
    runs = json.loads(run_cli("runs", "--json", env=env).stdout)
    assert runs[0]["label"] == "replay" and runs[0]["parent_run_id"] == run_id and runs[0]["calls"] == 9


def test_embeddings_and_token_counts_are_not_replayed(record):
    run, env, ca, provider = record
    run_id = run(EMBED="1")
    assert provider.count("/v1/embeddings") == provider.count("/v1/messages/count_tokens") == 1
    r = _replay(env, ca, run_id)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["calls"] == 3  # the three calls that generate
    assert provider.count("/v1/embeddings") == provider.count("/v1/messages/count_tokens") == 1


def test_varying_provider_drops_and_says_why(record):
    run, env, ca, provider = record
    run_id = run(TEMP="0.9")
    provider.vary = True
    r = _replay(env, ca, run_id)
    assert r.returncode == 1, r.stderr
    result = json.loads(r.stdout)
    assert result["deterministic"] < result["calls"]
    worst = result["worst"][0]
    assert worst["score"] < 0.99 and "temperature 0.9" in worst["why"] and "no seed" in worst["why"]
    table = run_cli("replay", run_id, "--upstream-ca", ca, "--times", "1", env=env)
    assert table.returncode == 1 and ("drifting" in table.stdout or "divergent" in table.stdout)


def test_rate_limits_are_waited_out_not_scored(record):
    run, env, ca, provider = record
    run_id = run(EXTRA="[fake status=429 retry_after=0.2 fail_times=1]")
    provider.clear()  # the replay meets the 429 again
    r = _replay(env, ca, run_id)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["deterministic"] == 3
    assert not any(o["errors"] for o in result["outcomes"])


def test_only_failed_and_missing_credentials(record, monkeypatch):
    run, env, ca, _ = record
    run_id = run()
    r = run_cli("replay", run_id, "--only-failed", env=env)
    assert r.returncode == 2 and "no recorded LLM requests to replay" in r.stderr
    r = run_cli("replay", run_id, "--base-url", "openai=https://api.openai.com/v1", env={**env, "OPENAI_API_KEY": ""})
    assert r.returncode == 2 and "set OPENAI_API_KEY" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_replay_from_a_trace_file_into_a_fresh_database(record, tmp_path):
    run, env, ca, _ = record
    run_id = run()
    trace = tmp_path / "run.json"
    assert run_cli("export", run_id, "-o", str(trace), env=env).returncode == 0
    fresh = {**env, "AGENTPROBE_DB": str(tmp_path / "elsewhere.db")}
    r = run_cli("replay", "--trace", str(trace), "--upstream-ca", ca, "--times", "1", "--json", env=fresh)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["calls"] == 3 and result["deterministic"] == 3
    runs = json.loads(run_cli("runs", "--json", env=fresh).stdout)
    assert {r["id"] for r in runs} >= {run_id} and runs[0]["parent_run_id"] == run_id


def test_a_target_that_fails_every_attempt_is_one_error_not_a_verdict(record):
    import time

    run, env, ca, provider = record
    run_id = run()
    started = time.monotonic()
    r = _replay(env, ca, run_id, "--header", "x-fake: status=503")
    elapsed = time.monotonic() - started
    last = r.stderr.strip().splitlines()[-1]  # after the progress lines a log gets every few seconds
    assert r.returncode == 2 and last.startswith("agentprobe: error: no replay of run"), r.stderr
    assert "HTTP 503" in last
    assert elapsed < 60, elapsed  # two calls' backoff, then the target is taken for down: no minutes of silence


def test_a_failure_that_reproduces_is_the_same_answer(tmp_path, tls_ca_bundle, fake_provider_tls):
    (tmp_path / "agent.py").write_text(textwrap.dedent("""
        import os, openai
        oa = openai.OpenAI(base_url=os.environ["FAKE_URL"] + "/v1", api_key="sk-replay-0123456789abcdef", max_retries=0)
        try:
            oa.chat.completions.create(model="gpt-4o-mini", temperature=0,
                                       messages=[{"role": "user", "content": "Fail [fake status=500]"}])
        except openai.InternalServerError:
            pass
    """))
    env = {"FAKE_URL": fake_provider_tls.url, "AGENTPROBE_DB": str(tmp_path / "ap.db"),
           "AGENTPROBE_CONFDIR": str(tmp_path / "conf")}
    r = run_cli("trace", "--upstream-ca", tls_ca_bundle, "--", sys.executable, str(tmp_path / "agent.py"), env=env)
    assert r.returncode == 0, r.stderr
    r = _replay(env, tls_ca_bundle, "latest")
    result = json.loads(r.stdout)
    [failed] = result["outcomes"]
    assert failed["verdict"] == "deterministic" and failed["score"] == 1.0, result
    assert r.returncode == 0


def test_replay_on_another_model_sends_it_and_scores_against_the_recording(record):
    run, env, ca, provider = record
    run_id = run()
    provider.clear()
    r = run_cli("replay", run_id, "--model", "gpt-4.1", "--set", "temperature=0", "--upstream-ca", ca,
                "--times", "1", "--json", env=env)
    assert r.returncode in (0, 1), r.stderr
    result = json.loads(r.stdout)
    assert result["model"] == "gpt-4.1" and result["calls"] == 3
    sent = [json.loads(req["body"]) for req in provider.requests]
    assert [b["model"] for b in sent] == ["gpt-4.1"] * 3 and {b["temperature"] for b in sent} == {0}
    assert all(o["model"] == "gpt-4.1" and len(o["ratios"]) == 1 for o in result["outcomes"])
    calls = json.loads(run_cli("calls", "--run", result["replay_run_id"], "--json", env=env).stdout)
    assert {c["model"] for c in calls} == {"gpt-4.1"}
