"""Streamed text and tool arguments, kept in joined batches: same text, a fraction of the memory."""

from __future__ import annotations

import json
import tracemalloc

from hypothesis import given
from hypothesis import strategies as st

from agentprobe.providers import anthropic, openai_chat
from agentprobe.providers.common import TextParts


@given(st.lists(st.text(max_size=8), max_size=2000), st.sets(st.integers(0, 2000), max_size=5))
def test_the_whole_is_every_piece_in_order_whenever_it_is_read(pieces, read_at):
    parts = TextParts()
    for i, piece in enumerate(pieces):
        if i in read_at:
            assert str(parts) == "".join(pieces[:i])
        parts.append(piece)
    assert str(parts) == "".join(pieces)
    assert str(parts) == "".join(pieces)


def test_a_starting_text_comes_first():
    parts = TextParts("{\"a\":")
    parts.append("1}")
    assert str(parts) == "{\"a\":1}" and str(TextParts()) == ""


def _chat_event(delta: dict) -> bytes:
    return b"data: " + json.dumps({"id": "c1", "choices": [{"index": 0, "delta": delta}]}).encode() + b"\n\n"


def test_a_long_chat_stream_holds_about_its_text_not_one_object_per_delta():
    words = [f"w{i % 97} " for i in range(100_000)]
    batch = 500
    parser = openai_chat.stream_parser()
    tracemalloc.start()
    try:
        for start in range(0, len(words), batch):
            parser.feed(b"".join(_chat_event({"content": w}) for w in words[start:start + batch]))
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    text = "".join(words)
    # One string object per delta held about 6 MB here; the text itself is 0.5 MB.
    assert held < 3 * len(text), held
    assert parser.result().output_text == text


def test_tool_arguments_in_thousands_of_pieces_come_out_whole():
    pieces = [json.dumps({"path": "notes.txt", "text": "line " * 3000})[i:i + 3]
              for i in range(0, 15_100, 3)]
    events = [{"type": "message_start", "message": {"id": "m", "model": "claude"}},
              {"type": "content_block_start", "index": 0,
               "content_block": {"type": "tool_use", "id": "t1", "name": "write"}}]
    events += [{"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": p}}
               for p in pieces]
    events.append({"type": "message_stop"})
    parser = anthropic.stream_parser()
    parser.feed(b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events))
    [call] = parser.result().tool_calls
    assert call == {"id": "t1", "name": "write", "arguments": "".join(pieces)}
    assert json.loads(call["arguments"])["text"] == "line " * 3000

    chat = openai_chat.stream_parser()
    chat.feed(b"".join(_chat_event({"tool_calls": [{"index": 0, "id": "c" if i == 0 else None,
                                                    "function": {"arguments": p}}]})
                       for i, p in enumerate(pieces)))
    assert chat.result().tool_calls[0]["arguments"] == "".join(pieces)
