"""A local OTLP/HTTP collector for the tests: keeps the spans it is sent."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    def __init__(self) -> None:
        self.posts: list[tuple[str, dict]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.posts.append((self.path, json.loads(body)))
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def spans(self) -> list[dict]:
        return [s for _, p in self.posts for rs in p["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]


def attributes(span: dict) -> dict:
    def value(v):
        if "arrayValue" in v:
            return [value(x) for x in v["arrayValue"]["values"]]
        return next(iter(v.values()))

    return {a["key"]: value(a["value"]) for a in span["attributes"]}
