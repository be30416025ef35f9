"""WebSocket traffic passes through the proxy untouched, and its messages are not kept in memory."""

from __future__ import annotations

import socket
from pathlib import Path

import sqlite_utils
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Request, TextMessage

from agentprobe.capture.session import Recording
from agentprobe.proxy.runner import ProxyConfig

from tcp_server import ThreadedTCPServer


class EchoServer(ThreadedTCPServer):
    """A minimal WebSocket echo server (wsproto over a plain socket)."""

    def handle(self, conn: socket.socket) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, Request):
                        conn.sendall(ws.send(AcceptConnection()))
                    elif isinstance(event, (TextMessage, BytesMessage)):
                        conn.sendall(ws.send(event))  # echo, fragment by fragment
                    elif isinstance(event, CloseConnection):
                        conn.sendall(ws.send(event.response()))
                        return


class FlowKeeper:
    """Test addon: holds the WebSocket flow so the test can see how many messages mitmproxy kept."""

    def __init__(self) -> None:
        self.flows = []

    def websocket_start(self, flow) -> None:
        self.flows.append(flow)


def test_websocket_messages_pass_through_and_do_not_pile_up(tmp_path):
    server = EchoServer()
    keeper = FlowKeeper()
    rec = Recording(tmp_path / "a.db", ProxyConfig(confdir=tmp_path / "conf"), label="ws", addons=[keeper]).start()
    host, port = rec.url.removeprefix("http://").split(":")
    try:
        client = WSConnection(ConnectionType.CLIENT)
        sock = socket.create_connection((host, int(port)))
        # Through an HTTP proxy a plain ws:// handshake goes in absolute form.
        sock.sendall(client.send(Request(host=f"127.0.0.1:{server.port}",
                                         target=f"http://127.0.0.1:{server.port}/echo")))
        events = []

        def pump(until):
            while not any(until(e) for e in events):
                data = sock.recv(65536)
                assert data, "the proxy closed the connection"
                client.receive_data(data)
                events.extend(client.events())

        pump(lambda e: isinstance(e, AcceptConnection))
        sent = [f"message {i} " + "x" * 8000 for i in range(600)]
        received: list[str] = []
        partial = ""
        for text in sent:
            sock.sendall(client.send(TextMessage(data=text)))
        while len(received) < len(sent):
            data = sock.recv(65536)
            assert data
            client.receive_data(data)
            for event in client.events():
                if isinstance(event, TextMessage):
                    partial += event.data
                    if event.message_finished:
                        received.append(partial)
                        partial = ""
        assert received == sent  # every byte, in order
        [flow] = keeper.flows
        assert len(flow.websocket.messages) <= 1  # 600 x 8 KB were not kept
        sock.sendall(client.send(CloseConnection(code=1000)))
        sock.close()
    finally:
        rec.stop()
        server.close()
    [call] = sqlite_utils.Database(Path(tmp_path / "a.db")).query("SELECT status, path, api FROM calls")
    assert call["status"] == 101 and call["path"] == "/echo" and call["api"] is None
