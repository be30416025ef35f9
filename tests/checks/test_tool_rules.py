"""The tool-level rules and the tool-call links, over rows the real writer builds from synthetic captures."""

from __future__ import annotations

import json
import time

import sqlite_utils

from agentprobe.capture.exchange import Capture
from agentprobe.capture.rows import RowBuilder
from agentprobe.checks import scan_runs
from agentprobe.providers import mcp, openai_chat
from agentprobe.stdio.pairing import LineSplitter, Pairing
from agentprobe.store.writer import Writer
from agentprobe.util.clock import new_id

T0 = time.time() - 100


class Run:
    """Captures handed to a real Writer, in the order given (the writer's order: completion order)."""

    def __init__(self, path, label="dev") -> None:
        self.id = new_id()
        self.writer = Writer(path, {"id": self.id, "started_at": "2026-01-01T00:00:00Z", "label": label},
                             RowBuilder(self.id).build)
        self.writer.start()
        self.n = 0

    def _cap(self, seq, started, ended, **kw) -> Capture:
        self.n += 1
        base = dict(seq=seq, completion_seq=self.n, started_at=T0 + started, ended_at=T0 + ended, method="POST",
                    scheme="http", host="127.0.0.1", port=9000, path="/mcp", status=200,
                    request_headers=[("content-type", "application/json")],
                    response_headers=[("content-type", "application/json")])
        base.update(kw)
        return Capture(**base)

    def llm(self, seq, started, ended, asks=(), returns=()) -> None:
        messages = [{"role": "user", "content": "go"}]
        if returns:
            messages.append({"role": "assistant", "tool_calls": [
                {"id": i, "type": "function", "function": {"name": "t", "arguments": "{}"}} for i in returns]})
            messages += [{"role": "tool", "tool_call_id": i, "content": "r"} for i in returns]
        body = {"model": "gpt-4o-mini", "temperature": 0, "messages": messages,
                "tools": [{"type": "function", "function": {"name": "fast_lookup", "parameters": {}}}]}
        message = {"role": "assistant", "content": None if asks else "done"}
        if asks:
            message["tool_calls"] = [{"id": i, "type": "function", "function": {"name": n, "arguments": json.dumps(a)}}
                                     for i, n, a in asks]
        answer = {"id": f"c{seq}", "model": "gpt-4o-mini", "choices": [
            {"index": 0, "finish_reason": "tool_calls" if asks else "stop", "message": message}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5}}
        self.writer.submit(self._cap(seq, started, ended, path="/v1/chat/completions", dialect=openai_chat,
                                     request_body=json.dumps(body).encode(), response_body=json.dumps(answer).encode()))

    def mcp(self, seq, started, ended, method, params, result=None, error=None, **kw) -> None:
        ident = seq
        body = {"jsonrpc": "2.0", "id": ident, "method": method, "params": params}
        answer = None
        if result is not None or error is not None:
            answer = json.dumps({"jsonrpc": "2.0", "id": ident, **({"result": result} if error is None
                                                                    else {"error": error})}).encode()
        kw.setdefault("response_body", answer)
        self.writer.submit(self._cap(seq, started, ended, dialect=mcp, request_body=json.dumps(body).encode(), **kw))

    def tool(self, seq, started, ended, name, args, is_error=False, **kw) -> None:
        self.mcp(seq, started, ended, "tools/call", {"name": name, "arguments": args},
                 result={"content": [{"type": "text", "text": "failed" if is_error else "ok"}], "isError": is_error},
                 **kw)

    def tools_list(self, seq, started, ended, names) -> None:
        self.mcp(seq, started, ended, "tools/list", {}, result={"tools": [
            {"name": n, "inputSchema": {"type": "object"}} for n in names]})

    def close(self) -> None:
        self.writer.close(ended_at="2026-01-01T00:01:00Z")


def findings(path, run_id):
    return scan_runs(sqlite_utils.Database(path), [run_id])


def test_gaps_timeouts_and_links(tmp_path):
    path = tmp_path / "a.db"
    run = Run(path)
    run.tools_list(1, 0.0, 0.1, ["fast_lookup", "slow_lookup"])
    run.llm(2, 0.2, 0.3, asks=[("call_1", "fast_lookup", {"city": "X"}), ("call_2", "slow_lookup", {"city": "Y"}),
                               ("call_3", "fast_lookup", {"city": "Z"}), ("call_4", "local_helper", {})])
    run.tool(3, 0.35, 0.4, "fast_lookup", {"city": "X"})
    # The agent gave up on slow_lookup (its client hung up before the answer).
    run.tool(4, 0.36, 5.0, "slow_lookup", {"city": "Y"}, status=None, response_headers=[], response_body=None,
             error="Client disconnected.", client_disconnected=True)
    run.tool(5, 5.1, 5.2, "fast_lookup", {"city": "nobody asked"})
    run.llm(6, 5.3, 5.4, returns=["call_1", "call_2"])
    run.close()
    db = sqlite_utils.Database(path)
    rows = {r["seq"]: r for r in db.query("SELECT * FROM calls")}
    llm_asking = rows[2]["id"]
    assert [(rows[k]["tool_call_id"], rows[k]["asked_by_call_id"] == llm_asking, rows[k]["tool_link"],
             rows[k]["returned_by_call_id"] == rows[6]["id"]) for k in (3, 4, 5)] == [
        ("call_1", True, "arguments", True), ("call_2", True, "arguments", True),
        ("call_3", True, "name", False)]  # the agent changed call_3's arguments: matched by tool name
    assert rows[4]["error_type"] == "client_disconnected" and rows[4]["mcp_name"] == "slow_lookup"
    found = {f.rule: f for f in findings(path, run.id)}
    assert set(found) >= {"api_latency/tool_timeout"}
    assert [c["seq"] for c in found["api_latency/tool_timeout"].calls] == [4]
    assert "api_latency/tool_not_executed" not in found  # every asked MCP tool ran; local_helper is no MCP tool
    assert "api_latency/tool_unrequested" not in found


def test_not_executed_and_unrequested(tmp_path):
    path = tmp_path / "a.db"
    run = Run(path)
    run.tools_list(1, 0.0, 0.1, ["fast_lookup", "slow_lookup"])
    run.llm(2, 0.2, 0.3, asks=[("call_1", "fast_lookup", {"city": "X"}), ("call_2", "slow_lookup", {"city": "Y"})])
    run.tool(3, 0.35, 0.4, "fast_lookup", {"city": "X"})
    run.tool(4, 0.45, 0.5, "fast_lookup", {"city": "X"})  # the same call run again: a repeat, still asked
    run.llm(6, 0.7, 0.8, returns=["call_1"])
    run.tool(7, 0.9, 1.0, "slow_lookup", {"city": "late"})  # runs after a later answer: call_2 is free, by name
    run.mcp(8, 1.1, 1.2, "tools/call", {"name": "unlisted", "arguments": {}},
            result={"content": [], "isError": False})
    run.close()
    rows = {r["seq"]: r for r in sqlite_utils.Database(path).query("SELECT * FROM calls")}
    assert (rows[4]["tool_call_id"], rows[4]["tool_link"]) == ("call_1", "repeat")
    assert (rows[7]["tool_call_id"], rows[7]["tool_link"]) == ("call_2", "name")
    found = {f.rule: f for f in findings(path, run.id)}
    assert [c["seq"] for c in found["api_latency/tool_unrequested"].calls] == [8]
    assert "api_latency/tool_not_executed" not in found
    # Without the late run, call_2 never executed.
    path2 = tmp_path / "b.db"
    run = Run(path2)
    run.tools_list(1, 0.0, 0.1, ["fast_lookup", "slow_lookup"])
    run.llm(2, 0.2, 0.3, asks=[("call_1", "fast_lookup", {"city": "X"}), ("call_2", "slow_lookup", {"city": "Y"})])
    run.tool(3, 0.35, 0.4, "fast_lookup", {"city": "X"})
    run.llm(4, 0.7, 0.8, returns=["call_1"])
    run.close()
    gap = {f.rule: f for f in findings(path2, run.id)}["api_latency/tool_not_executed"]
    assert gap.severity == "high" and gap.data["tool_call_ids"] == ["call_2"]
    assert "slow_lookup (call_2, asked in call 2)" in gap.evidence


def test_a_retried_tool_error_is_not_ignored_and_a_json_rpc_error_is(tmp_path):
    path = tmp_path / "a.db"
    run = Run(path)
    run.tool(1, 0.0, 0.1, "fast_lookup", {"city": "X"}, is_error=True)
    run.tool(2, 0.2, 0.3, "fast_lookup", {"city": "X"})  # retried, and it worked
    run.mcp(3, 0.4, 0.5, "tools/call", {"name": "slow_lookup", "arguments": {}},
            error={"code": -32603, "message": "Internal error"})
    run.tool(4, 0.6, 0.7, "fast_lookup", {"city": "Y"})
    run.mcp(5, 0.8, 0.9, "tools/call", {"name": "slow_lookup", "arguments": {}},
            error={"code": -32001, "message": "Request timed out"})
    run.tool(6, 1.0, 1.1, "fast_lookup", {"city": "Z"})
    run.close()
    found = {f.rule: f for f in findings(path, run.id)}
    ignored = found["api_latency/tool_error_ignored"]
    assert [c["seq"] for c in ignored.calls] == [3] and "JSON-RPC error -32603" in ignored.evidence
    assert [c["seq"] for c in found["api_latency/tool_timeout"].calls] == [5]
    assert "api_latency/tool_unrequested" not in found  # no model in this run


def test_an_mcp_servers_tools_changing_between_runs(tmp_path):
    path = tmp_path / "a.db"
    first = Run(path)
    first.tools_list(1, 0.0, 0.1, ["fast_lookup"])
    first.close()
    second = Run(path)
    second.tools_list(1, 0.0, 0.1, ["fast_lookup", "delete_everything"])
    second.close()
    changed = [f for f in findings(path, second.id) if f.rule == "prompt_drift/tools_changed"]
    assert len(changed) == 1 and "delete_everything" in changed[0].evidence
    assert "MCP server 127.0.0.1:9000/mcp" in changed[0].evidence
    assert not [f for f in findings(path, first.id) if f.rule == "prompt_drift/tools_changed"]


def test_stdio_lines_and_pairing():
    splitter = LineSplitter(limit=20)
    assert splitter.feed(b'{"a":1}\n{"b"') == [b'{"a":1}']
    assert splitter.feed(b':2}\r\n' + b"x" * 30 + b"\nok\n") == [b'{"b":2}', b"ok"]  # the runaway line dropped
    assert splitter.feed(b"tail") == [] and splitter.rest() == b"tail"
    done = []
    pairing = Pairing(lambda t: len(done) + 100, lambda *a: done.append(a))
    pairing.client_line(b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}}', 1.0)
    pairing.client_line(b'{"jsonrpc":"2.0","id":"1","method":"tools/call","params":{"name":"b"}}', 1.1)
    pairing.server_line(b'{"jsonrpc":"2.0","id":1,"method":"roots/list"}', 1.2)  # the server's own request id 1
    pairing.server_line(b'{"jsonrpc":"2.0","id":"1","result":{}}', 1.3)
    pairing.client_line(b'{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}', 1.4)
    pairing.client_line(b'{"jsonrpc":"2.0","id":2,"method":"tools/list"}', 1.5)
    pairing.close(2.0)
    assert [(ticket, started, answer is not None, ended, error) for ticket, _, started, answer, ended, error in done] \
        == [(100, 1.1, True, 1.3, None), (100, 1.0, False, 1.4, "cancelled by the client (notifications/cancelled)"),
            (102, 1.5, False, 2.0, "no answer: the server closed its output")]
