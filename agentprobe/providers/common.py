"""Small, defensive readers shared by the dialect parsers.

Request bodies come from arbitrary agents and gateways: a field of the wrong type
is treated as absent rather than trusted or crashed on.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from .base import ParseError


def load_json(body: bytes | str | None) -> Any:
    if body is None or body == b"" or body == "":
        raise ParseError("empty body")
    try:
        # Several times faster on the 100 KB bodies agents send. It reads integers past 64 bits
        # as floats, which no LLM API field holds.
        return orjson.loads(body)
    except (orjson.JSONDecodeError, TypeError):
        pass  # the standard library decides what orjson refuses (NaN, Infinity, lone surrogates)
    try:
        if isinstance(body, bytes):
            body = body.decode("utf-8")
        return json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ParseError(f"not JSON: {e}") from None


def as_dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else []


def num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def string(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def parts_text(content: Any) -> str:
    """Text of a content field that is a string or a list of typed parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        content = [content]
    out = []
    for part in as_list(content):
        if isinstance(part, str):
            out.append(part)
            continue
        part = as_dict(part)
        text = part.get("text")
        if isinstance(text, str):
            out.append(text)
        elif isinstance(part.get("type"), str):
            out.append(f"[{part['type']}]")
    return "".join(out)


def json_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError):
        return str(value)


def trailing_tool_results(messages: list[dict]) -> list[str]:
    """Ids of the tool results that end a normalized conversation, in the order they are sent back."""
    ids = []
    for msg in reversed(messages):
        if msg["role"] != "tool":
            break
        ids.append(msg.get("tool_call_id") or "")
    return ids[::-1]


def read_usage(resp, usage: Any, input_key: str, output_key: str, details: tuple[str, str]) -> None:
    """OpenAI-style usage: counts under input_key/output_key, cached and reasoning tokens under
    `{details[0]}.cached_tokens` and `{details[1]}.reasoning_tokens`."""
    usage = as_dict(usage)
    if not usage:
        return
    resp.input_tokens = integer(usage.get(input_key))
    resp.output_tokens = integer(usage.get(output_key))
    resp.cached_input_tokens = integer(as_dict(usage.get(details[0])).get("cached_tokens"))
    resp.reasoning_tokens = integer(as_dict(usage.get(details[1])).get("reasoning_tokens"))
    resp.usage_source = "provider"


def require_dict(body: Any) -> dict:
    if not isinstance(body, dict):
        raise ParseError("request body is not a JSON object")
    return body


class TextParts:
    """A streamed text, kept as it grows: `append` each delta, `str()` for the whole.

    A long answer arrives as hundreds of thousands of deltas of a word or two, and
    a list holding each as its own string object costs about ten times the text
    (a 50 MB stream kept 16 MB of them). Deltas are joined in batches instead, which
    also keeps tool-call arguments linear where `+=` on a dict value copies the
    whole string for every piece.
    """

    __slots__ = ("_blocks", "_pending")
    BATCH = 256

    def __init__(self, text: str = "") -> None:
        self._blocks: list[str] = [text] if text else []
        self._pending: list[str] = []

    def append(self, piece: str) -> None:
        pending = self._pending
        pending.append(piece)
        if len(pending) >= self.BATCH:
            self._blocks.append("".join(pending))
            pending.clear()

    def __str__(self) -> str:
        if self._pending:
            self._blocks.append("".join(self._pending))
            self._pending.clear()
        if len(self._blocks) > 1:
            self._blocks[:] = ["".join(self._blocks)]
        return self._blocks[0] if self._blocks else ""

    def __repr__(self) -> str:
        return f"TextParts({str(self)!r})"


FEED_PIECE = 64 * 1024


def feed_in_pieces(parser, data: bytes | bytearray) -> None:
    """Feed a whole kept body a piece at a time, as it arrived.

    In one feed, a 2 MB stream body becomes a 2 MB string, its lines and events at once: a
    transient peak of several times the body in the proxy, or in the writer, for nothing.
    """
    view = memoryview(data)
    for start in range(0, len(view), FEED_PIECE):
        parser.feed(bytes(view[start:start + FEED_PIECE]))


def finished_tool_calls(slots) -> list[dict]:
    """Streamed tool-call slots as ParsedResponse.tool_calls: arguments joined into one string."""
    return [{**slot, "arguments": str(slot["arguments"])} for slot in slots]


class WholeBody:
    """The stream parser of an API that answers one JSON body, should a server send it as a stream.

    Keeps the body (up to LIMIT) and reads it whole at the end; a body cut short, or past the
    limit, is an incomplete answer.
    """

    LIMIT = 16 * 1024 * 1024

    def __init__(self, parse_response) -> None:
        self.parse_response = parse_response
        self.data = bytearray()
        self.over = False

    def feed(self, data: bytes) -> None:
        room = self.LIMIT - len(self.data)
        if len(data) > room:
            self.over = True
        self.data += data[:max(room, 0)]

    def result(self):
        from .base import ParsedResponse

        if self.over:
            return ParsedResponse(complete=False)
        try:
            return self.parse_response(200, load_json(bytes(self.data)))
        except ParseError:
            return ParsedResponse(complete=False)
