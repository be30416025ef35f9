"""Incremental content-decoding of teed bodies, bounded against decompression bombs.

mitmproxy hands a stream callback the raw, still-encoded chunks; we forward them untouched and
decode a copy for the parser. A few kilobytes of brotli or gzip can expand to gigabytes, so every
decoder here stops with DecodeLimit once a call has produced DECODED_LIMIT bytes in all, or once
one chunk alone produced CHUNK_DECODED_LIMIT: the work any one chunk costs the event loop is
bounded by that, and the agent still gets every byte (only our reading of them stops).
"""

from __future__ import annotations

import zlib

MiB = 1024 * 1024
# An LLM answer (or request) past this many decoded bytes is not read further; it is still
# forwarded whole. Streams are parsed as they pass, so this is not memory kept, only work done.
DECODED_LIMIT = 256 * MiB
# No honest chunk of a network read expands this much: past it, the body is treated as a bomb.
CHUNK_DECODED_LIMIT = 16 * MiB
# zstd cannot be told to stop early, so it is fed this much input at a time; one byte of zstd
# input can stand for at most ~128 KB of output (an RLE block), so the overshoot stays small.
_ZSTD_SLICE = 64


class DecodeLimit(Exception):
    """The body decoded past a limit; the message names it."""


class _Bounded:
    """Counts decoded bytes and refuses to produce more than the limits allow."""

    def __init__(self, limit: int, chunk_limit: int) -> None:
        self.limit = limit
        self.chunk_limit = chunk_limit
        self.total = 0

    def _budget(self) -> int:
        return min(self.chunk_limit, self.limit - self.total)

    def _take(self, out: bytes, budget: int) -> bytes:
        if len(out) > budget:
            if self.chunk_limit < self.limit and budget == self.chunk_limit:
                raise DecodeLimit(f"one chunk decoded to more than {self.chunk_limit // MiB} MiB"
                                  " (a decompression bomb?): not read further")
            raise DecodeLimit(f"decoded body over {self.limit // MiB} MiB (a decompression bomb?): not read further")
        self.total += len(out)
        return out

    def decompress(self, data: bytes) -> bytes:
        budget = self._budget()
        return self._take(self._decompress(data, budget + 1), budget)

    def flush(self) -> bytes:
        budget = self._budget()
        return self._take(self._flush(budget + 1), budget)

    def _decompress(self, data: bytes, max_length: int) -> bytes:
        raise NotImplementedError

    def _flush(self, max_length: int) -> bytes:
        return b""


class _Identity(_Bounded):
    def _decompress(self, data: bytes, max_length: int) -> bytes:
        return data

    def decompress(self, data: bytes) -> bytes:
        # Nothing expands: only the total counts (one network chunk is never a bomb).
        if self.total + len(data) > self.limit:
            raise DecodeLimit(f"body over {self.limit // MiB} MiB: not read further")
        self.total += len(data)
        return data


class _Zlib(_Bounded):
    def __init__(self, wbits: int, limit: int, chunk_limit: int) -> None:
        super().__init__(limit, chunk_limit)
        self._d = zlib.decompressobj(wbits)

    def _decompress(self, data: bytes, max_length: int) -> bytes:
        return self._d.decompress(data, max_length)

    def _flush(self, max_length: int) -> bytes:
        return self._d.flush()


class _Deflate(_Bounded):
    """`deflate` is zlib-wrapped by the RFC but raw in practice; accept both."""

    def __init__(self, limit: int, chunk_limit: int) -> None:
        super().__init__(limit, chunk_limit)
        self._d = None
        self._pending = b""

    def _decompress(self, data: bytes, max_length: int) -> bytes:
        if self._d is None:
            self._pending += data
            if len(self._pending) < 2:
                return b""
            data, self._pending = self._pending, b""
            zlib_header = data[0] & 0x0F == 8 and int.from_bytes(data[:2], "big") % 31 == 0
            self._d = zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)
        return self._d.decompress(data, max_length)

    def _flush(self, max_length: int) -> bytes:
        return self._d.flush() if self._d else b""


class _Brotli(_Bounded):
    def __init__(self, limit: int, chunk_limit: int) -> None:
        super().__init__(limit, chunk_limit)
        import brotli

        self._d = brotli.Decompressor()

    def _decompress(self, data: bytes, max_length: int) -> bytes:
        return self._d.process(data, output_buffer_limit=max_length)


class _Zstd(_Bounded):
    def __init__(self, limit: int, chunk_limit: int) -> None:
        super().__init__(limit, chunk_limit)
        import zstandard

        # A window over 128 MiB would make the decoder itself allocate that much.
        self._d = zstandard.ZstdDecompressor(max_window_size=128 * MiB).decompressobj()

    def _decompress(self, data: bytes, max_length: int) -> bytes:
        out = []
        produced = 0
        for start in range(0, len(data), _ZSTD_SLICE):
            piece = self._d.decompress(data[start:start + _ZSTD_SLICE])
            out.append(piece)
            produced += len(piece)
            if produced >= max_length:
                break
        return b"".join(out)


def decoder_for(content_encoding: str | None, *, limit: int = DECODED_LIMIT, chunk_limit: int = CHUNK_DECODED_LIMIT):
    """A decoder with decompress()/flush() that raises DecodeLimit, or None for an encoding we cannot read."""
    enc = (content_encoding or "").strip().lower()
    if enc in ("", "identity"):
        return _Identity(limit, chunk_limit)
    if enc in ("gzip", "x-gzip"):
        return _Zlib(16 + zlib.MAX_WBITS, limit, chunk_limit)
    if enc == "deflate":
        return _Deflate(limit, chunk_limit)
    if enc == "br":
        return _Brotli(limit, chunk_limit)
    if enc == "zstd":
        return _Zstd(limit, chunk_limit)
    return None


def decode_body(body: bytes, content_encoding: str | None, *, limit: int) -> tuple[bytes, str | None]:
    """A whole body decoded (at most `limit` bytes of it): (decoded, error or None)."""
    decoder = decoder_for(content_encoding, limit=limit, chunk_limit=limit)
    if decoder is None:
        return b"", f"unsupported content-encoding {content_encoding!r}"
    out = []
    try:
        for start in range(0, len(body), 64 * 1024):
            out.append(decoder.decompress(body[start:start + 64 * 1024]))
        out.append(decoder.flush())
    except DecodeLimit as e:
        return b"".join(out), str(e)
    except Exception as e:  # noqa: BLE001 - a body that is not what its header says
        return b"".join(out), f"content-encoding {content_encoding}: {type(e).__name__}: {e}"
    return b"".join(out), None
