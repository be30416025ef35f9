"""MCP exchanges -> `calls` rows: one row per JSON-RPC request, with the answer it got.

Streamable HTTP and stdio answer in the same exchange (the Capture holds both). The legacy
HTTP+SSE transport answers on the session's GET stream: its POST rows are written at once
(`202 Accepted`) and completed, by row updates, when the stream's capture arrives, with each
answer's own arrival time and completion number (`Capture.marks`).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..providers import mcp
from ..util.hashing import canonical_json, sha256_json, sha256_text
from ..util.clock import iso
from ..util.lru import LRU
from . import redact
from .tool_links import ToolLinks, arguments_digest

if TYPE_CHECKING:
    from .exchange import Capture
    from .rows import Rows

# How much of a tool call's (redacted) arguments the row keeps in tool_arguments; the hash covers all.
ARGUMENTS_KEPT = 4000
SESSIONS_REMEMBERED = 1_000
PENDING_REMEMBERED = 10_000
# Values a client or server can replay as a capability: kept out of every stored body.
_OPAQUE_FIELDS = ("requestState",)


def session_digest(session: str | None) -> str | None:
    """A session id is a bearer capability on stateful servers: only a short digest of it is stored."""
    return (sha256_text(session) or "")[:16] if session else None


def scrub(value: Any, secrets: list[str]) -> Any:
    """scrub_json, and MCP's opaque state tokens replaced."""
    value = redact.scrub_json(value, secrets)
    return _drop_opaque(value)


def _drop_opaque(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: (redact.REDACTED if k in _OPAQUE_FIELDS and isinstance(v, str) else _drop_opaque(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_drop_opaque(v) for v in value]
    return value


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


@dataclass
class _Pending:
    call_id: str
    started: float
    method: str | None
    name: str | None
    arguments: str | None


@dataclass
class McpState:
    """Per run: who each endpoint and session is, legacy requests waiting for their answer, tool links."""

    links: ToolLinks = field(default_factory=ToolLinks)
    servers: LRU = field(default_factory=lambda: LRU(SESSIONS_REMEMBERED))  # endpoint or session -> server name
    pending: LRU = field(default_factory=lambda: LRU(PENDING_REMEMBERED))  # (session, id) -> [_Pending]
    by_session: LRU = field(default_factory=lambda: LRU(SESSIONS_REMEMBERED))  # session -> {(session, id)}


def transport_of(cap: Capture) -> str:
    if cap.scheme == "stdio":
        return "stdio"
    if mcp.endpoint_session(cap.path) and not _header(cap.request_headers, "mcp-session-id"):
        return "http+sse"
    return "streamable_http"


def endpoint(cap: Capture) -> str:
    return f"{cap.scheme}://{cap.host}:{cap.port}{cap.path.split('?', 1)[0]}"


def fill_request(call: dict, cap: Capture, req: mcp.Request, transport: str, state: McpState,
                 secrets: list[str]) -> str | None:
    """The request's side of the row; returns the session key (a digest) when there is one."""
    # (stdio has no sessions, and its path is the server's command)
    session = None if transport == "stdio" else \
        _header(cap.request_headers, "mcp-session-id") or mcp.endpoint_session(cap.path)
    if session is None and req.method == "initialize":
        session = _header(cap.response_headers, "mcp-session-id")  # the server names it in its answer
    key = session_digest(session)
    call.update(
        provider=mcp.PROVIDER,
        mcp_method=req.method,
        mcp_name=req.target,
        mcp_id=req.id,
        mcp_transport=transport,
        mcp_session=key,
        mcp_protocol=_header(cap.request_headers, "mcp-protocol-version") or req.protocol,
    )
    if req.method in ("tools/call", "prompts/get") and req.kind == "request":
        args = req.arguments if req.arguments is not None else {}
        text = canonical_json(args)
        call["tool_arguments"] = text[:ARGUMENTS_KEPT]
        call["arguments_sha256"] = arguments_digest(args)
    call["mcp_server"] = state.servers.get(key) if key else None
    call["mcp_server"] = call["mcp_server"] or state.servers.get(endpoint(cap))
    return key


def fill_answer(call: dict, resp: mcp.Response, rows: Rows, secrets: list[str]) -> None:
    """The answer's side: isError, JSON-RPC errors, tool schemas, the server's name."""
    call["tool_is_error"] = None if resp.is_error is None else int(resp.is_error)
    call["rpc_error_code"] = resp.error_code
    if resp.error_code is not None or (resp.found and resp.error_message and resp.is_error is None):
        call["error_type"] = "rpc_error"
    elif resp.is_error:
        call["error_type"] = "tool_error"
    elif resp.found:
        call["error_type"] = None  # answered: a hang-up after the final event is no failure
        call["error_message"] = None
    if resp.error_message:
        call["error_message"] = redact.scrub_text(resp.error_message, secrets)[:2000]
    if resp.server:
        call["mcp_server"] = resp.server
    if resp.protocol and call.get("mcp_method") in ("initialize", "server/discover"):
        call["mcp_protocol"] = resp.protocol
    if resp.tools is not None:
        tools = scrub(resp.tools, secrets)
        call["tools_sha256"] = sha256_json(tools)
        rows.prompts.append({"sha256": call["tools_sha256"], "kind": "tools", "text": canonical_json(tools)})


def at_offset(cap: Capture, end: int) -> tuple[float, int] | None:
    """(time, completion number) of the chunk that completed the event ending at byte `end` of the body."""
    marks = cap.marks or []
    i = bisect.bisect_left([m[0] for m in marks], end)
    if i >= len(marks):
        return None
    _, at, first, n = marks[i]
    # Events ended in one chunk share its numbers in order; which of them this one is, we count here.
    earlier = sum(1 for e in mcp.sse_events(cap.response_body[marks[i - 1][0] if i else 0:end]) if e.end)
    return at, first + min(max(earlier - 1, 0), n - 1)


def answered_at(call: dict, cap: Capture, resp: mcp.Response) -> None:
    """A streamed answer completes the call when its event arrived, not when the stream closed."""
    found = at_offset(cap, resp.end) if resp.end is not None and cap.marks else None
    if found is None:
        return
    at, completion = found
    call.update(ended_at=iso(at), latency_ms=round((at - cap.started_at) * 1000, 3), completion_seq=completion)


def remember(state: McpState, call: dict, cap: Capture, key: str | None) -> None:
    server = call.get("mcp_server")
    if server:
        state.servers[endpoint(cap)] = server
        if key:
            state.servers[key] = server


def wait_for_stream(state: McpState, call: dict, key: str, req: mcp.Request, started: float) -> None:
    """A legacy POST: its answer will come on the session's stream."""
    slot = (key, req.id)
    waiting = state.pending.get(slot)
    if waiting is None:
        waiting = state.pending[slot] = []
    waiting.append(_Pending(call["id"], started, req.method, req.target, call.get("arguments_sha256")))
    keys = state.by_session.get(key)
    if keys is None:
        keys = state.by_session[key] = set()
    keys.add(slot)


def stream_rows(cap: Capture, rows: Rows, state: McpState, secrets: list[str], body_row) -> bool:
    """A GET event stream. False when it is no MCP stream (then it stays an unknown call, body unstored)."""
    body = cap.response_body or b""
    events = mcp.sse_events(body)
    session = None
    if events and events[0].name == "endpoint":
        session = mcp.endpoint_session(events[0].data)
        transport = "http+sse"
    elif any(mcp.event_messages(e) for e in events) or _header(cap.request_headers, "mcp-session-id"):
        session = _header(cap.request_headers, "mcp-session-id")
        transport = "streamable_http"
    else:
        return False
    if session:
        secrets = sorted({*secrets, session}, key=len, reverse=True)
    key = session_digest(session)
    call = rows.call
    call.update(provider=mcp.PROVIDER, mcp_transport=transport, mcp_session=key,
                mcp_server=state.servers.get(key) if key else None)
    if cap.client_disconnected:
        # A session's stream ends when the client leaves: that is how it is closed, not a failure.
        call["error_type"] = call["error_message"] = None
    stored = body_row(redact.scrub_text(body.decode("utf-8", "replace"), secrets).encode(),
                      _header(cap.response_headers, "content-type"), cap.response_truncated)
    if stored:
        rows.bodies.append(stored)
        call["response_body"] = stored["id"]
    if transport == "http+sse" and key:
        _answer_legacy(cap, rows, state, key, events, secrets, body_row)
    return True


def _answer_legacy(cap: Capture, rows: Rows, state: McpState, key: str, events: list, secrets: list[str],
                   body_row) -> None:
    marks = cap.marks or []
    offsets = [m[0] for m in marks]
    used = [0] * len(marks)
    server = state.servers.get(key)
    answered = []
    for event in events:
        # The chunk that completed this event gives its time and completion number.
        i = bisect.bisect_left(offsets, event.end)
        if i < len(marks):
            _, at, first, n = marks[i]
            completion = first + min(used[i], n - 1)
            used[i] += 1
        else:
            at, completion = cap.ended_at, cap.completion_seq
        for m in mcp.event_messages(event):
            if m.kind not in ("result", "error") or m.id is None:
                continue
            waiting = state.pending.get((key, m.id)) or []
            pending = next((p for p in waiting if p.started <= at), None)
            if pending is None:
                continue
            waiting.remove(pending)
            resp = mcp.read_answer(m)
            server = resp.server or server
            answered.append((pending, resp, at, completion, event))
    if server:
        state.servers[key] = server
    for pending, resp, at, completion, event in answered:
        fields: dict[str, Any] = {}
        fill_answer(fields, resp, rows, secrets)
        fields.update(completion_seq=completion, ended_at=iso(at), latency_ms=round((at - pending.started) * 1000, 3),
                      mcp_server=server)
        if pending.method not in ("initialize", "server/discover"):
            fields.pop("mcp_protocol", None)
        if "error_type" not in fields:
            fields["error_type"] = None
        stored = body_row(redact.scrub_text(event.data, secrets).encode(), "application/json", False)
        if stored:
            rows.bodies.append(stored)
            fields["response_body"] = stored["id"]
        rows.updates.append((pending.call_id, fields))
    # The stream is over: what is still waiting on this session will never be answered.
    for slot in state.by_session.get(key) or ():
        for pending in state.pending.get(slot) or ():
            rows.updates.append((pending.call_id, {"error_type": "no_answer",
                                                   "error_message": "the session's event stream ended first"}))
        state.pending[slot] = []
    state.by_session[key] = set()
