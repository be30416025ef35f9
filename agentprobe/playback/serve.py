"""`agentprobe serve`: answer an agent's LLM calls from a recorded run, offline.

A request is matched to a recorded call by its canonical, redacted body first
(the same bytes the recorder hashed), then by its place in a conversation: a
request that extends one already served (tool call ids or timestamps changed,
say) gets the recorded next turn of that conversation. A request that matches
neither gets a provider-shaped 404 naming the divergence, so the user sees
exactly where the agent left the recorded path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

import sqlite_utils

from ..capture import redact
from ..capture.linking import RunTracker
from ..capture.rows import scrubbed_request, stored_request_body
from ..providers import detect, provider_for
from ..providers.base import ParseError
from ..store.queries import body_text
from ..util.http_server import LocalHTTPServer

log = logging.getLogger("agentprobe.playback.serve")

_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


@dataclass
class Recorded:
    seq: int
    api: str | None
    path: str
    body_key: str
    conversation_id: str | None
    turn: int | None
    status: int
    content_type: str
    body: bytes
    stream: bool
    ttft_ms: float | None
    latency_ms: float | None
    truncated: bool
    used: bool = False
    request: str = ""  # the stored (redacted, canonical) request body
    model: str | None = None
    provider: str | None = None
    scheme: str | None = None
    host: str | None = None
    port: int | None = None


@dataclass
class Served:
    seq: int | None  # recorded seq answered, None when unmatched or sent live
    how: str  # "body" | "conversation" | "unmatched" | "live"
    path: str
    model: str | None = None
    closest: dict | None = None  # for an unmatched request: the recorded call nearest to it, and how they differ


SEQ_HEADER = "x-agentprobe-serve-seq"  # from the proxy's playback addon: answer with this recorded call
MISS_HEADER = "x-agentprobe-serve-miss"  # from the playback addon: it matched nothing, say so


def _body_key(stored: bytes) -> str:
    return hashlib.sha256(stored).hexdigest()


def recorded_from_trace(trace: dict) -> list[Recorded]:
    """The calls of a trace file (as `agentprobe export` writes it) to answer with, no database needed."""
    bodies = trace.get("bodies") or {}

    def text(body_id):
        body = bodies.get(body_id) if body_id else None
        if body is None:
            return None
        if body.get("encoding") == "base64":
            import base64

            return base64.b64decode(body["content"]).decode("utf-8", "replace")
        return body["content"]

    out = []
    for c in sorted(trace.get("calls") or [], key=lambda c: c["seq"]):
        if c.get("api") is None or c.get("status") is None:
            continue
        request = text(c.get("request_body"))
        if request is None:
            continue
        headers = json.loads(c.get("response_headers") or "{}")
        response = bodies.get(c.get("response_body") or "") or {}
        out.append(Recorded(
            seq=c["seq"], api=c["api"], path=c["path"].split("?")[0], body_key=_body_key(request.encode()),
            conversation_id=c.get("conversation_id"), turn=c.get("turn"), status=c["status"],
            content_type=headers.get("content-type", "application/json"),
            body=(text(c.get("response_body")) or "").encode(), stream=bool(c.get("stream")),
            ttft_ms=c.get("ttft_ms"), latency_ms=c.get("latency_ms"), truncated=bool(response.get("truncated")),
            request=request, model=c.get("model"), provider=c.get("provider"), scheme=c.get("scheme"),
            host=c.get("host"), port=c.get("port")))
    return out


def load_recorded(db: sqlite_utils.Database, run_id: str) -> list[Recorded]:
    out = []
    for row in db.query(
        "SELECT c.seq, c.api, c.path, c.conversation_id, c.turn, c.status, c.stream, c.ttft_ms, c.latency_ms,"
        " c.model, c.provider, c.scheme, c.host, c.port,"
        " c.request_body, c.response_body, c.response_headers, rb.truncated AS truncated"
        " FROM calls c LEFT JOIN bodies rb ON rb.id = c.response_body"
        " WHERE c.run_id = ? AND c.api IS NOT NULL AND c.status IS NOT NULL ORDER BY c.seq",
        [run_id],
    ):
        request = body_text(db, row["request_body"])
        if request is None:
            continue
        headers = json.loads(row["response_headers"] or "{}")
        out.append(
            Recorded(
                seq=row["seq"],
                api=row["api"],
                path=row["path"].split("?")[0],
                body_key=_body_key(request.encode()),
                conversation_id=row["conversation_id"],
                turn=row["turn"],
                status=row["status"],
                content_type=headers.get("content-type", "application/json"),
                body=(body_text(db, row["response_body"]) or "").encode(),
                stream=bool(row["stream"]),
                ttft_ms=row["ttft_ms"],
                latency_ms=row["latency_ms"],
                truncated=bool(row["truncated"]),
                request=request,
                model=row["model"],
                provider=row["provider"],
                scheme=row["scheme"],
                host=row["host"],
                port=row["port"],
            )
        )
    return out


class Matcher:
    def __init__(self, recorded: list[Recorded]) -> None:
        self.recorded = recorded
        self.lock = threading.Lock()
        self.served: list[Served] = []
        self.by_prefix: dict[str, Recorded] = {}  # chained hash of a served message list -> its recording

    def match(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> Recorded | None:
        dialect = detect(method, "", path, body)
        key, chain, body_json = None, [], None
        if dialect is not None:
            try:
                body_json, _found = scrubbed_request(body, redact.secrets_in(headers, path))
                key = _body_key(stored_request_body(body_json))
                parsed = dialect.parse_request(body_json, path, "")
                # Only what generates has turns to follow (a token count of a conversation is not one of them).
                chain = RunTracker.chain(parsed.system_prompt, parsed.messages) if parsed.generates else []
            except ParseError:
                pass
        route = path.split("?")[0]
        with self.lock:
            hit, how = self._find(key, getattr(dialect, "name", None), chain)
            if hit is not None:
                hit.used = True
                if chain:
                    self.by_prefix.setdefault(chain[-1], hit)
            model = body_json.get("model") if isinstance(body_json, dict) else None
            closest = None if hit is not None else self._closest(body_json, getattr(dialect, "name", None))
            self.served.append(Served(hit.seq if hit else None, how, route, model, closest))
            return hit

    def by_seq(self, seq: int) -> Recorded | None:
        return next((r for r in self.recorded if r.seq == seq), None)

    def release(self, hit: Recorded) -> None:
        """The last match is not answered from the recording after all (it is sent live): undo it."""
        with self.lock:
            hit.used = False
            for prefix, r in list(self.by_prefix.items()):
                if r is hit:
                    del self.by_prefix[prefix]
            if self.served and self.served[-1].seq == hit.seq:
                last = self.served[-1]
                last.seq, last.how = None, "live"

    def note_live(self, path: str, model: str | None = None) -> None:
        with self.lock:
            self.served.append(Served(None, "live", path.split("?")[0], model))

    def _closest(self, body_json, api: str | None) -> dict | None:
        """The recorded request most like this one (same API first), and the first place they differ."""
        import difflib

        if not self.recorded:
            return None
        sent = stored_request_body(body_json).decode() if body_json is not None else ""
        pool = [r for r in self.recorded if r.api == api] or self.recorded
        best, best_ratio = None, -1.0
        for r in pool:
            ratio = difflib.SequenceMatcher(None, sent[:20000], r.request[:20000], autojunk=False).ratio()
            if ratio > best_ratio:
                best, best_ratio = r, ratio
        try:
            recorded_json = json.loads(best.request)
        except ValueError:
            recorded_json = None
        where, was, now = first_difference(recorded_json, body_json)
        return {"seq": best.seq, "model": best.model, "similarity": round(best_ratio, 3), "field": where,
                "recorded": _clip(was), "sent": _clip(now)}

    def _find(self, key, api, chain) -> tuple[Recorded | None, str]:
        if key is not None:
            same = [r for r in self.recorded if r.body_key == key]
            unused = [r for r in same if not r.used]
            if unused or same:  # an identical request asked again gets the last answer again
                return (unused or same)[0 if unused else -1], "body"
        for prefix in reversed(chain[1:-1]):
            earlier = self.by_prefix.get(prefix)
            if earlier is None or earlier.conversation_id is None:
                continue
            for r in self.recorded:
                if (not r.used and r.api == api and r.conversation_id == earlier.conversation_id
                        and r.turn == (earlier.turn or 0) + 1):
                    return r, "conversation"
            break
        return None, "unmatched"


_MISSING = object()


def first_difference(a, b, path: str = "") -> tuple[str, object, object]:
    """(JSON path, value in a, value in b) of the first place two JSON documents differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            va, vb = a.get(k, _MISSING), b.get(k, _MISSING)
            if va != vb:
                return first_difference(va, vb, f"{path}.{k}" if path else k)
        return path, None, None
    if isinstance(a, list) and isinstance(b, list):
        for i in range(max(len(a), len(b))):
            va = a[i] if i < len(a) else _MISSING
            vb = b[i] if i < len(b) else _MISSING
            if va != vb:
                return first_difference(va, vb, f"{path}[{i}]")
        return path, None, None
    return path or "(body)", None if a is _MISSING else a, None if b is _MISSING else b


def _clip(value, limit: int = 160):
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def describe_miss(served: "Served") -> str:
    """One line: the unmatched request and the recorded call closest to it."""
    head = f"{served.path}" + (f" ({served.model})" if served.model else "")
    c = served.closest
    if not c:
        return f"{head}: nothing recorded to compare it with"
    return (f"{head}: closest recorded call is seq {c['seq']} ({c['model']}, {c['similarity']:.0%} alike),"
            f" which differs at {c['field']}: recorded {c['recorded']!r}, sent {c['sent']!r}")


def unmatched_body(api: str | None, path: str, detail: str | None = None) -> bytes:
    message = (
        f"agentprobe serve: no recorded call matches this request to {path}; "
        "the agent took a different path than in the recording"
    ) + (f" ({detail})" if detail else "")
    family = provider_for("", api) if api else None
    if family == "anthropic":
        body = {"type": "error", "error": {"type": "not_found_error", "message": message}}
    elif family == "gemini":
        body = {"error": {"code": 404, "message": message, "status": "NOT_FOUND"}}
    else:
        body = {"error": {"message": message, "type": "invalid_request_error", "param": None,
                          "code": "unmatched_request"}}
    return json.dumps(body).encode()


def events(body: bytes) -> list[bytes]:
    """Split a recorded SSE body at event boundaries, keeping each separator with its event."""
    out, start = [], 0
    for m in _EVENT_END.finditer(body):
        out.append(body[start : m.end()])
        start = m.end()
    if start < len(body):
        out.append(body[start:])
    return out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: LocalHTTPServer  # with .matcher and .realtime set by ServeServer

    def log_message(self, *args) -> None:  # quiet: the summary reports what happened
        pass

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, "text/plain", b"ok")
        else:
            self._send(404, "application/json", unmatched_body(None, self.path))

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        matcher = self.server.matcher
        if self.headers.get(SEQ_HEADER):  # the proxy's playback addon matched it already
            hit = matcher.by_seq(int(self.headers[SEQ_HEADER]))
        elif self.headers.get(MISS_HEADER):
            hit = None
        else:
            hit = matcher.match("POST", self.path, list(self.headers.items()), body)
        if hit is None:
            from urllib.parse import unquote

            dialect = detect("POST", "", self.path, body)
            detail = unquote(self.headers.get(MISS_HEADER) or "")
            self._send(404, "application/json",
                       unmatched_body(getattr(dialect, "name", None), self.path, detail if len(detail) > 1 else None))
            return
        if hit.content_type.startswith("text/event-stream") and hit.status < 300:
            self._stream(hit)
        else:
            self._delay(hit.latency_ms)
            self._send(hit.status, hit.content_type, hit.body, served=hit.seq)

    def _delay(self, ms: float | None) -> None:
        if self.server.realtime and ms:
            time.sleep(ms / 1000)

    def _send(self, status: int, ctype: str, body: bytes, served: int | None = None) -> None:
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        if served is not None:
            self.send_header("x-agentprobe-served-seq", str(served))
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, hit: Recorded) -> None:
        self._delay(hit.ttft_ms)
        self.send_response(hit.status)
        self.send_header("content-type", hit.content_type)
        self.send_header("transfer-encoding", "chunked")
        self.send_header("x-agentprobe-served-seq", str(hit.seq))
        self.end_headers()
        chunks = events(hit.body)
        gap = None
        if self.server.realtime and hit.latency_ms and hit.ttft_ms is not None and len(chunks) > 1:
            gap = max(0.0, hit.latency_ms - hit.ttft_ms) / 1000 / (len(chunks) - 1)
        for i, chunk in enumerate(chunks):
            if gap and i:
                time.sleep(gap)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")


@dataclass
class ServeServer:
    recorded: list[Recorded]
    host: str = "127.0.0.1"
    port: int = 0
    realtime: bool = False
    matcher: Matcher = field(init=False)

    def __post_init__(self) -> None:
        self._server = LocalHTTPServer((self.host, self.port), _Handler)
        self.load(self.recorded)
        self._server.realtime = self.realtime
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="agentprobe-serve", daemon=True)

    def load(self, recorded: list[Recorded]) -> Matcher:
        """Answer from another recording from now on (the pytest plugin: each test's cassette)."""
        self.recorded = recorded
        self.matcher = self._server.matcher = Matcher(recorded)
        return self.matcher

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "ServeServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def summary(self) -> dict:
        served = self.matcher.served
        return {
            "requests": len(served),
            "matched_by_body": sum(s.how == "body" for s in served),
            "matched_by_conversation": sum(s.how == "conversation" for s in served),
            "unmatched": [{"request": i + 1, "path": s.path, "closest": s.closest, "why": describe_miss(s)}
                          for i, s in enumerate(served) if s.how == "unmatched"],
            "live": [{"request": i + 1, "path": s.path, "model": s.model} for i, s in enumerate(served)
                     if s.how == "live"],
            "never_requested": [r.seq for r in self.recorded if not r.used],
        }
