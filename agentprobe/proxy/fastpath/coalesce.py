"""Merge the pieces of a streamed body: chunks read together, writes sent together.

mitmproxy turns every chunk of a streamed response into its own write to the
client. An LLM stream is hundreds of small SSE events, and one socket read from
the provider often holds dozens of them, so a streaming proxy made dozens of
send() calls, each a pass through the asyncio transport and a system call,
where one would do. `bench/run.py --fastpath each` measures what merging buys.

The connection handler runs its layer's commands to the end without awaiting
anything, so holding a write back until the next command is known delays it by
microseconds, never across a socket read. Order on the wire is kept: any
other command flushes the held data first, except a log line, which is only
ever printed. mitmproxy logs "Streaming response from ..." between a streamed
response's head and its body, so flushing there sent the head alone, and the
first event the provider had sent with it followed in a second write, which
the agent then waited for to see its first token (the same benchmark reports
TTFT with and without this patch). UDP is never merged, since each datagram is
a message of its own.

The same holds one step earlier: h11 hands out a chunked body one chunk at a
time, and each chunk then travelled alone through mitmproxy's HTTP layers, the
stream hook and the client's framing. Chunks that arrived in the same read are
joined into one piece of data; the client receives the same bytes, re-chunked
(HTTP allows any chunking), and no sooner or later than before.
"""

from __future__ import annotations

from collections.abc import Iterator

import h11
from mitmproxy.proxy import commands

try:
    from mitmproxy.proxy.layers.http import _http1
except ImportError:  # a mitmproxy that reorganised its HTTP/1 layer: see install()
    _http1 = None

_original = None  # make_body_reader before patch()


def coalesce_sends(cmds: Iterator[commands.Command]) -> Iterator[commands.Command]:
    held: commands.SendData | None = None
    parts: list[bytes] = []
    try:
        for cmd in cmds:
            if type(cmd) is commands.SendData and cmd.connection.transport_protocol == "tcp":
                if held is not None and cmd.connection is held.connection:
                    parts.append(cmd.data)
                    continue
                if held is not None:
                    yield _merged(held, parts)
                held, parts = cmd, [cmd.data]
                continue
            if type(cmd) is commands.Log:  # printed, never sent: no reason to flush
                yield cmd
                continue
            if held is not None:
                yield _merged(held, parts)
                held = None
            yield cmd
    except Exception:
        # The layer failed after handing us data: that data was already meant for the wire.
        if held is not None:
            yield _merged(held, parts)
            held = None
        raise
    if held is not None:
        yield _merged(held, parts)


def _merged(first: commands.SendData, parts: list[bytes]) -> commands.SendData:
    if len(parts) == 1:
        return first
    return commands.SendData(first.connection, b"".join(parts))


class _JoiningChunkedReader:
    """h11's chunked body reader, returning all the chunks already buffered as one Data."""

    __slots__ = ("_inner", "_next")

    def __init__(self, inner) -> None:
        self._inner = inner
        self._next: h11.EndOfMessage | Exception | None = None

    def __call__(self, buf):
        if self._next is not None:
            held, self._next = self._next, None
            if isinstance(held, Exception):
                raise held
            return held
        first = self._inner(buf)
        if type(first) is not h11.Data:
            return first
        parts = [first.data]
        while True:
            try:
                event = self._inner(buf)
            except Exception as e:  # a malformed chunk after good ones: deliver the good ones first
                self._next = e
                break
            if event is None:
                break
            if type(event) is h11.Data:
                parts.append(event.data)
                continue
            self._next = event
            break
        if len(parts) == 1:
            return first
        return h11.Data(data=b"".join(parts))

    def read_eof(self):
        return self._inner.read_eof()


def _make_body_reader(original):
    def make_body_reader(expected_size: int | None):
        reader = original(expected_size)
        return _JoiningChunkedReader(reader) if expected_size is None else reader

    return make_body_reader


def check() -> str | None:
    if not callable(getattr(_http1, "make_body_reader", None)):
        return "mitmproxy has no HTTP/1 make_body_reader"
    if not all(hasattr(commands, name) for name in ("SendData", "Log")):
        return "mitmproxy.proxy.commands has no SendData or Log"
    return None


def patch() -> None:
    """Join the chunks every HTTP/1 body reader has buffered, from now on (writes: see root_layer).

    tests/proxy/fastpath/test_coalesce.py fails on a mitmproxy that moved this internal.
    """
    global _original
    if _original is None:
        _original = _http1.make_body_reader
        _http1.make_body_reader = _make_body_reader(_original)


def unpatch() -> None:
    global _original
    if _original is not None:
        _http1.make_body_reader = _original
        _original = None
