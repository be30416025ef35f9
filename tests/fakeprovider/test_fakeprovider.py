"""The fake provider must satisfy the real SDKs, or every test built on it proves nothing."""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import socket
import ssl
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import anthropic
import httpx2
import openai
import pytest
from google import genai
from google.genai import types as genai_types

from agentprobe.fakeprovider import FakeProvider
from agentprobe.fakeprovider.directives import DirectiveError, parse
from agentprobe.fakeprovider.vectors import DEFAULT_DIMENSIONS, vector

PROMPT = "Summarise the quarterly report please"
EXPECTED = "Fake reply to: Summarise the quarterly report please word9 word10 word11 word12"
TOOLS_OPENAI = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]
TOOLS_ANTHROPIC = [{"name": "lookup", "description": "Look up", "input_schema": {"type": "object", "properties": {}}}]


@pytest.fixture
def client_ssl(tls_ca) -> ssl.SSLContext:
    context = ssl.create_default_context()
    tls_ca.configure_trust(context)
    return context


_open_clients: list = []


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    while _open_clients:
        _open_clients.pop().close()


def make_openai(provider, client_ssl, **kwargs) -> openai.OpenAI:
    # trust_env=False: an HTTPS_PROXY in the environment must not reroute these calls.
    http_client = openai.DefaultHttpxClient(verify=client_ssl, trust_env=False)
    client = openai.OpenAI(api_key="sk-fake", base_url=provider.url + "/v1", http_client=http_client, **kwargs)
    _open_clients.append(client)
    return client


def make_anthropic(provider, client_ssl, **kwargs) -> anthropic.Anthropic:
    http_client = anthropic.DefaultHttpxClient(verify=client_ssl, trust_env=False)
    client = anthropic.Anthropic(api_key="sk-ant-fake", base_url=provider.url, http_client=http_client, **kwargs)
    _open_clients.append(client)
    return client


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def post(provider, path: str, body: dict, context: ssl.SSLContext | None = None, headers: dict | None = None):
    """A raw request, for what no SDK exposes: exact bytes, framing, query strings."""
    conn = http.client.HTTPSConnection("127.0.0.1", provider.port, context=context, timeout=10) if context else \
        http.client.HTTPConnection("127.0.0.1", provider.port, timeout=10)
    try:
        conn.request("POST", path, json.dumps(body), {"content-type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


def sse_data(raw: bytes) -> list[str]:
    return [line[len("data: "):] for line in raw.decode().splitlines() if line.startswith("data: ")]


# -- OpenAI chat completions ----------------------------------------------------


def test_chat_non_stream(fake_provider_tls, client_ssl):
    client = make_openai(fake_provider_tls, client_ssl)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=user(PROMPT))
    completion = raw.parse()
    assert completion.choices[0].message.content == EXPECTED
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "gpt-4o-mini"
    assert completion.id.startswith("chatcmpl-")
    # 37 characters at ~4 a token, + 3 for the one message
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (13, 12)
    assert completion.usage.prompt_tokens_details.cached_tokens == 0
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.headers["x-ratelimit-remaining-requests"] == "9999"
    assert fake_provider_tls.count("/v1/chat/completions") == 1


@pytest.mark.parametrize("include_usage", [False, True])
def test_chat_stream_usage_only_when_asked(fake_provider_tls, client_ssl, include_usage):
    client = make_openai(fake_provider_tls, client_ssl)
    extra = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = list(client.chat.completions.create(model="gpt-4o", messages=user(PROMPT), stream=True, **extra))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == EXPECTED
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    if include_usage:
        assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12
        assert all(c.usage is None for c in chunks[:-1])
    else:
        assert all(c.usage is None and c.choices for c in chunks)
    assert sse_data(post(fake_provider_tls, "/v1/chat/completions",
                         {"model": "m", "stream": True, "messages": user("x")}, client_ssl)[1])[-1] == "[DONE]"


def test_chat_stream_tool_calls(fake_provider_tls, client_ssl):
    client = make_openai(fake_provider_tls, client_ssl)
    stream = client.chat.completions.create(
        model="gpt-4o", messages=user("[fake tool_calls=2] find it"), tools=TOOLS_OPENAI, stream=True
    )
    calls: dict[int, dict] = {}
    finish = None
    for chunk in stream:
        for delta in chunk.choices[0].delta.tool_calls or []:
            entry = calls.setdefault(delta.index, {"id": None, "name": None, "arguments": ""})
            entry["id"] = delta.id or entry["id"]
            entry["name"] = (delta.function.name if delta.function else None) or entry["name"]
            entry["arguments"] += (delta.function.arguments or "") if delta.function else ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert [(c["id"], c["name"], json.loads(c["arguments"])) for c in calls.values()] == [
        ("call_1", "lookup", {"i": 1}),
        ("call_2", "lookup", {"i": 2}),
    ]


TOOLS_TWO = [{"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}
             for name in ("lookup", "fetch")]


def b64(value) -> str:
    import base64

    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def test_named_tools_with_scripted_arguments(fake_provider_tls, client_ssl):
    """tool_names picks offered tools by name (tool_calls defaults to their number); tool_args_b64 scripts
    each call's arguments, streamed or not."""
    client = make_openai(fake_provider_tls, client_ssl)
    args = b64([{"key": "alpha"}, {"key": "beta", "n": [1, 2]}])
    text = f"[fake tool_names=fetch,lookup tool_args_b64={args}] go"
    completion = client.chat.completions.create(model="gpt-4o", messages=user(text), tools=TOOLS_TWO)
    assert [(c.id, c.function.name, json.loads(c.function.arguments))
            for c in completion.choices[0].message.tool_calls] == [
        ("call_1", "fetch", {"key": "alpha"}), ("call_2", "lookup", {"key": "beta", "n": [1, 2]})]
    stream = client.chat.completions.create(model="gpt-4o", messages=user(text), tools=TOOLS_TWO, stream=True)
    pieces: dict[int, str] = {}
    for chunk in stream:
        for delta in chunk.choices[0].delta.tool_calls or []:
            pieces[delta.index] = pieces.get(delta.index, "") + ((delta.function.arguments or "") if delta.function else "")
    assert [json.loads(v) for _, v in sorted(pieces.items())] == [{"key": "alpha"}, {"key": "beta", "n": [1, 2]}]
    # One object is every call's; more calls than names cycle through the names.
    one = client.chat.completions.create(model="gpt-4o", tools=TOOLS_TWO, messages=user(
        f"[fake tool_calls=3 tool_names=lookup,fetch tool_args_b64={b64({'q': 1})}] go"))
    assert [(c.function.name, json.loads(c.function.arguments)) for c in one.choices[0].message.tool_calls] == [
        ("lookup", {"q": 1}), ("fetch", {"q": 1}), ("lookup", {"q": 1})]


def test_named_tools_in_anthropic_messages(fake_provider_tls, client_ssl):
    client = make_anthropic(fake_provider_tls, client_ssl)
    tools = TOOLS_ANTHROPIC + [{"name": "fetch", "input_schema": {"type": "object", "properties": {}}}]
    final = client.messages.create(model="claude-test-1", max_tokens=100, tools=tools, messages=user(
        f"[fake tool_names=fetch tool_args_b64={b64({'url': 'x'})}] go"))
    assert [(b.name, b.input) for b in final.content] == [("fetch", {"url": "x"})]


def test_named_tool_not_offered_is_a_400(fake_provider_tls, client_ssl):
    client = make_openai(fake_provider_tls, client_ssl, max_retries=0)
    with pytest.raises(openai.BadRequestError, match="nope"):
        client.chat.completions.create(model="gpt-4o", tools=TOOLS_TWO, messages=user("[fake tool_names=nope] go"))
    with pytest.raises(openai.BadRequestError, match="tool_args_b64"):
        client.chat.completions.create(model="gpt-4o", tools=TOOLS_TWO,
                                       messages=user(f"[fake tool_names=fetch tool_args_b64={b64([1])}] go"))


def test_tool_results_end_the_tool_loop(fake_provider_tls, client_ssl):
    client = make_openai(fake_provider_tls, client_ssl)
    messages = user("[fake tool_calls=1] find it") + [
        {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
                                              "function": {"name": "lookup", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "found"},
    ]
    completion = client.chat.completions.create(model="gpt-4o", messages=messages, tools=TOOLS_OPENAI)
    assert completion.choices[0].finish_reason == "stop"
    assert completion.choices[0].message.content.startswith("Fake reply to: find it")


def test_max_tokens_truncates(fake_provider_tls, client_ssl):
    chat = make_openai(fake_provider_tls, client_ssl).chat.completions.create(
        model="gpt-4o", messages=user(PROMPT), max_completion_tokens=4
    )
    assert chat.choices[0].message.content == "Fake reply to: Summarise"
    assert chat.choices[0].finish_reason == "length" and chat.usage.completion_tokens == 4
    message = make_anthropic(fake_provider_tls, client_ssl).messages.create(
        model="claude-test-1", max_tokens=3, messages=user(PROMPT)
    )
    assert message.stop_reason == "max_tokens" and message.content[0].text == "Fake reply to:"
    response = make_openai(fake_provider_tls, client_ssl).responses.create(
        model="gpt-4.1", input=PROMPT, max_output_tokens=5
    )
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "Fake reply to: Summarise the"


# -- OpenAI Responses -------------------------------------------------------------


def test_responses_stream(fake_provider_tls, client_ssl):
    client = make_openai(fake_provider_tls, client_ssl)
    events = list(client.responses.create(model="gpt-4.1", input=PROMPT, instructions="Be brief", stream=True))
    types = [e.type for e in events]
    assert types[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert types[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == EXPECTED
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1].response
    assert final.output_text == EXPECTED
    # "Be brief" and the prompt, 45 characters at ~4 a token, + 3 per message for instructions and input
    assert (final.usage.input_tokens, final.usage.output_tokens) == (18, 12)


def test_responses_stream_helper_with_function_calls(fake_provider_tls, client_ssl):
    client = make_openai(fake_provider_tls, client_ssl)
    tools = [{"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}]
    with client.responses.stream(model="gpt-4.1", input="[fake tool_calls=2] go", tools=tools) as stream:
        final = stream.get_final_response()
    assert [(o.type, o.call_id, o.name, o.arguments) for o in final.output] == [
        ("function_call", "call_1", "lookup", '{"i": 1}'),
        ("function_call", "call_2", "lookup", '{"i": 2}'),
    ]


# -- Anthropic ------------------------------------------------------------------------


def test_anthropic_stream_tool_calls(fake_provider_tls, client_ssl):
    client = make_anthropic(fake_provider_tls, client_ssl)
    with client.messages.stream(
        model="claude-test-1", max_tokens=100, tools=TOOLS_ANTHROPIC,
        messages=user("[fake tool_calls=2] look it up"),
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert final.stop_reason == "tool_use"
    assert [(b.type, b.id, b.name, b.input) for b in final.content] == [
        ("tool_use", "toolu_1", "lookup", {"i": 1}),
        ("tool_use", "toolu_2", "lookup", {"i": 2}),
    ]
    assert final.usage.output_tokens == 10


def test_anthropic_text_stream_and_headers(fake_provider_tls, client_ssl):
    client = make_anthropic(fake_provider_tls, client_ssl)
    with client.messages.with_streaming_response.create(
        model="claude-test-1", max_tokens=100, system="Be brief", messages=user(PROMPT), stream=True
    ) as raw:
        assert raw.headers["request-id"].startswith("req_")
        body = raw.read()
    names = [line.split(": ", 1)[1] for line in body.decode().splitlines() if line.startswith("event: ")]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    start = json.loads(sse_data(body)[0])
    assert start["message"]["usage"]["input_tokens"] == 18  # system and prompt: 45 characters at ~4 a token, + 3 per message


# -- failures --------------------------------------------------------------------------


def test_429_then_success_via_sdk_retry(fake_provider_tls, client_ssl):
    client = make_openai(fake_provider_tls, client_ssl)
    started = time.monotonic()
    completion = client.chat.completions.create(
        model="gpt-4o", messages=user(PROMPT),
        extra_headers={"x-fake": "status=429; retry_after=0.1; fail_times=1"},
    )
    assert completion.choices[0].message.content == EXPECTED
    assert fake_provider_tls.count() == 2
    assert [r["headers"]["x-stainless-retry-count"] for r in fake_provider_tls.requests] == ["0", "1"]
    assert time.monotonic() - started < 2  # the SDK honoured retry-after instead of backing off


def test_429_from_prompt_directive_anthropic(fake_provider_tls, client_ssl):
    client = make_anthropic(fake_provider_tls, client_ssl)
    message = client.messages.create(
        model="claude-test-1", max_tokens=50, messages=user("[fake status=429 retry_after=0.1 fail_times=1] hi")
    )
    assert message.content[0].text.startswith("Fake reply to: hi")
    assert fake_provider_tls.count("/v1/messages") == 2


def test_500_without_retries_gives_up(fake_provider_tls, client_ssl):
    client = make_openai(fake_provider_tls, client_ssl, max_retries=0)
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=user("[fake status=500] hi"))
    assert caught.value.body["type"] == "server_error"
    assert fake_provider_tls.count() == 1


def test_error_bodies_are_provider_shaped(fake_provider_tls, client_ssl):
    response, body = post(fake_provider_tls, "/v1/chat/completions", {"model": "m", "messages": user("hi")},
                          client_ssl, {"x-fake": "status=400; code=context_length_exceeded"})
    error = json.loads(body)["error"]
    assert response.status == 400 and error["code"] == "context_length_exceeded" and error["param"] == "messages"
    response, body = post(fake_provider_tls, "/anthropic/v1/messages", {"model": "m", "messages": user("hi")},
                          client_ssl, {"x-fake": "status=429; retry_after=3"})
    assert json.loads(body)["error"]["type"] == "rate_limit_error" and response.getheader("retry-after") == "3"
    response, body = post(fake_provider_tls, "/v1/messages", {"model": "m", "messages": user("[fake status=529] hi")},
                          client_ssl)
    assert response.status == 529 and json.loads(body)["error"]["type"] == "overloaded_error"
    response, body = post(fake_provider_tls, "/v1beta/models/gemini-2.5-flash:generateContent",
                          {"contents": [{"parts": [{"text": "[fake status=429] hi"}]}]}, client_ssl)
    assert json.loads(body) == {"error": {"code": 429, "message": json.loads(body)["error"]["message"],
                                          "status": "RESOURCE_EXHAUSTED"}}
    response, body = post(fake_provider_tls, "/v1/chat/completions", {"model": "m", "messages": user("hi")},
                          client_ssl, {"x-fake": "error_in_200=1; status=429"})
    assert response.status == 200 and json.loads(body)["error"]["code"] == "rate_limit_exceeded"


def test_unknown_directive_and_path(fake_provider_tls, client_ssl):
    response, body = post(fake_provider_tls, "/v1/chat/completions", {"model": "m", "messages": user("[fake stauts=1] x")},
                          client_ssl)
    assert response.status == 400 and "stauts" in json.loads(body)["error"]["message"]
    response, body = post(fake_provider_tls, "/v1/images/generations", {"prompt": "x"}, client_ssl)
    assert response.status == 404 and "error" in json.loads(body)


def test_cut_stream_raises_in_sdk(fake_provider_tls, client_ssl):
    client = make_openai(fake_provider_tls, client_ssl)
    stream = client.chat.completions.create(model="gpt-4o", messages=user("[fake cut_after=3] hi"), stream=True)
    received = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in stream:
            received.append(chunk)
    assert len(received) == 3


def test_cut_non_stream_body(fake_provider_tls, client_ssl):
    conn = http.client.HTTPSConnection("127.0.0.1", fake_provider_tls.port, context=client_ssl, timeout=5)
    conn.request("POST", "/v1/chat/completions", json.dumps({"model": "m", "messages": user("[fake cut_after=1] hi")}))
    with pytest.raises(http.client.IncompleteRead):
        conn.getresponse().read()
    conn.close()
    with pytest.raises(openai.APIConnectionError):
        make_openai(fake_provider_tls, client_ssl, max_retries=0).chat.completions.create(
            model="gpt-4o", messages=user("[fake cut_after=1] hi"))
    # With fail_times the SDK's retry of the truncated read gets a whole body.
    fake_provider_tls.clear()
    completion = make_openai(fake_provider_tls, client_ssl, max_retries=1).chat.completions.create(
        model="gpt-4o", messages=user("[fake cut_after=1 fail_times=1] hi"))
    assert completion.choices[0].message.content.startswith("Fake reply to: hi")
    assert fake_provider_tls.count() == 2


def test_error_inside_stream(fake_provider_tls, client_ssl):
    client = make_anthropic(fake_provider_tls, client_ssl)
    with pytest.raises(anthropic.APIStatusError) as caught:
        with client.messages.stream(model="claude", max_tokens=10,
                                    messages=user("[fake error_in_200=1 status=529] hi")) as stream:
            list(stream)
    assert "overloaded" in str(caught.value).lower()


def test_error_inside_chat_stream(fake_provider_tls, client_ssl):
    stream = make_openai(fake_provider_tls, client_ssl).chat.completions.create(
        model="gpt-4o", messages=user("[fake error_in_200=1 status=429] hi"), stream=True)
    with pytest.raises(openai.APIError, match="Rate limit"):
        list(stream)


def test_prose_in_brackets_is_not_a_directive(fake_provider):
    response, body = post(fake_provider, "/v1/chat/completions",
                          {"model": "m", "messages": user("about [fake news] and [fake words=5; no_usage=1]")})
    assert json.loads(body)["choices"][0]["message"]["content"] == "Fake reply to: about [fake"


# -- encodings ---------------------------------------------------------------------------


def test_gzip_response_decoded_by_sdk(fake_provider_tls, client_ssl):
    client = make_openai(fake_provider_tls, client_ssl)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=user(PROMPT), extra_headers={"x-fake": "encoding=gzip"}
    )
    assert raw.headers["content-encoding"] == "gzip"
    assert raw.parse().choices[0].message.content == EXPECTED


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate", "zstd"])
def test_encoded_streams_arrive_event_by_event(fake_provider_tls, client_ssl, encoding):
    body = {"model": "m", "stream": True, "messages": user(f"[fake encoding={encoding} chunk_delay=0.03] hi")}
    arrivals = []
    with httpx2.Client(verify=client_ssl, trust_env=False) as client:
        with client.stream("POST", fake_provider_tls.url + "/v1/chat/completions", json=body) as response:
            assert response.headers["content-encoding"] == encoding
            for line in response.iter_lines():
                if line.startswith("data: "):
                    arrivals.append((time.monotonic(), line[6:]))
    assert arrivals[-1][1] == "[DONE]"
    text = "".join(json.loads(d)["choices"][0]["delta"].get("content") or "" for _, d in arrivals[:-1]
                   if json.loads(d)["choices"])
    assert text == "Fake reply to: hi word5 word6 word7 word8 word9 word10 word11 word12"
    # Buffered compression would deliver everything at once at the end.
    assert arrivals[-1][0] - arrivals[0][0] > 0.2


def test_non_stream_encodings_are_real(fake_provider, client_ssl):
    response, body = post(fake_provider, "/v1/chat/completions", {"model": "m", "messages": user("hi")},
                          headers={"x-fake": "encoding=gzip"})
    assert json.loads(gzip.decompress(body))["object"] == "chat.completion"


# -- vary, sizes, directives --------------------------------------------------------------


def test_vary_only_above_temperature_zero(fake_provider_tls, client_ssl):
    fake_provider_tls.vary = True
    client = make_openai(fake_provider_tls, client_ssl)

    def ask(temperature):
        return client.chat.completions.create(model="gpt-4o", messages=user("tell me"),
                                              temperature=temperature).choices[0].message.content

    assert ask(0) == ask(0) == "Fake reply to: tell me word6 word7 word8 word9 word10 word11 word12"
    hot = {ask(1) for _ in range(3)}
    assert len(hot) == 3 and all(text.startswith("Fake reply to: tell me ") for text in hot)
    assert all(len(text.split()) == 12 for text in hot)


def test_reply_words_no_usage_and_body_kb(fake_provider, client_ssl):
    response, body = post(fake_provider, "/v1/chat/completions",
                          {"model": "m", "messages": user("[fake reply=Hello_there words=3] x")})
    assert json.loads(body)["choices"][0]["message"]["content"] == "Hello there"
    response, body = post(fake_provider, "/v1/chat/completions",
                          {"model": "m", "messages": user("[fake words=3 no_usage=1] x")})
    assert json.loads(body)["choices"][0]["message"]["content"] == "Fake reply to:"
    assert "usage" not in json.loads(body)
    for stream in (False, True):
        response, body = post(fake_provider, "/v1/messages",
                              {"model": "m", "stream": stream, "messages": user("[fake body_kb=64] x")})
        assert 60_000 < len(body) < 70_000, len(body)


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses", "/v1/messages",
                                  "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"])
def test_delta_chars_tool_args_and_error_message(fake_provider, path):
    """What the secrets test needs: a word cut across events, given tool arguments, a given error message."""
    body = {"model": "m", "stream": True, "max_tokens": 50, "messages": user("x"), "input": "x",
            "contents": [{"parts": [{"text": "x"}]}]}
    _response, raw = post(fake_provider, path, body, headers={"x-fake": f"reply_b64={_b64('say abcdefghij')};delta_chars=4"})
    events = [json.loads(d) for d in sse_data(raw) if d != "[DONE]"]
    pieces = [e["choices"][0]["delta"].get("content") for e in events if e.get("choices")] if "chat" in path else \
        [e["delta"] for e in events if e.get("type") == "response.output_text.delta"] if "responses" in path else \
        [e["delta"]["text"] for e in events if e.get("type") == "content_block_delta"] if "messages" in path else \
        [e["candidates"][0]["content"]["parts"][0]["text"] for e in events]
    assert [p for p in pieces if p] == ["say ", "abcd", "efgh", "ij"]
    tools = {"tools": [{"type": "function", "function": {"name": "t", "parameters": {}}, "name": "t", "input_schema": {},
                        "functionDeclarations": [{"name": "t"}]}]}
    args = {"password": "hunter2", "n": 1}
    _response, raw = post(fake_provider, path, {**body, **tools, "stream": False},
                          headers={"x-fake": f"tool_calls=1;tool_args_b64={_b64(json.dumps(args))}"})
    assert '"password' in raw.decode() and "hunter2" in raw.decode()
    response, raw = post(fake_provider, path, {**body, "stream": False},
                         headers={"x-fake": f"status=401;message_b64={_b64('bad key: abc')}"})
    assert response.status == 401 and "bad key: abc" in raw.decode()
    with pytest.raises(DirectiveError):
        parse(f"tool_args_b64={_b64('[1]')}", "")
    with pytest.raises(DirectiveError):
        parse("delta_chars=0", "")


def test_delay(fake_provider):
    started = time.monotonic()
    post(fake_provider, "/v1/responses", {"model": "m", "input": "hi"}, headers={"x-fake": "delay=0.2"})
    assert time.monotonic() - started >= 0.2


# -- Gemini ---------------------------------------------------------------------------------


GEMINI_BODY = {
    "systemInstruction": {"parts": [{"text": "Be brief"}]},
    "contents": [{"role": "user", "parts": [{"text": PROMPT}]}],
    "generationConfig": {"temperature": 0},
}


def test_gemini_stream_json_array(fake_provider_tls, client_ssl):
    response, body = post(fake_provider_tls, "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
                          GEMINI_BODY, client_ssl)
    assert response.status == 200 and response.getheader("content-type").startswith("application/json")
    chunks = json.loads(body)
    assert isinstance(chunks, list) and len(chunks) == 12
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == EXPECTED
    assert [c["candidates"][0].get("finishReason") for c in chunks][-2:] == [None, "STOP"]
    assert chunks[-1]["usageMetadata"]["candidatesTokenCount"] == 12
    assert chunks[-1]["modelVersion"] == "gemini-2.5-flash"


def test_gemini_stream_sse_and_max_tokens(fake_provider_tls, client_ssl):
    body = {**GEMINI_BODY, "generationConfig": {"maxOutputTokens": 2}}
    response, raw = post(fake_provider_tls, "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse",
                         body, client_ssl)
    assert response.getheader("content-type") == "text/event-stream"
    chunks = [json.loads(data) for data in sse_data(raw)]
    assert [c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks] == ["Fake", " reply"]
    assert chunks[-1]["candidates"][0]["finishReason"] == "MAX_TOKENS"


def test_gemini_function_calls(fake_provider, client_ssl):
    body = {"contents": [{"parts": [{"text": "[fake tool_calls=1] go"}]}],
            "tools": [{"functionDeclarations": [{"name": "lookup"}]}]}
    response, raw = post(fake_provider, "/v1beta/models/gemini-2.5-flash:generateContent", body)
    parts = json.loads(raw)["candidates"][0]["content"]["parts"]
    assert parts == [{"functionCall": {"name": "lookup", "args": {"i": 1}}}]


# -- embeddings and token counting ----------------------------------------------------------


def make_genai(provider, client_ssl) -> genai.Client:
    client_args = {"verify": client_ssl, "trust_env": False}
    return genai.Client(api_key="AIza-fake", http_options=genai_types.HttpOptions(base_url=provider.url,
                                                                                  client_args=client_args))


def test_openai_embeddings_string_input_base64_and_float(fake_provider_tls, client_ssl):
    client = make_openai(fake_provider_tls, client_ssl)
    default = client.embeddings.create(model="text-embedding-3-small", input=PROMPT)  # the SDK asks for base64
    floats = client.embeddings.create(model="text-embedding-3-small", input=PROMPT, encoding_format="float")
    assert [json.loads(r["body"])["encoding_format"] for r in fake_provider_tls.requests] == ["base64", "float"]
    [one] = default.data
    assert (one.object, one.index, len(one.embedding)) == ("embedding", 0, DEFAULT_DIMENSIONS)
    assert one.embedding == floats.data[0].embedding == vector("text-embedding-3-small", PROMPT)
    assert sum(v * v for v in one.embedding) == pytest.approx(1.0, rel=1e-5)
    assert default.model == "text-embedding-3-small" and default.object == "list"
    # 37 characters at ~4 a token; embeddings add no per-message framing
    assert (default.usage.prompt_tokens, default.usage.total_tokens) == (10, 10)
    other = client.embeddings.create(model="text-embedding-3-large", input=PROMPT)
    assert other.data[0].embedding != one.embedding  # the model is part of what decides the vector


def test_openai_embeddings_lists_token_arrays_and_dimensions(fake_provider_tls, client_ssl):
    client = make_openai(fake_provider_tls, client_ssl)
    batch = client.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta gamma"], dimensions=3)
    assert [(d.index, len(d.embedding)) for d in batch.data] == [(0, 3), (1, 3)]
    assert batch.data[1].embedding == vector("text-embedding-3-small", "beta gamma", 3)
    assert batch.usage.prompt_tokens == 2 + 3
    longer = vector("text-embedding-3-small", "beta gamma", 16)
    norm = sum(v * v for v in longer[:3]) ** 0.5
    assert batch.data[1].embedding == pytest.approx([v / norm for v in longer[:3]], rel=1e-5)  # truncated, renormalised
    tokens = client.embeddings.create(model="text-embedding-3-small", input=[[101, 102, 103], [7]])
    assert tokens.usage.prompt_tokens == 4 and len(tokens.data) == 2
    single = client.embeddings.create(model="text-embedding-3-small", input=[5, 6])
    assert len(single.data) == 1 and single.usage.prompt_tokens == 2


def test_openai_embeddings_reject_what_openai_rejects(fake_provider, client_ssl):
    for body in ({"model": "m", "input": ""}, {"model": "m", "input": []}, {"model": "m", "input": [1, "x"]},
                 {"model": "m", "input": "x", "dimensions": 0}, {"model": "m", "input": "x", "encoding_format": "hex"}):
        response, raw = post(fake_provider, "/v1/embeddings", body)
        assert response.status == 400, body
        assert json.loads(raw)["error"]["type"] == "invalid_request_error"


def test_embeddings_directives_retry_and_no_usage(fake_provider_tls, client_ssl):
    client = make_openai(fake_provider_tls, client_ssl)
    result = client.embeddings.create(model="text-embedding-3-small",
                                      input="[fake status=429 retry_after=0.1 fail_times=1] q")
    assert len(result.data) == 1 and fake_provider_tls.count("/v1/embeddings") == 2
    assert [(r["headers"]["x-stainless-retry-count"], r["status"]) for r in fake_provider_tls.requests] == [
        ("0", 429), ("1", 200)]
    response, raw = post(fake_provider_tls, "/openai/v1/embeddings", {"model": "m", "input": ["a", "b"]}, client_ssl,
                         {"x-fake": "no_usage=1"})
    assert response.status == 200 and "usage" not in json.loads(raw)
    response, raw = post(fake_provider_tls, "/v1/embeddings", {"model": "m", "input": "x"}, client_ssl,
                         {"x-fake": "status=400; code=context_length_exceeded"})
    error = json.loads(raw)["error"]
    assert error["param"] == "input" and "maximum context length is 8192" in error["message"]
    started = time.monotonic()
    post(fake_provider_tls, "/v1/embeddings", {"model": "m", "input": "x"}, client_ssl, {"x-fake": "delay=0.2"})
    assert time.monotonic() - started >= 0.2


def test_gemini_embed_content_batch_and_single(fake_provider_tls, client_ssl):
    client = make_genai(fake_provider_tls, client_ssl)
    result = client.models.embed_content(model="text-embedding-004", contents=["first text", "second text"],
                                         config={"output_dimensionality": 5})
    [request] = fake_provider_tls.requests
    assert request["path"].endswith("/models/text-embedding-004:batchEmbedContents")
    assert [len(e.values) for e in result.embeddings] == [5, 5]
    assert result.embeddings[1].values == vector("text-embedding-004", ["second text"], 5)
    assert result.usage_metadata is None  # the Gemini API reports no usage for embeddings
    response, raw = post(fake_provider_tls, "/v1beta/models/gemini-embedding-001:embedContent",
                         {"content": {"parts": [{"text": "solo"}]}, "taskType": "RETRIEVAL_QUERY"}, client_ssl)
    assert json.loads(raw) == {"embedding": {"values": vector("gemini-embedding-001", ["solo"])}}
    response, raw = post(fake_provider_tls, "/v1beta/models/gemini-embedding-001:batchEmbedContents",
                         {"requests": []}, client_ssl)
    assert response.status == 400 and json.loads(raw)["error"]["status"] == "INVALID_ARGUMENT"
    response, raw = post(fake_provider_tls, "/v1beta/models/gemini-embedding-001:embedContent",
                         {"content": {"parts": [{"text": "[fake status=429] x"}]}}, client_ssl)
    assert response.status == 429 and json.loads(raw)["error"]["status"] == "RESOURCE_EXHAUSTED"


def test_gemini_count_tokens(fake_provider_tls, client_ssl):
    client = make_genai(fake_provider_tls, client_ssl)
    counted = client.models.count_tokens(model="gemini-2.5-flash", contents=PROMPT)
    assert counted.total_tokens == 13  # 37 characters at ~4 a token, + 3 for the one message
    assert fake_provider_tls.requests[0]["path"].endswith("/models/gemini-2.5-flash:countTokens")
    generated = client.models.generate_content(model="gemini-2.5-flash", contents=PROMPT)
    assert generated.usage_metadata.prompt_token_count == counted.total_tokens  # the same count both ways
    wrapped = {"generateContentRequest": {"model": "models/gemini-2.5-flash",
                                          "contents": [{"role": "user", "parts": [{"text": PROMPT}]}]}}
    response, raw = post(fake_provider_tls, "/v1beta/models/gemini-2.5-flash:countTokens", wrapped, client_ssl)
    assert json.loads(raw) == {"totalTokens": 13, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 13}]}


def test_anthropic_count_tokens_matches_the_messages_usage(fake_provider_tls, client_ssl):
    client = make_anthropic(fake_provider_tls, client_ssl)
    request = {"model": "claude-sonnet-4-6", "system": "Be brief", "tools": TOOLS_ANTHROPIC, "messages": user(PROMPT)}
    counted = client.messages.count_tokens(**request)
    created = client.messages.create(max_tokens=50, **request)
    assert counted.input_tokens == created.usage.input_tokens > 0
    assert fake_provider_tls.requests[0]["path"] == "/v1/messages/count_tokens"
    with pytest.raises(anthropic.RateLimitError):
        make_anthropic(fake_provider_tls, client_ssl, max_retries=0).messages.count_tokens(
            model="claude-sonnet-4-6", messages=user("[fake status=429] hi"))


# -- the server itself ------------------------------------------------------------------------


def test_concurrent_keep_alive_clients(fake_provider):
    def worker(n):
        with httpx2.Client(trust_env=False) as client:
            for _ in range(4):
                response = client.post(fake_provider.url + "/v1/chat/completions",
                                       json={"model": "m", "messages": user(f"n{n}")})
                assert response.json()["choices"][0]["message"]["content"].startswith(f"Fake reply to: n{n}")

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(worker, range(48)))
    assert fake_provider.count() == 192


def test_health_and_stop_closes_idle_connections():
    provider = FakeProvider().start()
    conn = http.client.HTTPConnection("127.0.0.1", provider.port, timeout=5)
    conn.request("GET", "/health")
    response = conn.getresponse()
    # The connection stays open: a keep-alive connection parked on the server.
    assert (response.status, response.read()) == (200, b"ok")
    conn.request("GET", "/nope")
    assert conn.getresponse().status == 404
    done = threading.Event()
    threading.Thread(target=lambda: (provider.stop(), done.set()), daemon=True).start()
    assert done.wait(3)
    conn.close()


def test_env_ca_bundle_with_default_sdk_client(fake_provider_tls, tls_ca_bundle, monkeypatch):
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("SSL_CERT_FILE", tls_ca_bundle)
    client = openai.OpenAI(api_key="sk-fake", base_url=fake_provider_tls.url + "/v1")
    _open_clients.append(client)
    assert client.chat.completions.create(model="m", messages=user(PROMPT)).choices[0].message.content == EXPECTED


def raw_exchange(provider, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", provider.port), timeout=5) as sock:
        sock.sendall(request)
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


def test_chunked_request_body_and_http10_stream(fake_provider):
    body = json.dumps({"model": "m", "messages": user("[fake words=4] chunked")}).encode()
    raw = raw_exchange(fake_provider, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    assert b"Fake reply to: chunked" in raw and raw.startswith(b"HTTP/1.1 200")
    body = json.dumps({"model": "m", "stream": True, "max_tokens": 10, "messages": user("hi")}).encode()
    raw = raw_exchange(fake_provider, b"POST /v1/messages HTTP/1.0\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    head, _, stream = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower()
    assert stream.endswith(b'data: {"type":"message_stop"}\n\n')


def test_module_entry_point_prints_its_address():
    process = subprocess.Popen([sys.executable, "-m", "agentprobe.fakeprovider", "--port", "0"],
                               stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:")
        conn = http.client.HTTPConnection("127.0.0.1", int(line.rsplit(":", 1)[1]), timeout=5)
        conn.request("GET", "/health")
        assert conn.getresponse().read() == b"ok"
        conn.close()
    finally:
        process.terminate()
        process.wait(5)
        process.stdout.close()
