"""The real openai and anthropic SDKs, through the real proxy over HTTPS, to the fake provider."""

from __future__ import annotations

import json

import openai
import pytest

from proxy_fixtures import PLANTED_ANTHROPIC_KEY, PLANTED_OPENAI_KEY, staggered_calls

SYSTEM = "You answer in one short sentence."


def test_chat_non_streaming_records_parameters_usage_and_hashes(recorded, fake_provider_tls):
    client = recorded.openai(fake_provider_tls)
    reply = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Name a colour."}],
        temperature=0.3,
        top_p=0.9,
        max_tokens=50,
        seed=7,
    )
    db = recorded.db()
    [call] = list(db.query("SELECT * FROM calls"))
    assert call["provider"] == "openai_compatible"
    assert call["api"] == "chat.completions"
    assert call["model"] == "gpt-4o-mini"
    assert (call["temperature"], call["top_p"], call["max_tokens"], call["seed"]) == (0.3, 0.9, 50, 7)
    assert call["parallel_tool_calls"] is None  # not sent, so not guessed
    assert call["status"] == 200 and call["error_type"] is None
    assert call["stream"] == 0
    assert call["input_tokens"] == reply.usage.prompt_tokens
    assert call["output_tokens"] == reply.usage.completion_tokens
    assert call["usage_source"] == "provider"
    assert call["finish_reason"] == "stop"
    assert call["counted_input_tokens"] > 0 and call["tokenizer"]
    assert call["seq"] == 1 and call["completion_seq"] == 1
    assert call["latency_ms"] > 0 and call["started_at"].endswith("+00:00")
    assert len(call["request_sha256"]) == 64 and len(call["output_sha256"]) == 64
    prompt = db.execute("SELECT text FROM prompts WHERE sha256 = ?", [call["system_prompt_sha256"]]).fetchone()
    assert prompt[0] == SYSTEM
    output = db.execute("SELECT text FROM prompts WHERE sha256 = ?", [call["output_sha256"]]).fetchone()
    assert output[0] == reply.choices[0].message.content
    body = db.execute("SELECT content FROM bodies WHERE id = ?", [call["request_body"]]).fetchone()[0]
    assert json.loads(body)["seed"] == 7
    run = db.execute("SELECT status, label, calls_lost, ended_at FROM runs").fetchone()
    assert run[0] == "completed" and run[1] == "test" and run[2] == 0 and run[3]


def test_chat_streams_with_and_without_include_usage(recorded, fake_provider_tls):
    client = recorded.openai(fake_provider_tls)
    texts = []
    for extra in ({"stream_options": {"include_usage": True}}, {}):
        stream = client.chat.completions.create(
            model="gpt-4o", stream=True, messages=[{"role": "user", "content": "Count to five."}], **extra
        )
        texts.append("".join(c.choices[0].delta.content or "" for c in stream if c.choices))
    with_usage, without = recorded.calls()
    assert with_usage["stream"] == 1 and with_usage["include_usage"] == 1
    assert with_usage["stream_complete"] == 1
    assert with_usage["input_tokens"] > 0 and with_usage["output_tokens"] > 0
    assert with_usage["usage_source"] == "provider"
    assert with_usage["ttft_ms"] is not None and with_usage["ttft_ms"] <= with_usage["latency_ms"]
    assert without["include_usage"] in (None, 0)
    assert without["input_tokens"] is None and without["usage_source"] is None
    assert without["stream_complete"] == 1 and without["finish_reason"] == "stop"
    assert without["counted_input_tokens"] > 0
    assert with_usage["output_sha256"] == without["output_sha256"]  # same deterministic text both ways
    assert texts[0] == texts[1] and texts[0]


def test_rate_limit_retry_links_attempts(recorded, fake_provider_tls):
    client = recorded.openai(fake_provider_tls)
    client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Hello"}],
        extra_headers={"x-fake": "status=429; retry_after=0.2; fail_times=1"},
    )
    first, second = recorded.calls()
    assert first["status"] == 429 and first["retry_after_s"] == pytest.approx(0.2)
    assert first["error_type"] and first["finish_reason"] == "error"
    assert second["status"] == 200
    assert second["attempt"] == 2 and second["retry_of"] == first["id"]
    assert second["conversation_id"] == first["conversation_id"]
    assert json.loads(second["request_headers"]).get("x-stainless-retry-count") == "1"
    assert first["ratelimit"] and "x-ratelimit" in first["ratelimit"]


def test_server_error_recorded_with_type_and_message(recorded, fake_provider_tls):
    client = recorded.openai(fake_provider_tls, max_retries=0)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], extra_headers={"x-fake": "status=500"}
        )
    [call] = recorded.calls()
    assert call["status"] == 500
    assert call["error_type"] and call["error_message"]
    assert call["finish_reason"] == "error"


def test_stream_cut_midway_is_recorded_as_cut(recorded, fake_provider_tls):
    client = recorded.openai(fake_provider_tls, max_retries=0)
    got = []
    with pytest.raises(Exception):
        stream = client.chat.completions.create(
            model="gpt-4o-mini", stream=True, messages=[{"role": "user", "content": "Tell me a story"}],
            extra_headers={"x-fake": "cut_after=3; words=30"},
        )
        for chunk in stream:
            got.append(chunk)
    assert got  # the agent saw the first events before the cut
    [call] = recorded.calls()
    assert call["status"] == 200
    assert call["stream_complete"] == 0
    assert call["error_type"] == "stream_cut"


def test_concurrent_calls_record_dispatch_and_completion_order(recorded, fake_provider_tls):
    client = recorded.openai(fake_provider_tls)
    staggered_calls(client, [0.15 * (4 - i) for i in range(4)], "job ")
    calls = recorded.calls()
    assert [c["seq"] for c in calls] == [1, 2, 3, 4]
    assert [c["completion_seq"] for c in calls] == [4, 3, 2, 1]
    body = [json.loads(recorded.db().execute("SELECT content FROM bodies WHERE id=?", [c["request_body"]]).fetchone()[0])
            for c in calls]
    assert [b["messages"][0]["content"] for b in body] == ["job 0", "job 1", "job 2", "job 3"]


def test_gzip_response_passes_through_and_is_parsed(recorded, fake_provider_tls):
    client = recorded.openai(fake_provider_tls)
    reply = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "zip it"}], extra_headers={"x-fake": "encoding=gzip"}
    )
    [call] = recorded.calls()
    assert json.loads(call["response_headers"])["content-encoding"] == "gzip"
    assert call["output_tokens"] == reply.usage.completion_tokens
    assert call["finish_reason"] == "stop" and call["parse_error"] is None


def test_gzip_stream_byte_identical(recorded, fake_provider_tls):
    """What the agent receives through the proxy is exactly what the provider sent."""
    import httpx2

    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "[fake reply=fixed_text_here]"}]}
    headers = {"x-fake": "encoding=gzip", "accept-encoding": "gzip"}
    via = httpx2.Client(proxy=recorded.url, verify=recorded.ssl_context(), trust_env=False)
    url = f"{fake_provider_tls.url}/v1/chat/completions"
    with via.stream("POST", url, json=body, headers=headers) as r:
        raw_via = b"".join(r.iter_raw())
    assert raw_via[:2] == b"\x1f\x8b"  # still gzip: the proxy did not decode or re-encode
    import gzip

    text = gzip.decompress(raw_via).decode()
    assert text.rstrip().endswith("data: [DONE]")
    [call] = recorded.calls()
    assert call["stream_complete"] == 1 and call["output_sha256"]


def test_three_turn_conversation_shares_an_id(recorded, fake_provider_tls):
    client = recorded.openai(fake_provider_tls)
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Plan a trip."}]
    for follow_up in ("Make it cheaper.", "Now in one line."):
        r = client.chat.completions.create(model="gpt-4o-mini", messages=messages, temperature=0)
        messages += [{"role": "assistant", "content": r.choices[0].message.content},
                     {"role": "user", "content": follow_up}]
    client.chat.completions.create(model="gpt-4o-mini", messages=messages, temperature=0)
    # An unrelated call starts its own conversation.
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Unrelated."}])
    calls = recorded.calls()
    assert [c["turn"] for c in calls] == [1, 2, 3, 1]
    assert len({c["conversation_id"] for c in calls[:3]}) == 1
    assert calls[3]["conversation_id"] != calls[0]["conversation_id"]
    assert [c["message_count"] for c in calls[:3]] == [1, 3, 5]  # the system prompt is kept apart
    assert len({c["system_prompt_sha256"] for c in calls[:3]}) == 1


def test_anthropic_messages_stream_tools_and_truncation(recorded, fake_provider_tls):
    client = recorded.anthropic(fake_provider_tls)
    tools = [{"name": "get_weather", "description": "Weather for a city",
              "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    with client.messages.stream(
        model="claude-sonnet-4-6", max_tokens=200, system="Be terse.", tools=tools,
        messages=[{"role": "user", "content": "Weather in Oslo and Rome?"}],
        extra_headers={"x-fake": "tool_calls=2"},
    ) as stream:
        final = stream.get_final_message()
    client.messages.create(
        model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "Write an essay."}],
        extra_headers={"x-fake": "words=40"},
    )
    streamed, truncated = recorded.calls()
    assert streamed["provider"] == "anthropic" and streamed["api"] == "messages"
    assert streamed["stream"] == 1 and streamed["stream_complete"] == 1
    assert streamed["finish_reason"] == "tool_calls"
    assert [t["name"] for t in json.loads(streamed["tool_calls"])] == ["get_weather", "get_weather"]
    assert streamed["input_tokens"] == final.usage.input_tokens
    assert streamed["output_tokens"] == final.usage.output_tokens
    assert streamed["tools_sha256"] and streamed["system_prompt_sha256"]
    assert streamed["temperature"] is None  # anthropic 2.x sends none: recorded as absent
    assert truncated["finish_reason"] == "length" and truncated["raw_finish_reason"] == "max_tokens"
    assert truncated["max_tokens"] == 5


def test_openai_responses_api_stream(recorded, fake_provider_tls):
    client = recorded.openai(fake_provider_tls)
    with client.responses.stream(model="gpt-4.1", input="Say hi", instructions=SYSTEM, max_output_tokens=100) as s:
        s.get_final_response()
    [call] = recorded.calls()
    assert call["api"] == "responses" and call["stream"] == 1 and call["stream_complete"] == 1
    assert call["max_tokens"] == 100 and call["input_tokens"] > 0 and call["finish_reason"] == "stop"


def test_no_credential_reaches_the_database_files(recorded, fake_provider_tls):
    import httpx2

    recorded.openai(fake_provider_tls, default_headers={"api-key": "azure-PLANTED-key-0123456789"}).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    recorded.anthropic(fake_provider_tls).messages.create(
        model="claude-haiku-4-5", max_tokens=20, messages=[{"role": "user", "content": "hi"}]
    )
    with httpx2.Client(proxy=recorded.url, verify=recorded.ssl_context(), trust_env=False) as c:
        c.post(
            f"{fake_provider_tls.url}/v1beta/models/gemini-2.5-flash:generateContent?key=AIzaPLANTEDgeminiKEY0123456789abcdefgh",
            json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "api_key": "body-PLANTED-secret-123"},
        )
    recorded.stop()
    planted = [PLANTED_OPENAI_KEY, PLANTED_ANTHROPIC_KEY, "azure-PLANTED-key-0123456789",
               "AIzaPLANTEDgeminiKEY0123456789abcdefgh", "body-PLANTED-secret-123", "PLANTED"]
    files = [p for p in recorded.db_path.parent.glob("agentprobe.db*")]
    assert files
    for path in files:
        data = path.read_bytes()
        for secret in planted:
            assert secret.encode() not in data, f"{secret} leaked into {path.name}"
    calls = recorded.calls()
    assert len(calls) == 3 and {c["provider"] for c in calls} == {"openai_compatible", "anthropic", "gemini"}
