"""The stream callback every LLM response goes through: forward each chunk as it is, read a decoded copy."""

from __future__ import annotations

import time

from mitmproxy import http

from ..capture.decoders import DecodeLimit, decoder_for
from ..providers.common import feed_in_pieces


class StreamTee:
    """mitmproxy stream callback: forwards every chunk unchanged, reads a decoded copy."""

    def __init__(self, flow: http.HTTPFlow, parser_factory, keep_limit: int, marks=None) -> None:
        # No reference back to the flow: the flow holds this tee, and a cycle would keep every
        # flow alive until the cyclic GC, whose pauses the agent would feel.
        # Parsing waits for the writer process, off the event loop the agent's bytes go through,
        # unless the stream outgrows what we keep: then it has to be read as it passes.
        self.parser_factory = parser_factory  # dialect stream parser factory, or None to just keep the body
        self.parser = None
        self.keep_limit = keep_limit
        self.kept = bytearray()
        self.truncated = False
        self.first_chunk_at: float | None = None
        encoding = flow.response.headers.get("content-encoding")
        # A body only kept for the writer (not parsed as it passes) is not decoded past what is kept.
        self.decoder = decoder_for(encoding) if parser_factory else decoder_for(encoding, limit=keep_limit)
        self.decode_error: str | None = None if self.decoder else f"unsupported content-encoding {encoding!r}"
        self.ended = False
        # An MCP event stream: (allocate, marks). Each chunk that ends events appends
        # (offset past it in the decoded body, time, first completion number, events ended).
        self._allocate, self.marks = marks if marks else (None, None)
        self._tail = b""
        self._seen = 0  # decoded bytes so far, kept or not

    def __call__(self, chunk: bytes) -> bytes:
        try:
            self._read(chunk)
        except DecodeLimit as e:
            self.decode_error = str(e)
            self.decoder = None  # stop reading; the bytes still pass untouched
        except Exception as e:  # the tee must never break the stream
            if self.decode_error is None:
                encoding = type(self.decoder).__name__.lstrip("_").lower() if self.decoder else "?"
                self.decode_error = f"could not decode the {encoding} body: {type(e).__name__}: {e}"
            self.decoder = None
        return chunk

    def _mark(self, data: bytes) -> None:
        # Blank lines end events; a terminator split between chunks is found with the last bytes kept.
        joined = self._tail + data
        n = _ends(joined) - _ends(self._tail)
        self._tail = joined[-3:]
        if n > 0:
            self.marks.append((self._seen + len(data), time.time(), self._allocate(n), n))
        self._seen += len(data)

    def _read(self, chunk: bytes) -> None:
        if chunk and self.first_chunk_at is None:
            self.first_chunk_at = time.time()
        if not chunk:
            self.ended = True
        if self.decoder is None:
            return
        data = self.decoder.decompress(chunk) if chunk else self.decoder.flush()
        if not data:
            return
        if self.marks is not None:
            self._mark(data)
        room = self.keep_limit - len(self.kept)
        if self.parser is not None:
            self.parser.feed(data)
        elif self.parser_factory is not None and len(data) > room:
            self.parser = self.parser_factory()
            feed_in_pieces(self.parser, self.kept)
            self.parser.feed(data)
        if room > 0:
            self.kept += data[:room]
        if len(data) > max(room, 0):
            self.truncated = True


def _ends(data: bytes) -> int:
    """Blank lines (event ends) in SSE bytes, counted at C speed."""
    return data.count(b"\r\n\r\n") + data.count(b"\n\n") + data.count(b"\r\r")
