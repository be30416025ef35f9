"""A local server that answers like OpenAI, Anthropic and Gemini, scriptable per request.

It exists so the demo, the tests and the benchmarks exercise the proxy against
the real wire formats (including their failure modes: 429s, cut streams,
compressed streams) without a network or an API key.
"""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import sys
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from ..util.http_server import LocalHTTPServer
from . import dialects, directives
from .dialects.base import Dialect, Route, dumps
from .directives import DirectiveError, Directives
from .encoding import encode, encoder
from .reply import Ask, Reply, check, compose

HANDSHAKE_TIMEOUT = 10.0
IDLE_TIMEOUT = 120.0
MAX_BODY = 64 * 1024 * 1024


class _Server(LocalHTTPServer):
    block_on_close = False  # idle keep-alive connections must not hold up stop()
    request_queue_size = 1024

    def __init__(self, address, provider: "FakeProvider"):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.provider = provider
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def finish_request(self, request, client_address):
        # The TLS handshake runs here, in the connection's thread, so one slow
        # or broken client cannot stall the accept loop for everyone else.
        context = self.provider.ssl_context
        if context is not None:
            request.settimeout(HANDSHAKE_TIMEOUT)
            try:
                request = context.wrap_socket(request, server_side=True)
            except (OSError, ValueError):
                return
        try:
            self.RequestHandlerClass(request, client_address, self)
        finally:
            if context is not None:
                request.close()

    def handle_error(self, request, client_address):
        # Clients hanging up mid-response are routine here; anything else is a bug worth a traceback.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def track(self, conn: socket.socket, opened: bool) -> None:
        with self._open_lock:
            (self._open.add if opened else self._open.discard)(conn)

    def close_connections(self) -> None:
        with self._open_lock:
            conns, self._open = list(self._open), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT
    server: _Server
    _entry: dict[str, Any] | None = None  # what _record kept of the request being answered

    def setup(self):
        super().setup()
        try:
            # Without this, Nagle + delayed ACK add ~40 ms between small stream events.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.server.track(self.connection, True)

    def finish(self):
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format, *args):
        pass

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except (OSError, ssl.SSLError):
            self.close_connection = True

    # -- requests ---------------------------------------------------------

    def do_GET(self):
        self._entry = None
        if self._drain_body() is None:
            return
        if urlsplit(self.path).path == "/health":
            self._send(200, [], "text/plain; charset=utf-8", b"ok")
        else:
            self._send_not_found()

    def do_POST(self):
        self._entry = None
        body = self._drain_body()
        if body is None:
            return
        provider = self.server.provider
        self._entry = provider._record(self.command, self.path, self.headers, body)
        parts = urlsplit(self.path)
        route = dialects.route(parts.path, parts.query)
        if route is None:
            self._send_not_found()
            return
        dialect = route.dialect
        try:
            payload = json.loads(body)
            if not isinstance(payload, dict):
                raise ValueError("body is not a JSON object")
            ask = dialect.read(payload, route)
        except Exception as exc:  # any unreadable body is the client's fault, as upstream
            error = dialect.error(400, None, None, f"We could not parse the JSON body of your request: {exc}")
            self._send_json(400, dialect, Directives(), error)
            return
        try:
            wanted = directives.parse(self.headers.get(directives.HEADER), ask.last_user_text)
            check(ask, wanted)
        except DirectiveError as exc:
            self._send_json(400, dialect, Directives(), dialect.error(400, None, ask, str(exc)))
            return
        self._answer(route, ask, wanted, provider._should_fail(self.path, self.headers, body, wanted))

    def _answer(self, route: Route, ask: Ask, wanted: Directives, faulty: bool) -> None:
        dialect = route.dialect
        if wanted.delay:
            time.sleep(wanted.delay)
        if faulty and wanted.error_in_200:
            error = dialect.error(wanted.status or 500, wanted.code, ask, wanted.message_b64)
            if ask.stream:
                self._send_stream(route, dialect.error_events(error, route), wanted, cut_after=None)
            else:
                self._send_json(200, dialect, wanted, error)
            return
        if faulty and wanted.status is not None:
            self._send_json(wanted.status, dialect, wanted, dialect.error(wanted.status, wanted.code, ask, wanted.message_b64))
            return
        reply = self._compose(route, ask, wanted)
        cut_after = wanted.cut_after if faulty else None
        if ask.stream:
            self._send_stream(route, dialect.events(reply, route), wanted, cut_after)
        else:
            self._send_json(200, dialect, wanted, dialect.render(reply), cut=cut_after is not None)

    def _compose(self, route: Route, ask: Ask, wanted: Directives) -> Reply:
        vary = self.server.provider.vary
        if wanted.body_kb is None:
            return compose(ask, wanted, vary)
        shape = (route.dialect.name, ask.stream, route.sse, ask.include_usage, ask.max_tokens, wanted.no_usage,
                 wanted.reply, wanted.body_kb)
        words = self.server.provider._sizes.get(shape)
        if words is None:
            words = self.server.provider._sizes[shape] = self._words_for(route, ask, wanted, wanted.body_kb * 1024)
        return compose(ask, wanted, vary, words=words)

    def _words_for(self, route: Route, ask: Ask, wanted: Directives, target: float) -> int:
        """Reply length whose rendered body is about `target` bytes (cached per shape by the caller)."""

        def size(words: int) -> int:
            sample = compose(ask, wanted, False, words=words)
            if ask.stream:
                return sum(map(len, route.dialect.events(sample, route)))
            return len(dumps(route.dialect.render(sample)))

        # Numbered filler words grow longer, so the cost per word creeps up:
        # a few secant steps land within a percent or two.
        (w0, s0), (w1, s1) = (1, size(1)), (101, size(101))
        for _ in range(4):
            if abs(s1 - target) <= target * 0.01 or s1 == s0:
                break
            guess = max(1, round(w1 + (target - s1) * (w1 - w0) / (s1 - s0)))
            (w0, s0), (w1, s1) = (w1, s1), (guess, size(guess))
        return w1

    def _drain_body(self) -> bytes | None:
        """The whole request body, also when chunked; None after answering a bad one."""
        try:
            if "chunked" in self.headers.get("transfer-encoding", "").lower():
                return self._read_chunked()
            length = int(self.headers.get("content-length") or 0)
            if not 0 <= length <= MAX_BODY:
                raise ValueError(length)
            return self.rfile.read(length) if length else b""
        except ValueError:
            self.close_connection = True
            self._send(400, [], "application/json", dumps({"error": {"message": "bad request body framing"}}))
            return None

    def _read_chunked(self) -> bytes:
        data = bytearray()
        while True:
            size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"x", 16)
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return bytes(data)
            if len(data) + size > MAX_BODY:
                raise ValueError("body too large")
            data += self.rfile.read(size)
            self.rfile.readline(3)

    # -- responses --------------------------------------------------------

    def _send_not_found(self):
        path = urlsplit(self.path).path
        error = {"error": {"message": f"Unknown request URL: {self.command} {path}.", "type": "invalid_request_error",
                           "param": None, "code": "unknown_url"}}
        self._send(404, [], "application/json", dumps(error))

    def _provider_headers(self, status: int, dialect: Dialect, wanted: Directives) -> list[tuple[str, str]]:
        headers = dialect.headers(status, wanted)
        if status >= 400 and wanted.retry_after is not None:
            headers.append(("retry-after", f"{wanted.retry_after:g}"))
        return headers

    def _send_json(self, status: int, dialect: Dialect, wanted: Directives, obj: Any, cut: bool = False) -> None:
        headers = self._provider_headers(status, dialect, wanted)
        self._send(status, headers, "application/json", dumps(obj), wanted.encoding, cut)

    def _head(self, status: int, headers: list[tuple[str, str]], content_type: str, length: int | None,
              encoding: str | None, chunked: bool = False) -> bytes:
        if self._entry is not None:
            self._entry["status"] = status  # what the request was answered, for tests to compare with recordings
        reason = self.responses.get(status, ("Overloaded" if status == 529 else "Error",))[0]
        lines = [f"HTTP/1.1 {status} {reason}", f"date: {formatdate(usegmt=True)}", f"content-type: {content_type}"]
        if length is not None:
            lines.append(f"content-length: {length}")
        elif chunked:
            lines.append("transfer-encoding: chunked")
        if encoding and encoding != "identity":
            lines.append(f"content-encoding: {encoding}")
        lines += [f"{name}: {value}" for name, value in headers]
        if self.close_connection:
            lines.append("connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send(self, status: int, headers: list[tuple[str, str]], content_type: str, body: bytes,
              encoding: str | None = None, cut: bool = False) -> None:
        body = encode(encoding, body) if encoding else body
        head = self._head(status, headers, content_type, len(body), encoding)
        if cut:
            # Full length announced, half delivered: the client sees a truncated body.
            self.close_connection = True
            body = body[: len(body) // 2]
        self.wfile.write(head + body)

    def _send_stream(self, route: Route, events: list[bytes], wanted: Directives, cut_after: int | None) -> None:
        dialect = route.dialect
        chunked = self.request_version == "HTTP/1.1"
        if not chunked:
            self.close_connection = True  # an HTTP/1.0 body ends where the connection does
        head = self._head(200, self._provider_headers(200, dialect, wanted), dialect.content_type(route), None,
                          wanted.encoding, chunked)
        coder = encoder(wanted.encoding)
        pending = head
        for index, event in enumerate(events):
            if cut_after is not None and index >= cut_after:
                # No final event and no zero-length chunk: an abrupt hang-up.
                self.wfile.write(pending)
                self.close_connection = True
                return
            if index and wanted.chunk_delay:
                time.sleep(wanted.chunk_delay)
            self.wfile.write(pending + self._frame(coder.feed(event), chunked))
            pending = b""
        if wanted.end_delay:
            self.wfile.write(pending)
            self.wfile.flush()
            pending = b""
            time.sleep(wanted.end_delay)
        self.wfile.write(pending + self._frame(coder.finish(), chunked) + (b"0\r\n\r\n" if chunked else b""))

    @staticmethod
    def _frame(data: bytes, chunked: bool) -> bytes:
        if not data or not chunked:
            return data
        return b"%x\r\n%s\r\n" % (len(data), data)


class FakeProvider:
    """A fake LLM provider on a local port; use as a context manager or start()/stop()."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None,
                 vary: bool = False):
        self.host = host
        self._wanted_port = port
        self.ssl_context = ssl_context
        self.vary = vary
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._requests: list[dict[str, Any]] = []
        self._arrivals: dict[str, int] = {}
        self._sizes: dict[tuple, int] = {}  # body_kb shape -> reply words

    # -- lifecycle --------------------------------------------------------

    def start(self) -> "FakeProvider":
        if self._server is not None:
            return self
        self._server = _Server((self.host, self._wanted_port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"fakeprovider:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "FakeProvider":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- addresses --------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeProvider is not started")
        return self._server.server_address[1]

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    # -- what arrived -----------------------------------------------------

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Snapshot of received POSTs: dicts with method, path, headers (lower-case keys), body, at, status."""
        with self._lock:
            return list(self._requests)

    def count(self, path: str | None = None) -> int:
        """Requests received, optionally only those for `path` (query string ignored)."""
        with self._lock:
            if path is None:
                return len(self._requests)
            return sum(1 for r in self._requests if urlsplit(r["path"]).path == path)

    def clear(self) -> None:
        """Forget received requests and the fail_times arrival counts."""
        with self._lock:
            self._requests.clear()
            self._arrivals.clear()

    def _record(self, method: str, path: str, headers, body: bytes) -> dict[str, Any]:
        entry = {
            "method": method,
            "path": path,
            "headers": {name.lower(): value for name, value in headers.items()},
            "body": body,
            "at": time.time(),
            "status": None,  # set when the answer's head is sent
        }
        with self._lock:
            self._requests.append(entry)
        return entry

    def _should_fail(self, path: str, headers, body: bytes, wanted: Directives) -> bool:
        if not wanted.faulty:
            return False
        if wanted.fail_times is None:
            return True
        # An SDK retry resends the same body, so the body is what identifies "this request".
        key = hashlib.sha256(b"\0".join([path.encode(), (headers.get(directives.HEADER) or "").encode(), body]))
        with self._lock:
            seen = self._arrivals[key.hexdigest()] = self._arrivals.get(key.hexdigest(), 0) + 1
        return seen <= wanted.fail_times
