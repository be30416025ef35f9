"""Content-encoding that keeps streams streaming.

Each `feed` ends with a flush so the client can decode every event the moment
it arrives; compressing a stream in one go would hold events back, which is
exactly the proxy bug these encodings exist to expose.
"""

from __future__ import annotations

import zlib


class Identity:
    def feed(self, data: bytes) -> bytes:
        return data

    def finish(self) -> bytes:
        return b""


class Zlib:
    def __init__(self, wbits: int):
        self._c = zlib.compressobj(wbits=wbits)

    def feed(self, data: bytes) -> bytes:
        return self._c.compress(data) + self._c.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        return self._c.flush(zlib.Z_FINISH)


class Brotli:
    def __init__(self):
        import brotli

        self._c = brotli.Compressor()

    def feed(self, data: bytes) -> bytes:
        return self._c.process(data) + self._c.flush()

    def finish(self) -> bytes:
        return self._c.finish()


class Zstd:
    def __init__(self):
        import zstandard

        self._zstd = zstandard
        self._c = zstandard.ZstdCompressor().compressobj()

    def feed(self, data: bytes) -> bytes:
        return self._c.compress(data) + self._c.flush(self._zstd.COMPRESSOBJ_FLUSH_BLOCK)

    def finish(self) -> bytes:
        return self._c.flush(self._zstd.COMPRESSOBJ_FLUSH_FINISH)


def encoder(name: str | None):
    if name in (None, "identity"):
        return Identity()
    if name == "gzip":
        return Zlib(31)
    if name == "deflate":
        return Zlib(15)  # HTTP "deflate" means the zlib wrapper, not raw deflate
    if name == "br":
        return Brotli()
    if name == "zstd":
        return Zstd()
    raise ValueError(name)


def encode(name: str | None, data: bytes) -> bytes:
    coder = encoder(name)
    return coder.feed(data) + coder.finish()
