"""MCP: JSON-RPC 2.0 between an agent and its tool servers, over HTTP or stdio.

Pure: bytes and headers in, normalized facts out. The wire has two eras on the same
`POST` (the handshake revisions 2024-11-05 .. 2025-11-25, opened by `initialize`, with an
`Mcp-Session-Id`; and 2026-07-28, opened by an optional `server/discover`, with no session
and `MCP-Protocol-Version`/`Mcp-Method`/`Mcp-Name` on every request) and three transports:
streamable HTTP (the answer comes back in the same exchange, as JSON or as SSE), the legacy
HTTP+SSE transport (POSTs get `202 Accepted`; every answer arrives on one long-lived
`GET` event stream, whose first event names the POST endpoint and its session) and stdio
(one compact JSON message per line).

MCP is no LLM dialect: its calls are recorded with provider `mcp` and no `api`, so the rules
about models, sampling and tokens never see them; the tool rules read the columns this fills.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

name = "mcp"
PROVIDER = "mcp"

# Client methods of every revision, and the prefixes of the method families.
METHODS = frozenset({"initialize", "server/discover", "ping"})
METHOD_PREFIXES = ("tools/", "resources/", "prompts/", "notifications/", "completion/", "logging/",
                   "sampling/", "elicitation/", "roots/", "tasks/", "subscriptions/")
# Request headers only MCP clients send (any one of them is enough).
HEADERS = ("mcp-session-id", "mcp-protocol-version", "mcp-method")
# What names the target of a method: the tool, the prompt, the resource.
_TARGET = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri", "resources/subscribe": "uri",
           "resources/unsubscribe": "uri"}
_META_PREFIX = "io.modelcontextprotocol/"
# Query parameters that name a legacy HTTP+SSE session (the Python SDK's, the TypeScript SDK's).
SESSION_QUERY_KEYS = ("session_id", "sessionid")

# The recorder may look at this much of each end of a request body, no more: it runs on the event loop.
_PROBE_BYTES = 4096
# A real "jsonrpc": "2.0" member; inside a JSON string (a prompt that quotes one) the quotes are escaped.
_KEY = b'"jsonrpc"'
_VALUE = re.compile(rb'\s*:\s*"2\.0"')
_HEADER_PREFIX = b"mcp-"
_HEADER_NAMES = frozenset(h.encode() for h in HEADERS)


def is_method(method: Any) -> bool:
    return isinstance(method, str) and (method in METHODS or method.startswith(METHOD_PREFIXES))


def looks_like_jsonrpc(body: bytes | None) -> bool:
    """A cheap, bounded test of a request body (the recorder's); the writer reads the body to be sure."""
    if not body or body[:64].lstrip()[:1] not in (b"{", b"["):
        return False
    n = len(body)
    windows = ((0, min(n, _PROBE_BYTES)),) if n <= 2 * _PROBE_BYTES else ((0, _PROBE_BYTES), (n - _PROBE_BYTES, n))
    for start, end in windows:
        i = body.find(_KEY, start, end)  # no copy, C speed: most bodies stop here
        while 0 <= i:
            if (i == 0 or body[i - 1] != 0x5C) and _VALUE.match(body, i + len(_KEY), i + len(_KEY) + 32):
                return True
            i = body.find(_KEY, i + 1, end)
    return False


def has_mcp_headers(fields) -> bool:
    """Any MCP request header, in mitmproxy's raw header fields ((name, value) bytes), in one pass."""
    for name, value in fields:
        if name[:4].lower() == _HEADER_PREFIX and name.lower() in _HEADER_NAMES and value:
            return True
    return False


def detect(method: str, headers, body: bytes | None):
    """This module for an MCP request (`headers`: anything with a case-insensitive `get`), else None."""
    if method.upper() != "POST":
        return None
    if any(headers.get(h) for h in HEADERS) or looks_like_jsonrpc(body):
        return sys.modules[__name__]
    return None


def id_key(value: Any) -> str:
    """A JSON-RPC id as typed JSON text: 1 and "1" are different ids."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


@dataclass
class Message:
    kind: str  # request | notification | result | error
    id: str | None  # id_key of the id, None for notifications
    method: str | None = None
    params: dict = field(default_factory=dict)
    result: Any = None
    error: dict | None = None


def message(value: Any) -> Message | None:
    """One JSON-RPC 2.0 message, or None for anything else."""
    if not isinstance(value, dict) or value.get("jsonrpc") != "2.0":
        return None
    ident = id_key(value["id"]) if "id" in value else None
    method = value.get("method")
    params = value.get("params") if isinstance(value.get("params"), dict) else {}
    if isinstance(method, str):
        return Message("request" if ident is not None else "notification", ident, method, params)
    if "error" in value:
        return Message("error", ident, error=value["error"] if isinstance(value["error"], dict) else {})
    if "result" in value:
        return Message("result", ident, result=value["result"])
    return None


def messages(value: Any) -> list[Message]:
    """The messages of a body: one object, or a batch (an array)."""
    items = value if isinstance(value, list) else [value]
    return [m for m in (message(item) for item in items) if m is not None]


def is_mcp(msgs: list[Message]) -> bool:
    """Whether these messages are MCP: JSON-RPC with an MCP method, or answers (whose methods the request named)."""
    return any(m.method is None or is_method(m.method) for m in msgs)


@dataclass
class Request:
    """What a request body says (the first request of a batch, else its first message)."""

    kind: str  # request | notification | result | error (a client answering a server's request)
    id: str | None
    method: str | None
    target: str | None = None  # tools/call and prompts/get: the name; resources/read: the URI
    arguments: Any = None  # tools/call params.arguments, prompts/get params.arguments
    protocol: str | None = None  # initialize params.protocolVersion, else the 2026 _meta envelope's
    client: str | None = None  # clientInfo name
    retry_of_input: bool = False  # a 2026 retry answering an InputRequiredResult (requestState)
    batch: int = 1
    cancels: str | None = None  # notifications/cancelled: the id_key it cancels


def read_request(msgs: list[Message]) -> Request | None:
    if not msgs:
        return None
    first = next((m for m in msgs if m.kind == "request"), msgs[0])
    params = first.params
    meta = params.get("_meta") if isinstance(params.get("_meta"), dict) else {}
    req = Request(kind=first.kind, id=first.id, method=first.method, batch=len(msgs))
    key = _TARGET.get(first.method or "")
    if key and isinstance(params.get(key), str):
        req.target = params[key]
    if first.method in ("tools/call", "prompts/get"):
        req.arguments = params.get("arguments")
    protocol = params.get("protocolVersion") if first.method == "initialize" else meta.get(_META_PREFIX + "protocolVersion")
    req.protocol = protocol if isinstance(protocol, str) else None
    info = params.get("clientInfo") if first.method == "initialize" else meta.get(_META_PREFIX + "clientInfo")
    if isinstance(info, dict) and isinstance(info.get("name"), str):
        req.client = info["name"]
    req.retry_of_input = "requestState" in params or "inputResponses" in params
    if first.method == "notifications/cancelled" and "requestId" in params:
        req.cancels = id_key(params["requestId"])
    return req


@dataclass
class Response:
    """The final answer to one request, as far as it was seen."""

    found: bool = False  # a result or error for the request arrived
    id: str | None = None
    is_error: bool | None = None  # result.isError (tools/call)
    error_code: int | None = None  # a JSON-RPC error's code
    error_message: str | None = None  # the JSON-RPC error's message, or an isError result's first text
    result_type: str | None = None  # 2026: complete | input_required
    tools: list | None = None  # tools/list: the tool schemas as listed
    server: str | None = None  # serverInfo name (initialize, or the 2026 _meta envelope on any result)
    protocol: str | None = None  # the version an initialize result chose, or the one discover offers
    notifications: int = 0  # messages before the answer (progress, log) in an SSE answer
    server_requests: list[str] = field(default_factory=list)  # methods the server asked the client (elicitation)
    index: int | None = None  # which of the messages read was the answer
    end: int | None = None  # SSE: the byte offset just past the event that carried the answer


def _text_of(result: dict) -> str | None:
    for block in result.get("content") or []:
        if isinstance(block, dict) and isinstance(block.get("text"), str):
            return block["text"]
    return None


def read_answer(m: Message, out: Response | None = None) -> Response:
    out = out or Response()
    out.found, out.id = True, m.id
    if m.kind == "error":
        code = m.error.get("code") if m.error else None
        out.error_code = code if isinstance(code, int) and not isinstance(code, bool) else None
        text = m.error.get("message") if m.error else None
        out.error_message = text if isinstance(text, str) else "JSON-RPC error"
        return out
    result = m.result if isinstance(m.result, dict) else {}
    if isinstance(result.get("isError"), bool):
        out.is_error = result["isError"]
        if out.is_error:
            out.error_message = _text_of(result) or "the tool reported an error (isError)"
    if isinstance(result.get("resultType"), str):
        out.result_type = result["resultType"]
    if isinstance(result.get("tools"), list):
        out.tools = result["tools"]
    info = result.get("serverInfo")
    meta = result.get("_meta") if isinstance(result.get("_meta"), dict) else {}
    if not isinstance(info, dict):
        info = meta.get(_META_PREFIX + "serverInfo")
    if isinstance(info, dict) and isinstance(info.get("name"), str):
        out.server = info["name"]
    if isinstance(result.get("protocolVersion"), str):
        out.protocol = result["protocolVersion"]
    elif isinstance(result.get("supportedVersions"), list) and result["supportedVersions"]:
        first = result["supportedVersions"][0]
        out.protocol = first if isinstance(first, str) else None
    return out


# -- server-sent events ---------------------------------------------------------------------------

_LINE = re.compile(rb"([^\r\n]*)(\r\n|\n|\r|$)")


@dataclass
class Event:
    name: str  # the `event:` field, "message" when absent
    data: str
    end: int  # byte offset just past the blank line that ended it


def sse_events(body: bytes) -> list[Event]:
    """The complete events of an SSE body (an unfinished last event is left out)."""
    out: list[Event] = []
    name, data = "", []
    for match in _LINE.finditer(body):
        line, ending = match.group(1), match.group(2)
        if not ending:
            break  # the last line, unterminated: its event never completed
        if not line:
            if data or name:
                out.append(Event(name or "message", "\n".join(data), match.end()))
            name, data = "", []
            continue
        if line.startswith(b":"):
            continue
        key, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if key == b"event":
            name = value.decode("utf-8", "replace")
        elif key == b"data":
            data.append(value.decode("utf-8", "replace"))
    return out


def event_messages(event: Event) -> list[Message]:
    if event.name not in ("message", ""):
        return []
    try:
        return messages(json.loads(event.data))
    except ValueError:
        return []


def endpoint_session(uri: str) -> str | None:
    """The session a legacy `endpoint` event (or a POST's path) names in its query."""
    for key, value in parse_qsl(urlsplit(uri).query, keep_blank_values=True):
        if key.lower() in SESSION_QUERY_KEYS and value:
            return value
    return None


def answer_in(msgs: list[Message], want: str | None, out: Response | None = None) -> Response:
    """The answer to request `want` among `msgs`, in order; notifications before it are counted.

    Over streamable HTTP the exchange pairs request and answer, so an answer whose id matches
    nothing (`null` for a rejected body, a foreign one) is still this request's answer.
    """
    out = out or Response()
    fallback = None
    for i, m in enumerate(msgs):
        if m.kind in ("result", "error"):
            if want is None or m.id == want:
                out.index = i
                return read_answer(m, out)
            if fallback is None:
                fallback, out.index = m, i
        elif m.kind == "notification":
            out.notifications += 1
        elif m.kind == "request":
            out.server_requests.append(m.method or "")
    if fallback is not None:
        return read_answer(fallback, out)
    return out


def read_response(body: bytes | None, content_type: str | None, want: str | None) -> Response:
    """The answer in a streamable HTTP response body (JSON, or SSE events)."""
    if not body:
        return Response()
    if (content_type or "").lower().startswith("text/event-stream"):
        pairs = [(m, e.end) for e in sse_events(body) for m in event_messages(e)]
        out = answer_in([m for m, _ in pairs], want)
        if out.found and out.index is not None:
            out.end = pairs[out.index][1]
        return out
    try:
        return answer_in(messages(json.loads(body)), want)
    except ValueError:
        return Response()

