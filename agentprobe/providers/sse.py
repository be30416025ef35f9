"""An incremental Server-Sent-Events reader that tolerates any chunking and never raises."""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator

import orjson

MAX_LINE = 16 * 1024 * 1024


class SSEReader:
    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        # The unfinished last line, as the pieces it arrived in: joined only once its end arrives,
        # so a line that spans thousands of chunks costs one copy, not one per chunk.
        self._parts: list[str] = []
        self._pending = 0  # characters in _parts
        self._discarding = False  # inside a line that outgrew max_line: drop it up to its end
        self._event: str | None = None
        self._data: list[str] = []
        self._started = False
        self._skip_lf = False
        self.max_line = max_line
        self.errors = 0

    def feed(self, data: bytes) -> list[tuple[str | None, str]]:
        text = self._decoder.decode(data, final=not data)
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._skip_lf and text.startswith("\n"):
            text = text[1:]
        self._skip_lf = False
        out: list[tuple[str | None, str]] = []
        if "\n" not in text and "\r" not in text:
            self._hold(text)
        else:
            # One pass over the new text with an index: slicing the remainder off after every line
            # would copy the buffer once per event, quadratic when a whole body arrives at once.
            head, self._parts, self._pending = self._parts, [], 0
            buf = "".join(head) + text if head else text
            if "\r" in buf:
                pos = 0
                for m in _EOL.finditer(buf):
                    if m.end() == len(buf) and m.group() == "\r":
                        self._skip_lf = True  # a CRLF split across chunks: the next LF belongs to this line end
                    self._complete(buf[pos:m.start()], out)
                    pos = m.end()
                rest = buf[pos:]
            else:  # the usual case, LF line ends only: split in C
                lines = buf.split("\n")
                rest = lines.pop()
                for line in lines:
                    self._complete(line, out)
            self._hold(rest)
        if not data and (self._parts or self._discarding):  # end of stream: a last line without a newline
            line, self._parts, self._pending = "".join(self._parts), [], 0
            self._complete(line, out)
        return out

    def _hold(self, text: str) -> None:
        if not text or self._discarding:
            return
        self._parts.append(text)
        self._pending += len(text)
        if self._pending > self.max_line:
            self._parts, self._pending = [], 0
            self._discarding = True
            self.errors += 1

    def _complete(self, line: str, out: list) -> None:
        if self._discarding:  # the end of a line already given up on
            self._discarding = False
            return
        self._line(line, out)

    def _line(self, line: str, out: list) -> None:
        if line == "":
            if self._data:
                out.append((self._event, "\n".join(self._data)))
            self._event, self._data = None, []
            return
        if line.startswith(":"):
            return
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value


_EOL = re.compile(r"\r\n|\r|\n")


# Events decoded together. A feed can hold a whole 2 MB body (the kept part of a stream that
# outgrew it, or a deferred parse): decoded at once, its ~10,000 events are ~40 MB of objects.
DECODE_BATCH = 256


def json_payloads(events: list[tuple[str | None, str]]) -> Iterator[tuple[str | None, str, object]]:
    """Each event with its data decoded as JSON, or DONE / NOT_JSON; one decoder call per batch.

    Decoding a batch as one array costs about half of decoding its events one by one; a payload
    that is not exactly one JSON value sends the batch back to one-by-one decoding.
    """
    for start in range(0, len(events), DECODE_BATCH):
        yield from _decoded(events[start:start + DECODE_BATCH])


def _decoded(events: list[tuple[str | None, str]]) -> list[tuple[str | None, str, object]]:
    todo = [p for _, p in events if p != "[DONE]"]
    values: list | None = None
    if len(todo) > 1:
        values = _loads("[" + ",".join(todo) + "]")
        if not isinstance(values, list) or len(values) != len(todo):
            values = None
    if values is None:
        values = [_one(p) for p in todo]
    it = iter(values)
    return [(e, p, DONE if p == "[DONE]" else next(it)) for e, p in events]


def _one(payload: str) -> object:
    value = _loads(payload)
    return NOT_JSON if value is None and payload.strip() != "null" else value


def _loads(text: str) -> object:
    """orjson (several times faster on long streams), else the standard library, else None.

    The standard library still decides what orjson refuses (NaN, Infinity, lone surrogates).
    orjson reads integers past 64 bits as floats, which no provider's event holds.
    """
    try:
        return orjson.loads(text)
    except (orjson.JSONDecodeError, TypeError):
        pass
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


DONE = object()
NOT_JSON = object()


class JSONEventStream:
    """What a dialect's stream parser shares: SSE events of one JSON object each, joined text, a result.

    Subclasses handle each decoded event in `event(kind, value)`, where kind is the event's
    `type` field or else its SSE event name. A payload that is not JSON (or a stray [DONE])
    is counted as a malformed event, and the rest of the stream is still read.
    """

    def __init__(self) -> None:
        from .base import ParsedResponse
        from .common import TextParts

        self.sse = SSEReader()
        self.resp = ParsedResponse(complete=False)
        self.text = TextParts()

    def feed(self, data: bytes) -> None:
        for name, _payload, value in json_payloads(self.sse.feed(data)):
            if value is NOT_JSON or value is DONE:
                self.sse.errors += 1
                continue
            value = value if isinstance(value, dict) else {}
            kind = value.get("type")
            self.event(kind if isinstance(kind, str) and kind else name, value)

    def event(self, kind: str | None, value: dict) -> None:
        raise NotImplementedError
