"""MCP on the wire: detection and rows, from exchanges captured with the official SDK (mcp 2.3.0).

The captures (mcp_captures/*.jsonl) were made through mitmdump: each line is one HTTP exchange
with its request, its response and every response chunk with its arrival time (t_ms).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from agentprobe.addons.stream_tee import StreamTee
from agentprobe.capture.exchange import Capture
from agentprobe.capture.rows import RowBuilder
from agentprobe.providers import anthropic, detect, mcp, openai_chat

HERE = Path(__file__).parent / "mcp_captures"


def exchanges(name: str) -> list[dict]:
    return [json.loads(line) for line in (HERE / f"{name}.jsonl").read_text().splitlines()]


def _headers(pairs) -> dict[str, str]:
    return {k.lower(): v for k, v in pairs}


def capture(x: dict, completion: int, *, marks: bool = True) -> Capture:
    """The Capture the recorder would hand over for a captured exchange, the stream tee run over its chunks."""
    req, resp = x["request"], x.get("response") or {}
    body = req["body"].encode() if req.get("body") else None
    dialect = mcp.detect(req["method"], _headers(req["headers"]), body) or detect(req["method"], "", req["path"], body)
    rheaders = _headers(resp.get("headers", []))
    kept, tee_marks = (resp.get("body") or "").encode(), None
    if dialect is None and req["method"] == "GET" and rheaders.get("content-type", "").startswith("text/event-stream"):
        dialect = mcp
        if marks:
            counter = iter(range(1000, 10_000))
            tee = StreamTee(SimpleNamespace(response=SimpleNamespace(headers=rheaders)), None, 1 << 20,
                            (lambda n: [next(counter) for _ in range(n)][0], []))
            for chunk in resp.get("chunks", []):
                before = len(tee.marks)
                tee(chunk["data"].encode())
                # The chunk's captured arrival time, not now.
                tee.marks[before:] = [(o, x["t_request"] + chunk["t_ms"] / 1000, f, n) for o, _, f, n in tee.marks[before:]]
            tee(b"")
            kept, tee_marks = bytes(tee.kept), tee.marks
    error = x.get("error")
    return Capture(seq=x["seq"], completion_seq=completion, started_at=x["t_request"], ended_at=x["t_end"],
                   method=req["method"], scheme="http", host="127.0.0.1", port=8765, path=req["path"],
                   request_headers=[tuple(h) for h in req["headers"]], request_body=body, dialect=dialect,
                   status=resp.get("status"), response_headers=[tuple(h) for h in resp.get("headers", [])],
                   response_body=kept, error=error, client_disconnected=bool(error and "disconnected" in error.lower()),
                   marks=tee_marks)


def build(name: str, **kw) -> tuple[list[dict], list[tuple[str, dict]]]:
    """Rows for a capture, in the order the writer gets them (completion order), with updates applied."""
    builder = RowBuilder("run")
    calls, updates = {}, []
    for k, x in enumerate(sorted(exchanges(name), key=lambda x: x["t_end"]), 1):
        rows = builder.build(capture(x, k, **kw))
        calls[rows.call["id"]] = rows.call
        updates += rows.updates
    for call_id, fields in updates:
        calls[call_id].update(fields)
    return sorted(calls.values(), key=lambda c: c["seq"]), updates


def summary(calls: list[dict]) -> list[tuple]:
    return [(c["method"], c.get("mcp_method"), c.get("mcp_name"), c.get("tool_is_error"), c.get("rpc_error_code"),
             c.get("error_type")) for c in calls]


@pytest.mark.parametrize("name", ["http_2026-07-28_sse", "http_2025-11-25_sse", "sse_transport_2024-11-05",
                                  "http_auto_vs_v1_server", "http_raw_probes", "sse_transport_auto"])
def test_every_post_is_mcp_and_none_is_an_llm_call(name):
    """The legacy transport POSTs to /messages/?session_id=: not Anthropic's messages API."""
    posts = [x["request"] for x in exchanges(name) if x["request"]["method"] == "POST"]
    assert posts
    for req in posts:
        body = req["body"].encode() if req.get("body") else None
        assert detect("POST", "127.0.0.1", req["path"], body) is None, req["path"]
        assert mcp.detect("POST", _headers(req["headers"]), body) is mcp


def test_llm_bodies_stay_llm_even_when_they_talk_about_json_rpc():
    prompt = json.dumps({"model": "m", "max_tokens": 5, "messages": [
        {"role": "user", "content": 'explain {"jsonrpc": "2.0", "method": "tools/call"}'}]}).encode()
    assert mcp.detect("POST", {}, prompt) is None
    assert detect("POST", "api.anthropic.com", "/v1/messages", prompt) is anthropic
    assert detect("POST", "x", "/v1/chat/completions", prompt) is openai_chat
    assert mcp.looks_like_jsonrpc(b'  {"id":1,"method":"tools/list","jsonrpc":"2.0"}')
    big = b'{"id":1,"params":{"blob":"' + b"x" * 10_000 + b'"},"method":"tools/call","jsonrpc" : "2.0"}'
    assert mcp.looks_like_jsonrpc(big)  # the member at the end, past the first 4 KB
    assert mcp.detect("POST", {"mcp-session-id": "abc"}, b"") is mcp
    assert mcp.detect("GET", {"mcp-session-id": "abc"}, b"") is None
    assert mcp.has_mcp_headers([(b"Host", b"x"), (b"Mcp-Session-Id", b"abc")])
    assert not mcp.has_mcp_headers([(b"Mcp-Name", b"x"), (b"mcp-session-id", b"")])
    escaped = json.dumps({"model": "m", "messages": [{"content": '{"jsonrpc":"2.0"}'}]}).encode()
    assert not mcp.looks_like_jsonrpc(escaped)
    assert mcp.looks_like_jsonrpc(b'{"x":"\\"jsonrpc\\"", "jsonrpc":"2.0","id":1}')


def test_streamable_http_2026_rows():
    calls, _ = build("http_2026-07-28_sse")
    assert summary(calls) == [
        ("POST", "server/discover", None, None, None, None),
        ("POST", "tools/list", None, None, None, None),
        ("POST", "tools/call", "slow_lookup", 0, None, None),  # answered on SSE after two progress events
        ("POST", "tools/call", "fast_lookup", 0, None, None),
        ("POST", "tools/call", "broken", 1, None, "tool_error"),
        ("POST", "tools/call", "confirm", None, None, None),  # input_required
        ("POST", "tools/call", "confirm", 0, None, None),  # its retry, a new id
        ("POST", "tools/call", "explode", 1, None, "tool_error"),
        ("POST", "tools/call", "no_such_tool", 1, None, "tool_error"),  # an unknown tool is no JSON-RPC error
        ("POST", "prompts/get", "nope", None, -32603, "rpc_error"),
        ("POST", "resources/read", "file:///nope", None, -32602, "rpc_error"),
    ]
    assert {c["provider"] for c in calls} == {"mcp"} and all(c.get("api") is None for c in calls)
    assert {(c["mcp_transport"], c["mcp_protocol"], c["mcp_server"], c["mcp_session"]) for c in calls} == {
        ("streamable_http", "2026-07-28", "wire-probe", None)}
    fast = calls[3]
    # Arguments are redacted as request bodies are: a field named like a credential ("key") is replaced.
    assert (fast["mcp_id"], json.loads(fast["tool_arguments"])) == ("4", {"key": "[REDACTED]", "region": "eu-west1"})
    assert fast["arguments_sha256"] and calls[1]["tools_sha256"]
    assert "Mcp-Param-Region" not in fast["request_headers"] and "mcp-param-region" not in fast["request_headers"]
    assert json.loads(fast["request_headers"])["mcp-name"] == "fast_lookup"
    assert calls[4]["error_message"] == "broken: testing"


def test_handshake_era_rows_carry_the_session_as_a_digest():
    calls, _ = build("http_2025-11-25_sse")
    session = next(c for c in calls if c.get("mcp_method") == "initialize")
    raw = _headers(exchanges("http_2025-11-25_sse")[0]["response"]["headers"])["mcp-session-id"]
    assert session["mcp_session"] and len(session["mcp_session"]) == 16 and session["mcp_session"] not in raw
    mcp_calls = [c for c in calls if c["provider"] == "mcp"]
    assert {c["mcp_session"] for c in mcp_calls} == {session["mcp_session"]}
    assert all(raw not in (c["request_headers"] + c["response_headers"]) for c in calls)
    assert [c.get("mcp_method") for c in mcp_calls][:3] == ["initialize", "notifications/initialized", None]
    assert next(c for c in mcp_calls if c.get("mcp_name") == "prompts/get" or c.get("mcp_method") == "prompts/get")[
        "rpc_error_code"] == 0  # the handshake-era server's code for an unknown prompt
    assert {c["mcp_protocol"] for c in mcp_calls if c["method"] == "POST"} == {"2025-11-25"}


def test_fallback_from_discover_to_initialize():
    calls, _ = build("http_auto_vs_v1_server")
    assert summary(calls)[:2] == [("POST", "server/discover", None, None, -32600, "rpc_error"),
                                  ("POST", "initialize", None, None, None, None)]
    assert calls[0]["status"] == 400 and calls[1]["mcp_protocol"] == "2025-11-25"


def test_legacy_sse_answers_complete_their_posts_in_stream_order():
    """Each answer on the GET /sse stream completes its POST (by session and id), with the time and a
    completion number of the chunk that carried it: fast_lookup (id 4) finished before slow_lookup (id 3)."""
    calls, updates = build("sse_transport_2024-11-05")
    by_name = {c.get("mcp_name"): c for c in calls if c.get("mcp_method") == "tools/call"}
    slow, fast = by_name["slow_lookup"], by_name["fast_lookup"]
    assert slow["seq"] < fast["seq"] and slow["completion_seq"] > fast["completion_seq"] >= 1000
    assert slow["latency_ms"] > 450 > fast["latency_ms"]
    assert (by_name["broken"]["tool_is_error"], by_name["broken"]["error_type"]) == (1, "tool_error")
    assert by_name["confirm"]["rpc_error_code"] == -32601  # the client refused the server's elicitation
    stream = next(c for c in calls if c["method"] == "GET")
    assert (stream["provider"], stream["mcp_transport"], stream["error_type"]) == ("mcp", "http+sse", None)
    assert {c["mcp_transport"] for c in calls if c["method"] == "POST"} == {"http+sse"}
    assert {c["mcp_server"] for c in calls if c.get("mcp_method") == "tools/call"} == {"wire-probe"}
    session = mcp.endpoint_session(exchanges("sse_transport_2024-11-05")[0]["request"]["path"])
    assert all(session not in c["path"] for c in calls)
    # Every request got its answer; notifications and the client's own reply wait for none.
    assert all(c.get("error_type") in (None, "tool_error", "rpc_error") for c in calls)


def test_legacy_answers_without_marks_take_the_stream_end():
    calls, _ = build("sse_transport_2024-11-05", marks=False)
    stream = next(c for c in calls if c["method"] == "GET")
    assert {c["completion_seq"] for c in calls if c.get("mcp_method") == "tools/call"} == {stream["completion_seq"]}


def test_legacy_post_whose_stream_ends_first_has_no_answer():
    builder = RowBuilder("run")
    xs = exchanges("sse_transport_2024-11-05")
    post = next(x for x in xs if '"tools/call"' in (x["request"].get("body") or ""))
    stream = next(x for x in xs if x["request"]["method"] == "GET")
    stream = {**stream, "response": {**stream["response"], "chunks": stream["response"]["chunks"][:1],
                                     "body": stream["response"]["chunks"][0]["data"]}}
    first = builder.build(capture(post, 1))
    rows = builder.build(capture(stream, 2))
    assert rows.updates == [(first.call["id"], {"error_type": "no_answer",
                                                "error_message": "the session's event stream ended first"})]


def test_sse_events_and_batches():
    body = b'event: endpoint\r\ndata: /m?session_id=abc\r\n\r\n: ping\r\n\r\ndata: {"a":\ndata: 1}\n\ndata: cut'
    events = mcp.sse_events(body)
    assert [(e.name, e.data) for e in events] == [("endpoint", "/m?session_id=abc"), ("message", '{"a":\n1}')]
    assert mcp.endpoint_session(events[0].data) == "abc"
    batch = mcp.messages([{"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                          {"jsonrpc": "2.0", "method": "notifications/initialized"}, {"no": "rpc"}])
    assert [(m.kind, m.id, m.method) for m in batch] == [("request", "1", "tools/list"),
                                                         ("notification", None, "notifications/initialized")]
    assert mcp.id_key(1) != mcp.id_key("1")
    assert mcp.read_request(batch).batch == 2
