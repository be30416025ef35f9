"""Each dialect parser on payloads shaped like the providers' real ones."""

from __future__ import annotations

import json

import pytest

from agentprobe.providers import (
    anthropic, anthropic_count_tokens, detect, gemini, gemini_count_tokens, gemini_embeddings, load_json, openai_chat,
    openai_embeddings, openai_responses, provider_for
)
from agentprobe.providers.base import ParseError
from agentprobe.providers.sse import SSEReader


@pytest.mark.parametrize(
    "method,path,expected",
    [
        ("POST", "/v1/chat/completions", openai_chat),
        ("POST", "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21", openai_chat),
        ("POST", "/api/v1/chat/completions", openai_chat),
        ("POST", "/v1/responses", openai_responses),
        ("POST", "/v1/messages", anthropic),
        ("POST", "/anthropic/v1/messages", anthropic),
        ("POST", "/v1beta/models/gemini-2.5-pro:generateContent", gemini),
        ("POST", "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key=X", gemini),
        ("GET", "/v1/models", None),
        ("GET", "/v1/responses/resp_123", None),
        ("POST", "/v1/messages/count_tokens", anthropic_count_tokens),
        ("POST", "/anthropic/v1/messages/count_tokens?beta=true", anthropic_count_tokens),
        ("POST", "/v1/embeddings", openai_embeddings),
        ("POST", "/gateway/openai/v1/embeddings", openai_embeddings),
        ("POST", "/openai/deployments/embed-prod/embeddings?api-version=2024-10-21", openai_embeddings),
        ("GET", "/v1/embeddings", None),
        ("POST", "/v1beta/models/text-embedding-004:embedContent", gemini_embeddings),
        ("POST", "/google/v1beta/models/gemini-embedding-001:batchEmbedContents?key=X", gemini_embeddings),
        ("POST", "/v1beta/models/gemini-2.5-flash:countTokens", gemini_count_tokens),
        ("POST", "/v1beta/models/gemini-2.5-flash:countTokens/extra", None),
        ("POST", "/v1/embeddings/batch", None),
        ("POST", "/v1/threads/thread_1/messages", None),
        ("POST", "/upload", None),
    ],
)
def test_detect_by_path(method, path, expected):
    assert detect(method, "example.internal", path, b"{}") is expected


def test_provider_names():
    assert provider_for("api.openai.com", openai_chat) == "openai"
    assert provider_for("my-res.openai.azure.com", openai_chat) == "openai_compatible"
    assert provider_for("localhost", openai_responses) == "openai_compatible"
    assert provider_for("gateway.corp", anthropic) == "anthropic"
    assert provider_for("generativelanguage.googleapis.com", gemini) == "gemini"
    assert provider_for("api.openai.com", openai_embeddings) == "openai"
    assert provider_for("localhost", "embeddings") == "openai_compatible"
    assert provider_for("gateway.corp", anthropic_count_tokens) == "anthropic"
    assert provider_for("api.openai.com", gemini_embeddings) == "gemini"
    assert provider_for("h", gemini_count_tokens) == "gemini"
    assert provider_for("h", "no.such.api") == "unknown"


def test_openai_chat_request():
    body = {
        "model": "gpt-4o", "temperature": 0.7, "max_completion_tokens": 256, "seed": 3, "stream": True,
        "stream_options": {"include_usage": True}, "parallel_tool_calls": False,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "messages": [
            {"role": "developer", "content": [{"type": "text", "text": "Rules."}]},
            {"role": "user", "content": [{"type": "text", "text": "Look: "}, {"type": "image_url", "image_url": {"url": "x"}}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "call_b", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}}]},
            {"role": "tool", "tool_call_id": "call_b", "content": "2"},
            {"role": "tool", "tool_call_id": "call_a", "content": "1"},
        ],
    }
    p = openai_chat.parse_request(body, "/v1/chat/completions", "api.openai.com")
    assert (p.provider, p.model, p.temperature, p.max_tokens, p.seed) == ("openai", "gpt-4o", 0.7, 256, 3)
    assert p.stream and p.include_usage is True and p.parallel_tool_calls is False
    assert p.system_prompt == "Rules."
    assert p.messages[0]["content"] == "Look: [image_url]"
    assert [c["id"] for c in p.messages[1]["tool_calls"]] == ["call_a", "call_b"]
    assert p.tool_result_ids == ["call_b", "call_a"]
    assert p.top_p is None


def test_wrong_types_are_absent_not_trusted():
    p = openai_chat.parse_request({"model": 5, "temperature": "hot", "max_tokens": True, "messages": "x"}, "/", "h")
    assert p.model is None and p.temperature is None and p.max_tokens is None and p.messages == []
    with pytest.raises(ParseError):
        openai_chat.parse_request(["not", "an", "object"], "/", "h")
    with pytest.raises(ParseError):
        load_json(b"\xff\xfe")


def test_openai_chat_response_and_error():
    r = openai_chat.parse_response(200, {
        "id": "chatcmpl-1", "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "Hi"}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 4},
                  "completion_tokens_details": {"reasoning_tokens": 1}},
    })
    assert (r.finish_reason, r.input_tokens, r.output_tokens, r.cached_input_tokens, r.reasoning_tokens) == (
        "length", 10, 2, 4, 1)
    assert r.output_text == "Hi" and r.response_model == "gpt-4o-2024-08-06" and r.usage_source == "provider"
    e = openai_chat.parse_response(400, {"error": {"message": "too long", "type": "invalid_request_error",
                                                  "code": "context_length_exceeded"}})
    assert e.error_type == "context_length_exceeded" and e.finish_reason == "error"


def _chat_stream(include_usage=True, done=True) -> bytes:
    chunks = [
        {"id": "c1", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"id": "c1", "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "call_1", "function": {"name": "lookup", "arguments": "{\"q\":"}}]}}]},
        {"id": "c1", "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": "\"é\"}"}}]}}]},
        {"id": "c1", "choices": [{"index": 0, "delta": {"content": "Done ✓"}, "finish_reason": "tool_calls"}]},
    ]
    if include_usage:
        chunks.append({"id": "c1", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}})
    out = b"".join(b"data: " + json.dumps(c, ensure_ascii=False).encode() + b"\n\n" for c in chunks)
    return out + (b"data: [DONE]\n\n" if done else b"")


def _feed_split(parser, data: bytes, at: int):
    parser.feed(data[:at])
    parser.feed(data[at:])
    return parser.result()


def test_openai_chat_stream_every_split_point():
    data = _chat_stream()
    for at in range(len(data) + 1):
        r = _feed_split(openai_chat.stream_parser(), data, at)
        assert r.complete and r.output_text == "Done ✓", at
        assert r.tool_calls == [{"id": "call_1", "name": "lookup", "arguments": "{\"q\":\"é\"}"}]
        assert (r.input_tokens, r.output_tokens, r.finish_reason) == (9, 4, "tool_calls")


def test_openai_chat_stream_without_usage_or_done():
    r = _feed_split(openai_chat.stream_parser(), _chat_stream(include_usage=False, done=False), 10)
    assert not r.complete and r.input_tokens is None and r.usage_source is None


def test_anthropic_request_and_stream():
    p = anthropic.parse_request({
        "model": "claude-opus-4-1", "max_tokens": 1024, "system": [{"type": "text", "text": "Sys"}],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
        "messages": [
            {"role": "user", "content": "Q"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "t", "input": {"a": 1}},
                                              {"type": "tool_use", "id": "toolu_2", "name": "t", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_2", "content": "r2"},
                                         {"type": "tool_result", "tool_use_id": "toolu_1", "content": "r1"}]},
        ],
    }, "/v1/messages", "api.anthropic.com")
    assert p.system_prompt == "Sys" and p.max_tokens == 1024 and p.temperature is None
    assert p.parallel_tool_calls is False and p.tool_result_ids == ["toolu_2", "toolu_1"]
    events = [
        ("message_start", {"type": "message_start", "message": {"id": "msg_1", "model": "claude-opus-4-1",
                                                                "usage": {"input_tokens": 25, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}),
        ("content_block_start", {"type": "content_block_start", "index": 1,
                                 "content_block": {"type": "tool_use", "id": "toolu_9", "name": "t", "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "input_json_delta", "partial_json": "{\"a\": 2}"}}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 7}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    data = b"".join(f"event: {e}\r\ndata: {json.dumps(d)}\r\n\r\n".encode() for e, d in events)
    for at in range(0, len(data) + 1, 7):
        r = _feed_split(anthropic.stream_parser(), data, at)
        assert r.complete and r.output_text == "Hello" and r.finish_reason == "length"
        assert (r.input_tokens, r.output_tokens) == (25, 7)
        assert r.tool_calls == [{"id": "toolu_9", "name": "t", "arguments": "{\"a\": 2}"}]
    cut = _feed_split(anthropic.stream_parser(), data[: data.index(b"event: message_delta")], 5)
    assert not cut.complete
    err = anthropic.parse_response(529, {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})
    assert err.error_type == "overloaded_error"


def test_responses_request_and_stream():
    p = openai_responses.parse_request({
        "model": "gpt-4.1", "instructions": "Sys", "max_output_tokens": 50, "temperature": 1,
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
                  {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                  {"type": "function_call_output", "call_id": "c1", "output": "ok"}],
    }, "/v1/responses", "api.openai.com")
    assert p.system_prompt == "Sys" and p.max_tokens == 50 and p.temperature == 1.0
    assert p.messages[1]["tool_calls"][0]["id"] == "c1" and p.tool_result_ids == ["c1"]
    final = {"id": "resp_1", "model": "gpt-4.1", "status": "incomplete",
             "incomplete_details": {"reason": "max_output_tokens"},
             "output": [{"type": "message", "content": [{"type": "output_text", "text": "Par"}]}],
             "usage": {"input_tokens": 12, "output_tokens": 50}}
    events = [{"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}},
              {"type": "response.output_text.delta", "delta": "Par"},
              {"type": "response.incomplete", "response": final}]
    data = b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)
    r = _feed_split(openai_responses.stream_parser(), data, 33)
    assert r.complete and r.finish_reason == "length" and r.output_text == "Par" and r.output_tokens == 50


def test_gemini_request_response_and_array_stream():
    p = gemini.parse_request({"contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
                              "systemInstruction": {"parts": [{"text": "S"}]},
                              "generationConfig": {"temperature": 0, "topP": 0.5, "maxOutputTokens": 9, "seed": 1}},
                             "/v1beta/models/gemini-2.5-pro:generateContent", "generativelanguage.googleapis.com")
    assert (p.model, p.temperature, p.top_p, p.max_tokens, p.seed, p.system_prompt) == (
        "gemini-2.5-pro", 0.0, 0.5, 9, 1, "S")
    chunk = lambda text, fin=None: {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]},
                                                    **({"finishReason": fin} if fin else {})}],
                                    "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 2},
                                    "modelVersion": "gemini-2.5-pro"}
    data = ("[" + ",\r\n".join(json.dumps(c, indent=2) for c in (chunk("a{"), chunk("}b", "MAX_TOKENS"))) + "]").encode()
    for at in range(0, len(data) + 1, 11):
        r = _feed_split(gemini.stream_parser(), data, at)
        assert r.output_text == "a{}b" and r.finish_reason == "length" and r.complete and r.input_tokens == 4
    sse = b"".join(b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in (chunk("x"), chunk("y", "STOP")))
    assert _feed_split(gemini.stream_parser(), sse, 5).output_text == "xy"
    err = gemini.parse_response(429, {"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}})
    assert err.error_type == "RESOURCE_EXHAUSTED"


@pytest.mark.parametrize("raw,expected", [
    ("one text", ["one text"]),
    (["a", "b c"], ["a", "b c"]),
    ([101, 102, 103], [[101, 102, 103]]),
    ([[1, 2], [3]], [[1, 2], [3]]),
    (["text", [4, 5], 7, None, [1, "x"], [], True], ["text", [4, 5]]),  # unknown shapes are left out
    ([True, False], []),
    (None, []),
    ({"text": "x"}, []),
])
def test_openai_embeddings_inputs(raw, expected):
    p = openai_embeddings.parse_request({"model": "text-embedding-3-small", "input": raw, "dimensions": 64},
                                        "/v1/embeddings", "api.openai.com")
    assert (p.provider, p.api, p.model, p.generates) == ("openai", "embeddings", "text-embedding-3-small", False)
    assert p.inputs == expected
    assert p.messages == [] and p.system_prompt is None and p.temperature is None and p.max_tokens is None


def test_openai_embeddings_azure_deployment_response_and_error():
    p = openai_embeddings.parse_request({"input": "x"}, "/openai/deployments/embed-prod/embeddings?api-version=1",
                                        "res.openai.azure.com")
    assert (p.provider, p.model) == ("openai_compatible", "embed-prod")
    r = openai_embeddings.parse_response(200, {
        "object": "list", "model": "text-embedding-3-small",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.1, -0.2]}],
        "usage": {"prompt_tokens": 7, "total_tokens": 7}})
    assert (r.input_tokens, r.output_tokens, r.usage_source, r.response_model) == (7, None, "provider",
                                                                                  "text-embedding-3-small")
    assert r.finish_reason is None and r.output_text == "" and r.tool_calls == [] and r.complete
    bare = openai_embeddings.parse_response(200, {"object": "list", "data": []})  # a server that sends no usage
    assert bare.input_tokens is None and bare.usage_source is None
    e = openai_embeddings.parse_response(400, {"error": {"message": "too long", "type": "invalid_request_error",
                                                        "param": "input", "code": "context_length_exceeded"}})
    assert (e.error_type, e.error_message, e.finish_reason) == ("context_length_exceeded", "too long", "error")
    streamed = openai_embeddings.stream_parser()
    body = json.dumps({"object": "list", "usage": {"prompt_tokens": 3, "total_tokens": 3}}).encode()
    streamed.feed(body[:9])
    streamed.feed(body[9:])
    assert streamed.result().input_tokens == 3
    cut = openai_embeddings.stream_parser()
    cut.feed(body[:9])
    assert not cut.result().complete


def test_gemini_embed_content_and_batch():
    single = gemini_embeddings.parse_request(
        {"content": {"parts": [{"text": "find "}, {"text": "me"}]}, "taskType": "RETRIEVAL_QUERY"},
        "/v1beta/models/gemini-embedding-001:embedContent", "generativelanguage.googleapis.com")
    assert (single.provider, single.api, single.model, single.generates) == (
        "gemini", "embedContent", "gemini-embedding-001", False)
    assert single.inputs == ["find me"] and single.messages == []
    batch = gemini_embeddings.parse_request(
        {"requests": [{"model": "models/text-embedding-004", "content": {"parts": [{"text": "one"}]}},
                      {"model": "models/text-embedding-004", "content": {"parts": [{"inlineData": {}}]}},
                      {"model": "models/text-embedding-004"}, "junk"]},
        "/v1beta/models/text-embedding-004:batchEmbedContents?key=K", "h")
    assert (batch.api, batch.model) == ("batchEmbedContents", "text-embedding-004")
    assert batch.inputs == ["one", "[inlineData]"]
    # No method in the path (a rewritten URL): read as embedContent, the model named by the body.
    named = gemini_embeddings.parse_request({"model": "models/m1", "content": {"parts": []}}, "/embed", "h")
    assert (named.api, named.model, named.inputs) == ("embedContent", "m1", [""])
    r = gemini_embeddings.parse_response(200, {"embeddings": [{"values": [0.1]}, {"values": [0.2]}]})
    assert r.input_tokens is None and r.usage_source is None and r.finish_reason is None  # the Gemini API sends none
    vertex = gemini_embeddings.parse_response(200, {"embeddings": [], "usageMetadata": {"promptTokenCount": 9}})
    assert (vertex.input_tokens, vertex.usage_source) == (9, "provider")
    err = gemini_embeddings.parse_response(
        429, {"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}})
    assert err.error_type == "RESOURCE_EXHAUSTED" and err.error_message == "quota"


def test_gemini_count_tokens_bare_and_wrapped():
    bare = gemini_count_tokens.parse_request({"contents": [{"role": "user", "parts": [{"text": "How big?"}]}]},
                                             "/v1beta/models/gemini-2.5-pro:countTokens", "h")
    assert (bare.provider, bare.api, bare.model, bare.generates, bare.stream) == (
        "gemini", "countTokens", "gemini-2.5-pro", False, False)
    assert bare.messages == [{"role": "user", "content": "How big?"}] and bare.inputs == []
    wrapped = gemini_count_tokens.parse_request({"generateContentRequest": {
        "model": "models/gemini-2.5-flash", "systemInstruction": {"parts": [{"text": "S"}]},
        "contents": [{"parts": [{"text": "Q"}]}], "tools": [{"functionDeclarations": [{"name": "f"}]}]}}, "/x", "h")
    assert (wrapped.model, wrapped.system_prompt, wrapped.messages[0]["content"]) == ("gemini-2.5-flash", "S", "Q")
    assert wrapped.tools == [{"functionDeclarations": [{"name": "f"}]}]
    r = gemini_count_tokens.parse_response(200, {"totalTokens": 31, "cachedContentTokenCount": 4,
                                                 "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 31}]})
    assert (r.input_tokens, r.cached_input_tokens, r.output_tokens, r.usage_source) == (31, 4, None, "provider")
    assert r.finish_reason is None
    err = gemini_count_tokens.parse_response(
        400, {"error": {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"}})
    assert err.error_type == "INVALID_ARGUMENT"


def test_anthropic_count_tokens():
    p = anthropic_count_tokens.parse_request({
        "model": "claude-sonnet-4-6", "system": "Sys", "tools": [{"name": "t", "input_schema": {}}],
        "messages": [{"role": "user", "content": "How many tokens?"}]}, "/v1/messages/count_tokens", "gw")
    assert (p.provider, p.api, p.model, p.generates, p.stream) == (
        "anthropic", "messages.count_tokens", "claude-sonnet-4-6", False, False)
    assert p.system_prompt == "Sys" and p.messages[0]["content"] == "How many tokens?" and p.tools
    r = anthropic_count_tokens.parse_response(200, {"input_tokens": 42})
    assert (r.input_tokens, r.output_tokens, r.usage_source, r.finish_reason) == (42, None, "provider", None)
    err = anthropic_count_tokens.parse_response(
        400, {"type": "error", "error": {"type": "invalid_request_error", "message": "prompt is too long: 1 > 0"}})
    assert err.error_type == "invalid_request_error" and "too long" in err.error_message
    assert anthropic_count_tokens.parse_response(200, {"input_tokens": "many"}).usage_source is None


def test_generating_apis_are_the_dialects_that_sample():
    from agentprobe.checks.base import GENERATING_APIS

    assert set(GENERATING_APIS) == {"chat.completions", "responses", "messages", "generateContent",
                                    "streamGenerateContent"}
    for dialect in (openai_embeddings, gemini_embeddings, gemini_count_tokens, anthropic_count_tokens):
        assert not dialect.GENERATES and not set(dialect.APIS) & set(GENERATING_APIS)


def test_sse_reader_line_endings_comments_and_bom():
    reader = SSEReader()
    data = "\ufeff: keep-alive\r\nevent: a\rdata: 1\r\ndata: 2\n\nid: 7\nretry: 10\ndata: x\n\n".encode()
    events = []
    for i in range(len(data)):
        events += reader.feed(data[i : i + 1])
    assert events == [("a", "1\n2"), (None, "x")]


def test_sse_reader_caps_a_runaway_line():
    reader = SSEReader(max_line=100)
    assert reader.feed(b"data: " + b"x" * 500) == []
    assert reader.errors == 1
    assert reader.feed(b"\n\ndata: ok\n\n") == [(None, "ok")]


def test_sse_reader_a_line_spanning_many_chunks_is_joined_once_and_exactly():
    reader = SSEReader(max_line=1 << 20)
    line = "data: " + "".join(f"{i:05d}" for i in range(40_000))  # 200 KB in one line
    events = []
    for start in range(0, len(line), 1000):
        events += reader.feed(line[start:start + 1000].encode())
        assert len(reader._parts) <= start // 1000 + 1  # kept as pieces, not re-joined per chunk
    events += reader.feed(b"\n\n")
    assert events == [(None, line[len("data: "):])]


def test_sse_reader_drops_the_rest_of_a_runaway_line_and_reads_on():
    reader = SSEReader(max_line=10_000)
    events = reader.feed(b"data: {\"a\": 1}\n\n")
    for _ in range(100):  # 100 KB of one line, far past the cap, in pieces
        events += reader.feed(b"y" * 1000)
        assert reader._pending <= 10_000
    events += reader.feed(b"still the same line\n\ndata: {\"b\": 2}\n\n")
    events += reader.feed(b"")
    assert events == [(None, '{"a": 1}'), (None, '{"b": 2}')] and reader.errors == 1
