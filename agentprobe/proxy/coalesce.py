"""Merge the pieces of a streamed body: chunks read together, writes sent together.

mitmproxy turns every chunk of a streamed response into its own write to the
client. An LLM stream is hundreds of small SSE events, and one socket read from
the provider often holds dozens of them, so a streaming proxy made dozens of
send() calls where one would do: the benchmark measured the transport's write
as the largest single cost of the proxy's event loop on a 100 KB stream.

The connection handler runs its layer's commands to the end without awaiting
anything, so holding a write back until the next command is known delays it by
microseconds, never across a socket read. Order is kept: any other command
flushes the held data first. UDP is never merged, since each datagram is a
message of its own.

The same holds one step earlier: h11 hands out a chunked body one chunk at a
time, and each chunk then travelled alone through mitmproxy's HTTP layers, the
stream hook and the client's framing. Chunks that arrived in the same read are
joined into one piece of data; the client receives the same bytes, re-chunked
(HTTP allows any chunking), and no sooner or later than before.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import h11
from mitmproxy.proxy import commands, server

try:
    from mitmproxy.proxy.layers.http import _http1
except ImportError:  # a mitmproxy that reorganised its HTTP/1 layer: see install()
    _http1 = None

log = logging.getLogger("agentprobe.proxy")

_installed = False


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


class _CoalescingRoot:
    """Stands in for a connection handler's root layer; everything but handle_event passes through."""

    __slots__ = ("_layer",)

    def __init__(self, layer) -> None:
        self._layer = layer

    def handle_event(self, event):
        return coalesce_sends(self._layer.handle_event(event))

    def __getattr__(self, name):
        return getattr(self._layer, name)

    def __repr__(self) -> str:
        return repr(self._layer)


def install() -> None:
    """Join chunks in every HTTP/1 body reader and writes in every connection handler, from now on.

    A property rather than a wrapped __init__: mitmproxy assigns handler.layer
    twice (a NextLayer in __init__, then the mode's top layer in handle_stream),
    and every assignment must be wrapped. Both patches touch mitmproxy internals;
    if a mitmproxy release moves them, traffic flows unjoined (slower, never
    broken) and the log says so. tests/test_coalesce.py fails on such a release.
    """
    global _installed
    if _installed:
        return
    _installed = True
    if "layer" in vars(server.ConnectionHandler) or not hasattr(server.ConnectionHandler, "server_event"):
        log.warning("agentprobe: this mitmproxy's connection handler is not the one we know; "
                    "streamed writes are not merged")
    else:
        def get_layer(handler):
            return handler.__dict__["_agentprobe_root"]

        def set_layer(handler, layer) -> None:
            if not isinstance(layer, _CoalescingRoot):
                layer = _CoalescingRoot(layer)
            handler.__dict__["_agentprobe_root"] = layer

        server.ConnectionHandler.layer = property(get_layer, set_layer)
    if not callable(getattr(_http1, "make_body_reader", None)):
        log.warning("agentprobe: this mitmproxy has no HTTP/1 make_body_reader; streamed chunks are not joined")
    else:
        _http1.make_body_reader = _make_body_reader(_http1.make_body_reader)
