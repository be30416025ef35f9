"""A small test project that uses the real openai and anthropic SDKs (and curl, in a subprocess), for
the plugin's end-to-end tests: each test here is run by a real pytest session in a temporary directory."""

TEST_AGENT = r'''
import json
import os
import subprocess

import anthropic
import openai

URL = os.environ["FAKE_URL"]
SUFFIX = os.environ.get("PROMPT_SUFFIX", "")


def ask(client, prompt, **kwargs):
    return client.chat.completions.create(model="gpt-4o-mini", temperature=0,
                                          messages=[{"role": "user", "content": prompt + SUFFIX}], **kwargs)


def test_openai_chat(agentprobe):
    client = openai.OpenAI(base_url=URL + "/v1", max_retries=0)
    r = ask(client, "Name a colour")
    assert r.choices[0].message.content.startswith("Fake reply to: Name a colour")
    assert len(agentprobe) == 1
    assert agentprobe.last_call["finish_reason"] == "stop"
    assert not agentprobe.findings("api_latency/*")


def test_openai_stream_and_three_calls(agentprobe):
    client = openai.OpenAI(base_url=URL + "/v1", max_retries=0)
    ask(client, "First")
    ask(client, "Second")
    text = "".join(c.choices[0].delta.content or "" for c in
                   ask(client, "Third, streamed", stream=True, stream_options={"include_usage": True}) if c.choices)
    assert text.startswith("Fake reply to: Third, streamed")
    assert len(agentprobe) == 3
    assert agentprobe.last_call["stream"] == 1 and agentprobe.last_call["finish_reason"] == "stop"


def test_anthropic_stream(agentprobe):
    client = anthropic.Anthropic(base_url=URL, max_retries=0)
    with client.messages.stream(model="claude-haiku-4-5", max_tokens=200,
                                messages=[{"role": "user", "content": "Say hi" + SUFFIX}]) as s:
        assert s.get_final_text().startswith("Fake reply to: Say hi")
    assert [c["provider"] for c in agentprobe.llm_calls] == ["anthropic"]


def test_curl_agent_in_a_subprocess():
    body = json.dumps({"model": "gpt-4o-mini", "temperature": 0,
                       "messages": [{"role": "user", "content": "From curl" + SUFFIX}]})
    out = subprocess.run(["curl", "-sS", "--fail-with-body", URL + "/v1/chat/completions",
                          "-H", "content-type: application/json",
                          "-H", "authorization: Bearer " + os.environ["OPENAI_API_KEY"], "-d", body],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["choices"][0]["message"]["content"].startswith("Fake reply to: From curl")


def test_no_model_call():
    assert sum([1, 2]) == 3
'''
