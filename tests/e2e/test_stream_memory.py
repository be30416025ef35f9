"""A kept stream body is parsed a piece at a time: no transient copy of all its events at once.

Parsed in one feed, the 2 MB kept part of a long stream became ~40 MB of decoded events for a
moment, in the proxy (when the stream outgrew what is kept) and in the writer (deferred parse).
"""

from __future__ import annotations

import json
import time
import tracemalloc

from agentprobe.addons.recorder import StreamTee
from agentprobe.capture import tokens
from agentprobe.capture.exchange import Capture
from agentprobe.capture.rows import RowBuilder
from agentprobe.providers import detect, openai_chat
from agentprobe.providers.sse import SSEReader, json_payloads

KEEP = 2 * 1024 * 1024


def _event(word: str) -> bytes:
    chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
             "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
    return f"data: {json.dumps(chunk)}\n\n".encode()


def _stream(events: int) -> bytes:
    return b"".join(_event(f"w{i % 97} ") for i in range(events)) + b"data: [DONE]\n\n"


def _peak_mb(work) -> float:
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        work()
        return (tracemalloc.get_traced_memory()[1] - base) / 1e6
    finally:
        tracemalloc.stop()


class _Flow:
    class response:
        headers: dict = {}


def test_a_stream_that_outgrows_the_kept_body_is_parsed_without_a_spike():
    body = _stream(25_000)  # ~4.5 MB: the parser starts on the 2 MB kept so far
    chunks = [body[i:i + 54_000] for i in range(0, len(body), 54_000)]
    tee = StreamTee(_Flow, openai_chat.stream_parser, KEEP)

    def feed():
        for c in chunks:
            tee(c)
        tee(b"")

    peak = _peak_mb(feed)
    result = tee.parser.result()
    assert result.complete and result.output_text == "".join(f"w{i % 97} " for i in range(25_000))
    assert peak < 12, f"{peak:.1f} MB traced at the peak; a one-piece feed of 2 MB took ~42"


def test_a_deferred_stream_is_parsed_in_the_writer_without_a_spike():
    body = _stream(11_000)  # just under the 2 MB kept: the whole stream, parsed by the writer
    req = json.dumps({"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}).encode()
    t = time.time()
    cap = Capture(seq=1, completion_seq=1, started_at=t, ended_at=t + 1, method="POST", scheme="https",
                  host="api.openai.com", port=443, path="/v1/chat/completions",
                  request_headers=[("content-type", "application/json")], request_body=req,
                  dialect=detect("POST", "api.openai.com", "/v1/chat/completions", req), first_byte_at=t,
                  status=200, response_headers=[("content-type", "text/event-stream")], response_body=body,
                  streamed=True, stream_deferred=True)
    out = {}
    tokens.encoding_for("gpt-4o-mini")  # loaded once per writer, at its start
    peak = _peak_mb(lambda: out.update(rows=RowBuilder("run-1").build(cap)))
    call = out["rows"].call
    assert call["stream_complete"] == 1 and "parse_error" not in call
    output = next(p for p in out["rows"].prompts if p["kind"] == "output")["text"]
    assert output == "".join(f"w{i % 97} " for i in range(11_000))
    assert peak < 16, f"{peak:.1f} MB traced at the peak; a one-piece feed of 2 MB took ~37"


def test_decoding_in_batches_gives_what_one_by_one_decoding_gives():
    body = _stream(1_000) + b"data: not json\n\n" + _stream(300)
    events = SSEReader().feed(body)
    got = list(json_payloads(events))
    assert len(got) == len(events)
    for (event, payload, value), (e, p) in zip(got, events):
        assert (event, payload) == (e, p)
        if p == "[DONE]" or p == "not json":
            assert not isinstance(value, dict)
        else:
            assert value == json.loads(p)
