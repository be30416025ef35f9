"""Any bytes in: a record or a ParseError out, never an exception that reaches the proxy."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from agentprobe.providers import DIALECTS, load_json
from agentprobe.providers.base import ParseError
from agentprobe.providers.sse import SSEReader

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=40,
)
# Bodies that look like real requests, so the fuzzer reaches past the first isinstance check.
keys = st.sampled_from(["model", "messages", "input", "contents", "system", "tools", "temperature", "max_tokens",
                        "stream", "tool_choice", "generationConfig", "instructions", "content", "role", "parts",
                        "choices", "delta", "usage", "candidates", "error", "type", "output", "stream_options",
                        "requests", "data", "embedding", "embeddings", "values", "prompt_tokens", "totalTokens",
                        "input_tokens", "usageMetadata", "generateContentRequest", "dimensions", "text"])
shaped = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=6),
    max_leaves=60,
)
FUZZ = settings(max_examples=150, deadline=None)
# Paths the parsers read a model or a method from, and ones they cannot.
paths = st.sampled_from(["/v1/embeddings", "/openai/deployments/d/embeddings?api-version=1", "/v1/messages/count_tokens",
                         "/v1beta/models/m:embedContent", "/v1beta/models/m:batchEmbedContents?key=k",
                         "/v1beta/models/m:countTokens", "/v1beta/models/m:generateContent", "/"]) | st.text(max_size=40)


@FUZZ
@given(st.binary(max_size=300))
def test_load_json_only_raises_parse_error(data):
    try:
        load_json(data)
    except ParseError:
        pass


@FUZZ
@given(json_values | shaped, paths)
def test_request_parsers_only_raise_parse_error(body, path):
    for dialect in DIALECTS:
        try:
            parsed = dialect.parse_request(body, path, "h")
        except ParseError:
            continue
        assert parsed.api in dialect.APIS and parsed.generates is dialect.GENERATES
        assert all(isinstance(i, str) or (isinstance(i, list) and all(type(t) is int for t in i))
                   for i in parsed.inputs)


@FUZZ
@given(json_values | shaped, st.integers(100, 599))
def test_response_parsers_never_raise(body, status):
    for dialect in DIALECTS:
        dialect.parse_response(status, body)


events = st.lists(st.tuples(st.sampled_from([None, "message_start", "content_block_delta", "error", "x"]),
                            json_values | shaped | st.just("[DONE]")), max_size=8)


@FUZZ
@given(events, st.lists(st.integers(0, 400), max_size=6), st.binary(max_size=80))
def test_stream_parsers_never_raise_on_any_chunking(evs, cuts, junk):
    data = b"".join(
        (f"event: {e}\n".encode() if e else b"") + b"data: " + (p.encode() if isinstance(p, str) else json.dumps(p).encode())
        + b"\n\n" for e, p in evs
    ) + junk
    bounds = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    for dialect in DIALECTS:
        parser = dialect.stream_parser()
        for a, b in zip(bounds, bounds[1:]):
            parser.feed(data[a:b])
        parser.feed(b"")
        parser.result()


@FUZZ
@given(json_values | shaped, st.lists(st.integers(0, 400), max_size=6))
def test_one_body_answers_read_the_same_streamed_or_not(body, cuts):
    """Embeddings and token counts answer one JSON body: chunked as a stream, it reads as parse_response does."""
    data = json.dumps(body).encode()
    bounds = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    for dialect in DIALECTS:
        if dialect.GENERATES:
            continue
        parser = dialect.stream_parser()
        for a, b in zip(bounds, bounds[1:]):
            parser.feed(data[a:b])
        assert parser.result() == dialect.parse_response(200, json.loads(data))


@FUZZ
@given(st.lists(st.binary(max_size=60), max_size=10))
def test_sse_reader_never_raises(chunks):
    reader = SSEReader(max_line=64)
    for chunk in chunks:
        reader.feed(chunk)
    reader.feed(b"")


def _reference_events(text: str) -> list[tuple[str | None, str]]:
    """The SSE rules written plainly: split lines on CRLF, CR or LF; a blank line ends an event."""
    import re

    lines = re.split(r"\r\n|\r|\n", text)
    lines.pop()  # after the last line end: ended by the stream, so it completes no event
    out, event, data = [], None, []
    for line in lines:
        if line == "":
            if data:
                out.append((event, "\n".join(data)))
            event, data = None, []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                data.append(value)
            elif name == "event":
                event = value
    return out


SSE_TEXT = st.lists(st.sampled_from(["data", "data:", ": ", " ", "event:", "x", "{}", "\n", "\n\n", "\r", "\r\n", "id: 1"]),
                    max_size=40).map("".join)


@FUZZ
@given(SSE_TEXT, st.lists(st.integers(0, 200), max_size=6))
def test_sse_reader_matches_the_plain_rules_under_any_chunking(text, cuts):
    data = text.encode()
    bounds = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    reader = SSEReader()
    got = []
    for a, b in zip(bounds, bounds[1:]):
        got += reader.feed(data[a:b])
    got += reader.feed(b"")
    assert got == _reference_events(text)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(st.text(max_size=5), st.one_of(st.text(max_size=20), st.integers()), max_size=4),
                min_size=1, max_size=5),
       st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=50))
def test_gemini_array_reader_splits_any_chunking_like_json(objects, cuts):
    from agentprobe.providers.gemini import _ArrayReader

    text = ("[" + ",".join(json.dumps(o) for o in objects) + "]").encode()
    reader, got, i, k = _ArrayReader(), [], 0, 0
    while i < len(text):
        n = cuts[k % len(cuts)]
        got += reader.feed(text[i:i + n])
        i, k = i + n, k + 1
    assert [json.loads(g) for g in got] == objects
