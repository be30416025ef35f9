"""Embeddings and token counting: the real openai, google-genai and anthropic clients, through the real
proxy over HTTPS, to the fake provider. Every call the provider answered must be in the database, in
order, with the path, model and status it was answered with."""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

import openai
import pytest

from agentprobe.checks import scan_runs
from proxy_fixtures import PLANTED_GEMINI_KEY, PLANTED_OPENAI_KEY

_GEMINI_MODEL = re.compile(r"/models/([^/:]+):")


def provider_saw(provider) -> list[tuple]:
    """(path, model, status) of each request the fake provider answered, in arrival order."""
    out = []
    for request in provider.requests:
        path = urlsplit(request["path"]).path
        in_path = _GEMINI_MODEL.search(path)
        model = in_path.group(1) if in_path else json.loads(request["body"]).get("model")
        out.append((path, model, request["status"]))
    return out


def recorded_calls(calls: list[dict]) -> list[tuple]:
    return [(urlsplit(c["path"]).path, c["model"], c["status"]) for c in calls]


def assert_same_calls(provider, calls: list[dict]) -> None:
    assert recorded_calls(calls) == provider_saw(provider)
    assert [c["seq"] for c in calls] == list(range(1, len(calls) + 1))


def test_openai_embeddings_string_and_list_input(recorded, fake_provider_tls):
    client = recorded.openai(fake_provider_tls)
    one = client.embeddings.create(model="text-embedding-3-small", input="The quick brown fox jumps over the dog")
    many = client.embeddings.create(model="text-embedding-3-large", input=["first passage", "second passage here"],
                                    dimensions=4, encoding_format="float")
    tokens = client.embeddings.create(model="text-embedding-3-small", input=[[9906, 1917], [15339]])
    assert len(one.data) == 1 and [len(d.embedding) for d in many.data] == [4, 4]
    calls = recorded.calls()
    assert_same_calls(fake_provider_tls, calls)
    assert [c["path"] for c in calls] == ["/v1/embeddings"] * 3
    for call, reply, inputs in zip(calls, (one, many, tokens), (1, 2, 2)):
        assert (call["provider"], call["api"], call["stream"]) == ("openai_compatible", "embeddings", 0)
        assert call["response_model"] == reply.model
        assert call["input_tokens"] == reply.usage.prompt_tokens and call["usage_source"] == "provider"
        assert call["output_tokens"] is None and call["finish_reason"] is None and call["output_sha256"] is None
        assert call["temperature"] is None and call["max_tokens"] is None
        assert call["conversation_id"] is None and call["turn"] is None  # a batch of texts is no conversation
        assert call["error_type"] is None and call["parse_error"] is None
        assert call["message_count"] == inputs and call["attempt"] == 1
        assert call["counted_input_tokens"] > 0 and call["tokenizer"]
        assert call["latency_ms"] > 0 and len(call["request_sha256"]) == 64
    # Our count of each input, on its own: "first passage" and "second passage here" are 2 and 3 tokens in
    # cl100k, not 6 as one joined text; token ids count as they are.
    assert calls[1]["counted_input_tokens"] == 5
    assert calls[2]["counted_input_tokens"] == 3 == tokens.usage.prompt_tokens
    body = json.loads(recorded.db().execute("SELECT content FROM bodies WHERE id = ?",
                                            [calls[0]["request_body"]]).fetchone()[0])
    assert body["encoding_format"] == "base64"  # what the SDK sent, kept as sent


def test_gemini_embed_content_and_count_tokens(recorded, fake_provider_tls):
    client = recorded.genai(fake_provider_tls)
    embedded = client.models.embed_content(model="text-embedding-004", contents=["what is a vector", "and a token"],
                                           config={"output_dimensionality": 6})
    counted = client.models.count_tokens(model="gemini-2.5-flash", contents="How long is this prompt?")
    assert [len(e.values) for e in embedded.embeddings] == [6, 6]
    embed, count = calls = recorded.calls()
    assert_same_calls(fake_provider_tls, calls)
    assert embed["path"].endswith("/models/text-embedding-004:batchEmbedContents")
    assert (embed["provider"], embed["api"], embed["model"]) == ("gemini", "batchEmbedContents", "text-embedding-004")
    assert embed["input_tokens"] is None and embed["usage_source"] is None  # the Gemini API reports none
    assert embed["counted_input_tokens"] == 7 and embed["message_count"] == 2  # 4 + 3 tokens, each on its own
    assert (count["provider"], count["api"], count["model"]) == ("gemini", "countTokens", "gemini-2.5-flash")
    assert count["input_tokens"] == counted.total_tokens > 0 and count["usage_source"] == "provider"
    assert count["counted_input_tokens"] > 0 and count["output_tokens"] is None
    assert count["conversation_id"] is None and count["finish_reason"] is None
    recorded.stop()
    for path in recorded.db_path.parent.glob("agentprobe.db*"):
        assert PLANTED_GEMINI_KEY.encode() not in path.read_bytes()


def test_anthropic_count_tokens(recorded, fake_provider_tls):
    client = recorded.anthropic(fake_provider_tls)
    tools = [{"name": "search", "description": "Search the docs", "input_schema": {"type": "object"}}]
    counted = client.messages.count_tokens(model="claude-sonnet-4-6", system="Answer from the docs.", tools=tools,
                                           messages=[{"role": "user", "content": "Which plan includes SSO?"}])
    [call] = calls = recorded.calls()
    assert_same_calls(fake_provider_tls, calls)
    assert (call["path"], call["provider"], call["api"], call["model"]) == (
        "/v1/messages/count_tokens", "anthropic", "messages.count_tokens", "claude-sonnet-4-6")
    assert call["input_tokens"] == counted.input_tokens and call["usage_source"] == "provider"
    assert call["counted_input_tokens"] > 0 and call["output_tokens"] is None and call["finish_reason"] is None
    assert call["system_prompt_sha256"] and call["tools_sha256"] and call["message_count"] == 1
    assert call["conversation_id"] is None and call["stream"] == 0


def test_a_scan_of_embeddings_and_token_counts_finds_nothing(recorded, fake_provider_tls):
    """None of them sends a temperature, and none of them should be told to."""
    recorded.openai(fake_provider_tls).embeddings.create(model="text-embedding-3-small", input=["a", "b", "c"])
    gemini = recorded.genai(fake_provider_tls)  # kept: the client closes its connections when collected
    gemini.models.embed_content(model="text-embedding-004", contents="query")
    gemini.models.count_tokens(model="gemini-2.5-pro", contents="query")
    recorded.anthropic(fake_provider_tls).messages.count_tokens(
        model="claude-haiku-4-5", messages=[{"role": "user", "content": "query"}])
    calls = recorded.calls()
    assert_same_calls(fake_provider_tls, calls)
    assert [c["temperature"] for c in calls] == [None] * 4
    findings = scan_runs(recorded.db(), [recorded.recording.run_id])
    assert [(f.rule, f.evidence) for f in findings] == []


def test_rate_limited_embedding_is_retried_linked_and_reported(recorded, fake_provider_tls):
    client = recorded.openai(fake_provider_tls)
    client.embeddings.create(model="text-embedding-3-small", input="rate me",
                             extra_headers={"x-fake": "status=429; retry_after=0.2; fail_times=1"})
    with pytest.raises(openai.InternalServerError):
        recorded.openai(fake_provider_tls, max_retries=0).embeddings.create(
            model="text-embedding-3-small", input="[fake status=500] broken")
    first, second, failed = calls = recorded.calls()
    assert_same_calls(fake_provider_tls, calls)
    assert [c["status"] for c in calls] == [429, 200, 500]
    assert first["error_type"] == "rate_limit_exceeded" and first["error_message"].startswith("Rate limit")
    assert first["retry_after_s"] == pytest.approx(0.2) and first["finish_reason"] == "error"
    assert (second["attempt"], second["retry_of"]) == (2, first["id"])
    assert second["request_sha256"] == first["request_sha256"] and second["input_tokens"] > 0
    assert (failed["error_type"], failed["attempt"]) == ("server_error", 1)
    assert json.loads(second["request_headers"]).get("x-stainless-retry-count") == "1"
    findings = {f.rule: f for f in scan_runs(recorded.db(), [recorded.recording.run_id])}
    assert [c["call_id"] for c in findings["api_latency/rate_limited"].calls] == [first["id"]]
    assert [c["call_id"] for c in findings["api_latency/retry"].calls] == [second["id"]]
    # A 429 and a 500 are not billed, so nothing here was wasted: the rule counts only what the provider charged.
    assert "usage/wasted" not in findings
    assert "temperature_drift/implicit_default" not in findings
    assert PLANTED_OPENAI_KEY not in json.dumps([dict(c) for c in calls])
