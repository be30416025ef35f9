"""Incremental content-decoding for teed streams.

mitmproxy hands a stream callback the raw, still-encoded chunks; we forward
them untouched and decode a copy for the parser.
"""

from __future__ import annotations

import zlib


class _Identity:
    def decompress(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


class _Brotli:
    def __init__(self) -> None:
        import brotli

        self._d = brotli.Decompressor()

    def decompress(self, data: bytes) -> bytes:
        return self._d.process(data)

    def flush(self) -> bytes:
        return b""


class _Zstd:
    def __init__(self) -> None:
        import zstandard

        self._d = zstandard.ZstdDecompressor().decompressobj()

    def decompress(self, data: bytes) -> bytes:
        return self._d.decompress(data)

    def flush(self) -> bytes:
        return b""


class _Deflate:
    """`deflate` is zlib-wrapped by the RFC but raw in practice; accept both."""

    def __init__(self) -> None:
        self._d = None
        self._pending = b""

    def decompress(self, data: bytes) -> bytes:
        if self._d is None:
            self._pending += data
            if len(self._pending) < 2:
                return b""
            data, self._pending = self._pending, b""
            zlib_header = data[0] & 0x0F == 8 and int.from_bytes(data[:2], "big") % 31 == 0
            self._d = zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)
        return self._d.decompress(data)

    def flush(self) -> bytes:
        return self._d.flush() if self._d else b""


def decoder_for(content_encoding: str | None):
    """A decoder object with decompress()/flush(), or None for an encoding we cannot read."""
    enc = (content_encoding or "").strip().lower()
    if enc in ("", "identity"):
        return _Identity()
    if enc in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if enc == "deflate":
        return _Deflate()
    if enc == "br":
        return _Brotli()
    if enc == "zstd":
        return _Zstd()
    return None
