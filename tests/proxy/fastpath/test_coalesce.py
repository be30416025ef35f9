"""Joining a streamed body's chunks and writes: same bytes, same order, fewer pieces."""

from __future__ import annotations

import json
import time
from asyncio import selector_events
from pathlib import Path

import h11
import pytest
from h11._readers import ChunkedReader
from h11._receivebuffer import ReceiveBuffer
from hypothesis import given, settings
from hypothesis import strategies as st
from mitmproxy.connection import Server
from mitmproxy.proxy import commands
from mitmproxy.proxy.layers.http import _http1

from agentprobe.proxy.fastpath import coalesce

from proxy_fixtures import ALL_PATCHES, Recorded
from tcp_server import RawServer

A = Server(address=("a.example", 443))
B = Server(address=("b.example", 443))
UDP = Server(address=("c.example", 443), transport_protocol="udp")


def _shape(cmds):
    return [(type(c).__name__, getattr(c, "connection", None), getattr(c, "data", None)) for c in cmds]


def test_consecutive_writes_to_one_peer_become_one():
    out = list(coalesce.coalesce_sends(iter([
        commands.SendData(A, b"one "), commands.SendData(A, b"two "), commands.SendData(A, b"three"),
    ])))
    assert _shape(out) == [("SendData", A, b"one two three")]


def test_order_is_kept_across_peers_and_other_commands():
    close = commands.CloseConnection(A)
    out = list(coalesce.coalesce_sends(iter([
        commands.SendData(A, b"a1"), commands.SendData(A, b"a2"),
        commands.SendData(B, b"b1"),
        commands.SendData(A, b"a3"),
        close,
        commands.SendData(A, b"a4"),
    ])))
    assert _shape(out) == [("SendData", A, b"a1a2"), ("SendData", B, b"b1"), ("SendData", A, b"a3"),
                           ("CloseConnection", A, None), ("SendData", A, b"a4")]
    assert out[3] is close


def test_a_log_line_does_not_split_the_writes_around_it():
    # mitmproxy logs between a streamed response's head and its first chunk.
    note = commands.Log("Streaming response from a.example.")
    out = list(coalesce.coalesce_sends(iter([
        commands.SendData(A, b"HTTP/1.1 200 OK\r\n\r\n"), note, commands.SendData(A, b"data: 1\n\n"),
    ])))
    assert _shape(out) == [("Log", None, None), ("SendData", A, b"HTTP/1.1 200 OK\r\n\r\ndata: 1\n\n")]
    assert out[0] is note


def test_datagrams_are_never_merged():
    out = list(coalesce.coalesce_sends(iter([commands.SendData(UDP, b"x"), commands.SendData(UDP, b"y")])))
    assert _shape(out) == [("SendData", UDP, b"x"), ("SendData", UDP, b"y")]


def test_data_held_when_the_layer_fails_is_still_sent_before_the_error():
    def failing():
        yield commands.SendData(A, b"sent ")
        yield commands.SendData(A, b"before")
        raise RuntimeError("layer bug")

    got = []
    with pytest.raises(RuntimeError, match="layer bug"):
        for cmd in coalesce.coalesce_sends(failing()):
            got.append(cmd)
    assert _shape(got) == [("SendData", A, b"sent before")]


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _chunked(pieces: list[bytes]) -> bytes:
    return b"".join(_chunk(p) for p in pieces) + b"0\r\n\r\n"


def _read_all(reader, wire: bytes, reads: list[int]) -> list:
    """Feed the wire in reads of the given sizes, draining the reader after each like mitmproxy does."""
    buf, events, at = ReceiveBuffer(), [], 0
    for size in [*reads, len(wire)]:
        buf += wire[at:at + size]
        at += size
        while (event := reader(buf)) is not None:
            events.append(event)
            if type(event) is h11.EndOfMessage:
                return events
    return events


def test_chunks_buffered_together_come_out_as_one_piece():
    events = _read_all(coalesce._JoiningChunkedReader(ChunkedReader()), _chunked([b"data: 1\n\n", b"data: 2\n\n"]), [])
    assert [type(e) for e in events] == [h11.Data, h11.EndOfMessage]
    assert bytes(events[0].data) == b"data: 1\n\ndata: 2\n\n"


def test_a_malformed_chunk_after_good_ones_delivers_the_good_ones_first():
    reader = coalesce._JoiningChunkedReader(ChunkedReader())
    buf = ReceiveBuffer()
    buf += b"5\r\nhello\r\n6\r\n world\r\nzz\r\n"
    assert bytes(reader(buf).data) == b"hello world"
    with pytest.raises(h11.ProtocolError):
        reader(buf)


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(st.binary(min_size=1, max_size=40), max_size=30),
       reads=st.lists(st.integers(min_value=1, max_value=64), max_size=40))
def test_joined_reader_yields_the_same_body_as_h11(pieces, reads):
    wire = _chunked(pieces)
    plain = _read_all(ChunkedReader(), wire, reads)
    joined = _read_all(coalesce._JoiningChunkedReader(ChunkedReader()), wire, reads)
    body = b"".join(pieces)
    assert b"".join(bytes(e.data) for e in plain if type(e) is h11.Data) == body
    assert b"".join(bytes(e.data) for e in joined if type(e) is h11.Data) == body
    assert type(joined[-1]) is h11.EndOfMessage
    assert sum(type(e) is h11.EndOfMessage for e in joined) == 1
    # Never more pieces than h11's own, and no empty ones.
    assert len(joined) <= len(plain)
    assert all(e.data for e in joined if type(e) is h11.Data)


def test_install_takes_effect_on_this_mitmproxy():
    # A mitmproxy upgrade that renames these internals must fail here, not silently slow streams down.
    coalesce.patch()
    assert isinstance(_http1.make_body_reader(None), coalesce._JoiningChunkedReader)
    assert not isinstance(_http1.make_body_reader(10), coalesce._JoiningChunkedReader)


def _event(text: str) -> bytes:
    delta = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "m",
             "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return b"data: " + json.dumps(delta).encode() + b"\n\n"


def test_through_the_proxy_the_first_event_leaves_with_the_response_head(tmp_path, tls_ca_bundle, monkeypatch):
    # The provider sends its head and first event in one write, the rest later: the agent must get
    # that first event in the proxy's first write to it, not in a second one after a log line.
    first = _event("Hello")

    def respond(conn):
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"transfer-encoding: chunked\r\n\r\n" + _chunk(first))
        time.sleep(0.3)
        conn.sendall(_chunked([_event(" world"), b"data: [DONE]\n\n"]))

    provider = RawServer(respond)
    writes: list[tuple[int, bytes]] = []
    original = selector_events._SelectorSocketTransport.write

    def recording_write(transport, data):
        writes.append((transport.get_extra_info("peername")[1], bytes(data)))
        return original(transport, data)

    monkeypatch.setattr(selector_events._SelectorSocketTransport, "write", recording_write)
    rec = Recorded(tmp_path, Path(tls_ca_bundle), fastpath=ALL_PATCHES)
    try:
        stream = rec.openai(provider, max_retries=0).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream) == "Hello world"
        to_agent = [data for port, data in writes if port != provider.port]
        assert to_agent[0].startswith(b"HTTP/1.1 200")
        assert first in to_agent[0]
        (call,) = rec.calls()
        assert call["status"] == 200 and call["stream"] == 1 and call["stream_complete"] == 1
    finally:
        rec.stop()
        provider.close()
