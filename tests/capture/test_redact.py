from agentprobe.capture import redact


def test_headers_kept_by_allow_list():
    kept = redact.safe_headers([
        ("Authorization", "Bearer sk-abcdefghijklmnopqrstuvwxyz"),
        ("x-api-key", "sk-ant-api03-secretsecretsecret"),
        ("api-key", "azure-secret-value-123456"),
        ("X-Goog-Api-Key", "AIzaSyDUMMYDUMMYDUMMYDUMMYDUMMYDUMMY00"),
        ("Cookie", "session=abc"),
        ("X-Custom-Gateway-Token", "gw-secret-123456789"),
        ("Content-Type", "application/json"),
        ("x-ratelimit-remaining-requests", "99"),
        ("X-Stainless-Retry-Count", "1"),
    ])
    assert kept == {
        "content-type": "application/json",
        "x-ratelimit-remaining-requests": "99",
        "x-stainless-retry-count": "1",
    }


def test_query_keys_redacted():
    path = "/v1beta/models/gemini-2.5-flash:generateContent?key=AIzaSySECRETSECRETSECRET&alt=sse"
    assert "SECRET" not in redact.safe_path(path)
    assert "alt=sse" in redact.safe_path(path)
    assert redact.safe_path("/v1/chat/completions") == "/v1/chat/completions"


def test_secrets_from_headers_scrubbed_from_body():
    headers = [("Authorization", "Bearer my-gateway-token-0123456789")]
    secrets = redact.secrets_in(headers, "/x?key=query-secret-999999")
    body = {"messages": [{"role": "user", "content": "my key is my-gateway-token-0123456789 and query-secret-999999"}]}
    out = redact.scrub_json(body, secrets)
    text = str(out)
    assert "my-gateway-token-0123456789" not in text and "query-secret-999999" not in text


def test_secret_fields_and_key_shapes():
    body = {
        "api_key": "plain-secret-value",
        "nested": {"apiKey": "another-secret", "client_secret": "x-secret-y"},
        "note": "pasted sk-proj-ABCDEFGHIJKLMNOPQRSTUVWX in the prompt",
        "max_tokens": 100,
        "input_schema": {"properties": {"key": {"type": "string"}}},
    }
    out = redact.scrub_json(body)
    assert out["api_key"] == redact.REDACTED
    assert out["nested"] == {"apiKey": redact.REDACTED, "client_secret": redact.REDACTED}
    assert "sk-proj-ABCDEFGH" not in out["note"]
    assert out["max_tokens"] == 100
    assert out["input_schema"] == {"properties": {"key": {"type": "string"}}}


# -- the shapes table, shape by shape -------------------------------------------------------

import json  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
from urllib.parse import quote, urlsplit  # noqa: E402

import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from agentprobe.capture.exchange import Capture  # noqa: E402
from agentprobe.capture.rows import RowBuilder  # noqa: E402
from agentprobe.fakeprovider import dialects as fake_dialects  # noqa: E402
from agentprobe.fakeprovider.directives import parse as fake_directives  # noqa: E402
from agentprobe.fakeprovider.reply import compose  # noqa: E402
from agentprobe.providers import detect  # noqa: E402
from agentprobe.providers.common import feed_in_pieces  # noqa: E402

R = redact.REDACTED


@pytest.mark.parametrize("shape", redact.SHAPES, ids=lambda s: s.name)
def test_each_shape_matches_its_example_wherever_it_stands(shape):
    assert re.fullmatch(shape.regex, shape.example)
    assert any(n in shape.example for n in shape.needles)
    for around in ("{}", "key: {} (rotate it)", "x={}&y=1", "{}\nnext line", "`{}`"):
        text = around.format(shape.example)
        assert redact.could_hold_shape(text)
        assert redact.scrub_text(text) == around.format(R)
    # In JSON text (a raw body) the replacement keeps the JSON valid, escaped newlines and all.
    raw = json.dumps({"content": f"use {shape.example} here", "n": 1})
    assert json.loads(redact.scrub_text(raw)) == {"content": f"use {R} here", "n": 1}


@pytest.mark.parametrize("text", [
    "AKIAIOSFODNN7EXAMPLEX",  # 21 characters: no AWS key id
    "ghp_short", "gsk_short", "hf_short", "xoxb-short",
    "eyJhbGciOiJIUzI1NiJ9 is a JWT header alone",
    "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkq\n-----END PUBLIC KEY-----",
    "Bearer token", "the bearer of bad news", "ASIA-PACIFIC", "max_tokens", "eyJ",
])
def test_near_misses_are_kept(text):
    assert redact.scrub_text(text) == text


_PIECES = st.sampled_from([n for s in redact.SHAPES for n in s.needles]
                          + [s.example[: len(s.example) // 2] for s in redact.SHAPES]
                          + [s.example[len(s.example) // 2:] for s in redact.SHAPES]
                          + ["-", "_", "A", "J", "B", "b", " ", "\n", "\\n", "0123456789abcdefXYZ", "sk", "gh", "xox", "ey"])


@settings(max_examples=400, deadline=None)
@given(st.lists(_PIECES, max_size=12))
def test_the_prefilter_never_skips_text_a_shape_matches(pieces):
    text = "".join(pieces)
    if redact._SHAPES_RE.search(text):
        assert redact.could_hold_shape(text)


def test_the_prefilter_skips_text_without_needles():
    for text in ("the agent reads a file then calls a tool", json.dumps({"model": "gpt-4o-mini", "max_tokens": 5}),
                 "def f(x):\n    return x_y - 1  # a comment\n"):
        assert not redact.could_hold_shape(text)


# -- names ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [
    "api_key", "apiKey", "APIKey", "x-api-key", "OPENAI_API_KEY", "openai_api_key", "aws_secret_access_key",
    "aws_access_key_id", "secretAccessKey", "github_token", "githubToken", "access_token", "refresh_token",
    "id_token", "token", "key", "password", "passwd", "passphrase", "secret", "client_secret", "authorization",
    "Authorization", "bearer", "credentials", "private_key", "private_key_id", "cookie", "api_keys", "hf_token",
])
def test_names_that_hold_a_credential(name):
    assert redact.secret_name(name)


@pytest.mark.parametrize("name", [
    "max_tokens", "prompt_cache_key", "idempotency_key", "eos_token", "bos_token", "token_count", "tokens",
    "cache_key", "signature", "model", "content", "keys", "input_tokens", "totalTokenCount", "api_key_env",
])
def test_names_that_do_not(name):
    assert not redact.secret_name(name)


# -- JSON bodies ----------------------------------------------------------------------------

def test_body_fields_under_every_name_and_nested():
    body = {
        "model": "gpt-4o-mini", "max_tokens": 20, "prompt_cache_key": "cache-me-please",
        "openai_api_key": "plainOpenAIvalue01", "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "github_token": "plainGithubValue01", "password": "correct horse battery", "pin": 1234,
        "secret": {"value": "nestedSecretValue01", "rotate": True, "list": ["a-plain-value", 7]},
        "messages": [
            {"role": "user", "content": "my password is correct horse battery"},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
                "name": "login", "arguments": json.dumps({"user": "me", "password": "toolPassword01",
                                                          "auth": {"api_key": "toolApiKey0123"}})}}]},
        ],
        "tools": [{"type": "function", "function": {"name": "login", "parameters": {
            "type": "object", "properties": {"password": {"type": "string"}, "api_key": {"type": "string"}},
            "required": ["password"], "$defs": {"Secret": {"type": "object"}}}}}],
        "logprobs": [{"token": "Hello", "logprob": -0.1}],
    }
    raw = json.dumps(body)
    out, found = redact.scrub_json_value(json.loads(raw), raw, [])
    text = json.dumps(out)
    for value in ("plainOpenAIvalue01", "wJalrXUtnFEMI", "plainGithubValue01", "correct horse battery",
                  "nestedSecretValue01", "a-plain-value", "toolPassword01", "toolApiKey0123"):
        assert value not in text, value
    assert out["secret"] == {"value": R, "rotate": True, "list": [R, R]}
    assert json.loads(out["messages"][1]["tool_calls"][0]["function"]["arguments"]) == {
        "user": "me", "password": R, "auth": {"api_key": R}}
    assert out["messages"][0]["content"] == f"my password is {R}"  # the field's value, wherever else it shows
    assert out["tools"] == body["tools"] and out["logprobs"] == body["logprobs"]  # a schema, a logprobs token
    assert out["prompt_cache_key"] == "cache-me-please" and out["max_tokens"] == 20 and out["pin"] == 1234
    assert {"plainOpenAIvalue01", "toolPassword01", "correct horse battery"} <= set(found)
    # Without the raw text (the old entry point), the same result.
    assert redact.scrub_json(json.loads(raw)) == out


def test_a_body_with_nothing_to_scrub_is_returned_as_it_is():
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi there"}]}
    raw = json.dumps(body)
    value = json.loads(raw)
    assert redact.scrub_json_value(value, raw, ["sk-proj-notInThisBody0123456789"])[0] is value
    assert redact.scrub_body(raw) is raw


def _capture(request: bytes, response: bytes, *, path="/v1/chat/completions", headers=(), status=200,
             streamed=False, content_type="application/json"):
    t = time.time()
    return Capture(seq=1, completion_seq=1, started_at=t, ended_at=t, method="POST", scheme="https",
                   host="api.example.com", port=443, path=path,
                   request_headers=[("content-type", "application/json"), *headers], request_body=request,
                   dialect=detect("POST", "api.example.com", path, request), first_byte_at=t, status=status,
                   response_headers=[("content-type", content_type)], response_body=response,
                   streamed=streamed, stream_deferred=streamed)


def _stored(rows, which: str) -> str:
    body = next(b for b in rows.bodies if b["id"] == rows.call[which])
    return body["content"] if isinstance(body["content"], str) else body["content"].decode("latin-1")


def test_a_body_that_is_not_json_is_scrubbed_as_text():
    request = (b'{"model": "gpt-4o-mini", "api_key": "notJsonApiKey0123", "messages": '
               b'[{"role": "user", "content": "caf\xe9 sk-proj-LATIN1key0123456789abcdef"}],}')
    rows = RowBuilder("r").build(_capture(request, b'{"error": {"message": "bad json"}}', status=400))
    stored = _stored(rows, "request_body")
    assert "notJsonApiKey0123" not in stored and "LATIN1key" not in stored
    assert f'"api_key": "{R}"' in stored and rows.call["parse_error"]


def test_an_answer_repeating_a_body_secret_is_scrubbed():
    request = json.dumps({"model": "m", "password": "plainBodyPassword", "messages": [{"role": "user", "content": "x"}]})
    answer = json.dumps({"id": "c", "model": "m", "choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": "it is plainBodyPassword", "tool_calls": [{"id": "t", "type": "function",
        "function": {"name": "f", "arguments": json.dumps({"password": "toolArgPassword"})}}]}}]})
    rows = RowBuilder("r").build(_capture(request.encode(), answer.encode()))
    stored = json.dumps([rows.call, rows.bodies, rows.prompts], default=str)
    assert "plainBodyPassword" not in stored and "toolArgPassword" not in stored
    assert json.loads(_stored(rows, "response_body"))["choices"][0]["message"]["content"] == f"it is {R}"


# -- the URL --------------------------------------------------------------------------------

def test_query_values_by_name_and_by_shape_and_path_segments():
    key = "sk-proj-PATHkey0123456789abcdefXYZ"
    path = (f"/v1/keys/{key}/chat/completions?api_token=plainToken0123&x-goog-api-key=plainGoog0123"
            f"&q={quote('sk-ant-api03-QUERYshape0123456789')}&alt=sse&page=2")
    safe = redact.safe_path(path)
    for value in (key, "plainToken0123", "plainGoog0123", "QUERYshape"):
        assert value not in safe
    assert urlsplit(safe).path == f"/v1/keys/{R}/chat/completions" and "alt=sse&page=2" in safe
    secrets = redact.secrets_in([], path)
    assert {"plainToken0123", "plainGoog0123"} <= set(secrets)
    assert redact.safe_path(f"/v1/keys/{quote(key)}/x") == f"/v1/keys/{R}/x"
    assert redact.safe_path("/v1beta/models/gemini-2.5-flash:generateContent") == \
        "/v1beta/models/gemini-2.5-flash:generateContent"


def test_urls_as_printed_have_no_password():
    assert redact.safe_url("http://user:hunter2pass@proxy.example:3128/x?key=abc123456789") == \
        f"http://***@proxy.example:3128/x?key={R}"
    assert "hunter2pass" not in redact.safe_url("http://user:hunter2pass@[::1")
    assert redact.safe_url("https://api.openai.com") == "https://api.openai.com"


def test_basic_auth_passwords_are_secrets_of_the_call():
    import base64

    header = "Basic " + base64.b64encode(b"me:basicPassword0123").decode()
    assert "basicPassword0123" in redact.secrets_in([("Authorization", header)], "/")


# -- headers --------------------------------------------------------------------------------

def test_kept_headers_keep_only_values_of_their_form():
    key = "sk-proj-HEADERkey0123456789abcdef"
    kept = redact.safe_headers([
        ("X-Stainless-Lang", "python"), ("X-Stainless-Package-Version", "1.54.0"), ("X-Stainless-OS", "Linux"),
        ("X-Stainless-Arch", "x64"), ("X-Stainless-Runtime", "CPython"), ("X-Stainless-Runtime-Version", "3.12.1"),
        ("X-Stainless-Async", "async:asyncio"), ("x-stainless-read-timeout", "600.0"),
        ("x-stainless-helper", "tool_runner, stream"), ("x-stainless-helper-method", "plainPLANTEDvalue01"),
        ("X-Stainless-Custom", "plainCustomValue01"),  # not a header the SDKs send: dropped
        ("X-Stainless-OS", key), ("x-stainless-retry-count", "abcdefgh0123"),
        ("user-agent", "OpenAI/Python 1.54.0"), ("content-type", "text/event-stream; charset=utf-8"),
        ("accept", "application/json, text/plain, */*"), ("x-request-id", "req_0123456789abcdef"),
        ("anthropic-beta", "prompt-caching-2024-07-31,tools-2024-04-04"),
        ("x-ratelimit-reset-requests", "6m0.5s"), ("anthropic-ratelimit-tokens-reset", "2026-12-01T06:00:03Z"),
        ("x-ratelimit-limit-requests", "plainRateLimitSecret"),
    ])
    assert kept["x-stainless-os"] == R and kept["x-stainless-retry-count"] == R
    assert kept["x-stainless-helper"] == "tool_runner, stream" and kept["x-stainless-helper-method"] == R
    assert kept["x-ratelimit-limit-requests"] == R
    assert "x-stainless-custom" not in kept
    assert kept["x-stainless-async"] == "async:asyncio" and kept["x-stainless-package-version"] == "1.54.0"
    assert kept["user-agent"] == "OpenAI/Python 1.54.0" and kept["content-type"] == "text/event-stream; charset=utf-8"
    assert kept["accept"] == "application/json, text/plain, */*"
    assert kept["x-ratelimit-reset-requests"] == "6m0.5s"
    assert redact.header_value("user-agent", "my-agent/1.0 k=abcdefghijklmnopqrstuvwxyz012345") == R
    assert redact.header_value("server", "uvicorn") == "uvicorn"
    for agent in ("OpenAI/Python 1.54.0", "Anthropic/Python 0.40.0", "python-httpx/0.28.1", "curl/8.5.0", "node",
                  "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
                  "google-genai-sdk/1.2.0 gl-python/3.12.1"):
        assert redact.header_value("user-agent", agent) == agent
    assert redact.header_value("user-agent", "my-agent/1.0 PLANTED42xyz") == R
    # A request id is the provider's in an answer, anything at all in a request.
    assert redact.safe_headers([("x-request-id", "req_0123456789abcdef0123456789abcdef")]) == {
        "x-request-id": "req_0123456789abcdef0123456789abcdef"}
    assert redact.safe_headers([("x-request-id", "plainPLANTEDvalue01")], response=False) == {}


# -- streams --------------------------------------------------------------------------------

SPLIT_KEY = "sk-proj-SPLITacross0123456789abcdef"
AUTH_VALUE = "gatewayAuthValue0123456789"
PEM = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIArgsPEMbody0123456789abcdef\n-----END EC PRIVATE KEY-----"
ARGS = {"api_key": "argsApiKeyValue01", "password": "argsPasswordValue", "env": "prod", "pem": PEM}
STREAMS = {
    "openai.chat": ("/v1/chat/completions", {"model": "gpt-4o-mini", "stream": True}),
    "openai.responses": ("/v1/responses", {"model": "gpt-4.1", "stream": True, "input": "x"}),
    "anthropic.messages": ("/v1/messages", {"model": "claude-haiku-4-5", "stream": True, "max_tokens": 99}),
    "gemini (sse)": ("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", {}),
    "gemini (array)": ("/v1beta/models/gemini-2.5-flash:streamGenerateContent", {}),
}


def _b64(text: str) -> str:
    import base64

    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _fake_stream(path: str, body: dict, header: str) -> bytes:
    parts = urlsplit(path)
    route = fake_dialects.route(parts.path, parts.query)
    ask = route.dialect.read(body, route)
    return b"".join(route.dialect.events(compose(ask, fake_directives(header, ask.last_user_text)), route))


@pytest.mark.parametrize("dialect", STREAMS)
@pytest.mark.parametrize("what", ["text", "tool call"])
def test_a_secret_split_across_events_is_cut_out_of_the_stored_stream(dialect, what):
    path, body = STREAMS[dialect]
    body = {**body, "messages": [{"role": "user", "content": "x"}], "contents": [{"parts": [{"text": "x"}]}],
            "tools": [{"type": "function", "name": "deploy", "function": {"name": "deploy", "parameters": {}},
                       "input_schema": {}, "functionDeclarations": [{"name": "deploy"}]}]}
    if what == "text":
        header = f"reply_b64={_b64(f'keys: {SPLIT_KEY} and {AUTH_VALUE}, done')};delta_chars=4"
        planted = [SPLIT_KEY, AUTH_VALUE]
    else:
        header = f"tool_calls=1;tool_args_b64={_b64(json.dumps(ARGS))}"
        planted = [ARGS["api_key"], ARGS["password"], "ArgsPEMbody"]
    stream = _fake_stream(path, body, header)
    if dialect == "openai.chat":
        assert all(p.encode() not in stream for p in planted)  # only in pieces: the text scrub alone finds nothing
    request = json.dumps(body).encode()
    headers = [("authorization", f"Bearer {AUTH_VALUE}")]
    rows = RowBuilder("r").build(_capture(request, stream, path=path, headers=headers, streamed=True,
                                          content_type="text/event-stream"))
    stored = _stored(rows, "response_body")
    dialect_module = detect("POST", "", path, request)
    parser = dialect_module.stream_parser()
    feed_in_pieces(parser, stored.encode())
    again = parser.result()
    joined = again.output_text + json.dumps(again.tool_calls)
    for secret in planted:
        assert secret not in stored and secret not in joined, secret
    # The stored stream still reads as the stream it was, with the answer agentprobe stored.
    assert again.complete and rows.call["stream_complete"] == 1 and not rows.call.get("parse_error")
    if what == "text":
        assert again.output_text == f"keys: {R} and {R}, done"
        assert [p["text"] for p in rows.prompts if p["kind"] == "output"] == [again.output_text]
    else:
        assert json.loads(again.tool_calls[0]["arguments"]) == {"api_key": R, "password": R, "env": "prod", "pem": R}
        assert json.loads(rows.call["tool_calls"])[0]["arguments"] == again.tool_calls[0]["arguments"]
    # Events with nothing to remove keep their bytes.
    if what == "text" and "array" not in dialect:
        assert stream.split(b"\n")[0] in stored.encode()


def test_a_stream_without_secrets_is_stored_byte_for_byte():
    path, body = STREAMS["openai.chat"]
    body = {**body, "messages": [{"role": "user", "content": "hello"}]}
    stream = _fake_stream(path, body, "delta_chars=3")
    rows = RowBuilder("r").build(_capture(json.dumps(body).encode(), stream, streamed=True,
                                          content_type="text/event-stream"))
    assert _stored(rows, "response_body").encode() == stream


def test_reasoning_deltas_are_read_joined_too():
    key = "sk-proj-REASONINGkey0123456789abc"
    pieces = [key[i:i + 5] for i in range(0, len(key), 5)]
    events = [{"id": "c", "choices": [{"index": 0, "delta": {"reasoning_content": p}}]} for p in pieces]
    events.append({"id": "c", "choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]})
    stream = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    stored = redact.scrub_stream(stream)
    joined = "".join(json.loads(line[6:])["choices"][0]["delta"].get("reasoning_content", "")
                     for line in stored.split("\n\n") if line.startswith("data: {"))
    assert key not in joined and joined == R and redact.has_side_channels(stream)


# -- command lines --------------------------------------------------------------------------

def test_a_prompt_on_the_command_line_is_scrubbed():
    prompt = ('deploy with password=hunter2hunter2 and {"api_key": "plainJsonKey01"} '
              "ghp_EXAMPLEexample0123456789EXAMPLEexa and the key configKeyValue0123")
    command = redact.scrub_command(f"agentprobe trace --config c.json --prompt '{prompt}' --github-token abcdefgh1234",
                                   ["configKeyValue0123"])
    for value in ("hunter2hunter2", "plainJsonKey01", "ghp_EXAMPLE", "configKeyValue0123", "abcdefgh1234"):
        assert value not in command, value
    assert "--config c.json --prompt 'deploy with password=" in command
