"""`serve` and `trace --serve`: a real SDK agent answered from a recording, with the provider gone."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap

import openai
import pytest

from proxy_fixtures import run_cli

AGENT = textwrap.dedent(
    """
    import os, sys, openai, anthropic
    question = sys.argv[1] if len(sys.argv) > 1 else "Plan a trip"
    oa = openai.OpenAI(base_url=os.environ["FAKE_URL"] + "/v1", api_key="sk-serve-0123456789abcdef", max_retries=0)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": question}]
    for follow in ("Cheaper?", "One line."):
        follow += os.environ.get("FOLLOW_SUFFIX", "")
        r = oa.chat.completions.create(model="gpt-4o-mini", messages=messages, temperature=0)
        print("chat:", r.choices[0].message.content)
        messages += [{"role": "assistant", "content": r.choices[0].message.content}, {"role": "user", "content": follow}]
    stream = oa.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True)
    print("stream:", "".join(c.choices[0].delta.content or "" for c in stream if c.choices))
    an = anthropic.Anthropic(base_url=os.environ["FAKE_URL"], api_key="sk-ant-serve-0123456789", max_retries=0)
    with an.messages.stream(model="claude-haiku-4-5", max_tokens=100, messages=[{"role": "user", "content": question}]) as s:
        print("claude:", s.get_final_text())
    """
)


@pytest.fixture
def recorded_run(tmp_path, tls_ca_bundle, fake_provider_tls):
    (tmp_path / "agent.py").write_text(AGENT)
    env = {"FAKE_URL": fake_provider_tls.url, "AGENTPROBE_DB": str(tmp_path / "ap.db"),
           "AGENTPROBE_CONFDIR": str(tmp_path / "conf")}
    r = run_cli("trace", "--upstream-ca", tls_ca_bundle, "--", sys.executable, str(tmp_path / "agent.py"), env=env)
    assert r.returncode == 0, r.stderr
    run_id = json.loads(run_cli("runs", "--json", env=env).stdout)[0]["id"]
    fake_provider_tls.stop()  # from here on there is no provider at all
    return tmp_path, env, run_id, r.stdout


def test_trace_serve_answers_identically_offline(recorded_run):
    tmp, env, run_id, original_output = recorded_run
    r = run_cli("trace", "--serve", run_id, "--", sys.executable, str(tmp / "agent.py"), env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == original_output
    assert "4 matched the recording exactly" in r.stderr and "0 unmatched" in r.stderr
    runs = json.loads(run_cli("runs", "--json", env=env).stdout)
    assert runs[0]["label"] == "serve" and runs[0]["parent_run_id"] == run_id
    original = json.loads(run_cli("calls", "--run", run_id, "--json", env=env).stdout)
    served = json.loads(run_cli("calls", "--json", env=env).stdout)
    assert [c["output_sha256"] for c in served] == [c["output_sha256"] for c in original]
    assert [c["host"] for c in served] == [c["host"] for c in original]
    assert all(c["stream_complete"] == 1 for c in served if c["stream"])


def test_trace_serve_reports_where_the_agent_diverged(recorded_run):
    tmp, env, run_id, _ = recorded_run
    r = run_cli("trace", "--serve", run_id, "--", sys.executable, str(tmp / "agent.py"), "A different question",
                env=env)
    assert r.returncode != 0  # the agent sees an error it does not handle
    assert "DIVERGED at request 1 (/v1/chat/completions)" in r.stderr
    [call] = json.loads(run_cli("calls", "--json", env=env).stdout)
    assert call["status"] == 404 and call["error_type"] == "unmatched_request"
    assert "different path" in call["error_message"]


@pytest.mark.parametrize("source", ["run", "trace file"])
def test_serve_command_with_a_base_url(recorded_run, source):
    tmp, env, run_id, _ = recorded_run
    base = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    what = [run_id]
    if source == "trace file":
        assert run_cli("export", run_id, "-o", str(tmp / "t.json"), env=env).returncode == 0
        env = {**env, "AGENTPROBE_DB": str(tmp / "fresh.db")}  # served offline from the file alone
        what = ["--trace", str(tmp / "t.json")]
    proc = subprocess.Popen([sys.executable, "-m", "agentprobe", "serve", *what, "--port", "0"],
                            env={**base, **env}, stderr=subprocess.PIPE, text=True)
    try:
        url = re.search(r"on (http://[\d.:]+)", proc.stderr.readline()).group(1)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-other-key-0123456789",
                               http_client=openai.DefaultHttpxClient(trust_env=False), max_retries=0)
        r = client.chat.completions.create(
            model="gpt-4o-mini", temperature=0,
            messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Plan a trip"}])
        assert r.choices[0].message.content.startswith("Fake reply to")
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "1 matched the recording exactly" in err


def test_serve_unknown_run_is_one_line(recorded_run):
    _, env, _, _ = recorded_run
    r = run_cli("serve", "NOPE", "--port", "0", env=env)
    assert r.returncode == 2 and "no run" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_changed_follow_ups_are_matched_by_their_place_in_the_conversation(recorded_run):
    tmp, env, run_id, original_output = recorded_run
    r = run_cli("trace", "--serve", run_id, "--", sys.executable, str(tmp / "agent.py"),
                env={**env, "FOLLOW_SUFFIX": " (asked at 10:42)"})
    assert r.returncode == 0, r.stderr
    assert r.stdout == original_output
    assert "2 matched the recording exactly, 2 by their place in a conversation, 0 unmatched" in r.stderr


EMBEDDING_AGENT = textwrap.dedent(
    """
    import os, openai, anthropic
    oa = openai.OpenAI(base_url=os.environ["FAKE_URL"] + "/v1", api_key="sk-serve-0123456789abcdef", max_retries=0)
    vectors = oa.embeddings.create(model="text-embedding-3-small", input=["refund policy", "shipping times"])
    print("vectors:", [round(v, 6) for d in vectors.data for v in d.embedding])
    an = anthropic.Anthropic(base_url=os.environ["FAKE_URL"], api_key="sk-ant-serve-0123456789", max_retries=0)
    print("tokens:", an.messages.count_tokens(model="claude-haiku-4-5",
                                              messages=[{"role": "user", "content": "refund policy"}]).input_tokens)
    """
)


def test_embeddings_and_token_counts_are_served_offline(tmp_path, tls_ca_bundle, fake_provider_tls):
    (tmp_path / "agent.py").write_text(EMBEDDING_AGENT)
    env = {"FAKE_URL": fake_provider_tls.url, "AGENTPROBE_DB": str(tmp_path / "ap.db"),
           "AGENTPROBE_CONFDIR": str(tmp_path / "conf")}
    r = run_cli("trace", "--upstream-ca", tls_ca_bundle, "--", sys.executable, str(tmp_path / "agent.py"), env=env)
    assert r.returncode == 0, r.stderr
    run_id = json.loads(run_cli("runs", "--json", env=env).stdout)[0]["id"]
    fake_provider_tls.stop()
    served = run_cli("trace", "--serve", run_id, "--", sys.executable, str(tmp_path / "agent.py"), env=env)
    assert served.returncode == 0, served.stderr
    assert served.stdout == r.stdout and "vectors: [" in r.stdout
    assert "2 matched the recording exactly" in served.stderr and "0 unmatched" in served.stderr


@pytest.mark.parametrize("api,shape", [("embeddings", "openai"), ("messages.count_tokens", "anthropic"),
                                       ("batchEmbedContents", "gemini"), ("countTokens", "gemini"), (None, "openai")])
def test_an_unmatched_request_is_answered_in_its_provider_s_error_shape(api, shape):
    from agentprobe.playback.serve import unmatched_body

    body = json.loads(unmatched_body(api, "/x"))
    if shape == "anthropic":
        assert body["type"] == "error" and body["error"]["type"] == "not_found_error"
    elif shape == "gemini":
        assert body["error"]["status"] == "NOT_FOUND"
    else:
        assert body["error"]["code"] == "unmatched_request"
