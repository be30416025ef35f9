"""MCP end to end: real MCP servers (the official SDK) and real agents, through the real proxy.

The model is the fake provider; the tools are tests/e2e/mcp_tools/server.py (slow_lookup answers
after 0.6 s, fast_lookup at once, broken returns isError). Each test runs `agentprobe trace` and
then asserts the recorded rows and the scan's findings exactly.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys

import pytest
import sqlite_utils

from mcp_servers import HERE, SERVER, start_server
from proxy_fixtures import run_cli

PY = sys.executable

# The columns a test can predict exactly, per row.
COLUMNS = ("seq", "completion_seq", "provider", "api", "mcp_transport", "mcp_method", "mcp_name", "mcp_server",
           "tool_is_error", "error_type", "tool_call_id", "tool_link")


@pytest.fixture(scope="module")
def http_server():
    proc, port = start_server("http")
    yield f"http://127.0.0.1:{port}/mcp"
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def sse_server():
    proc, port = start_server("sse")
    yield f"http://127.0.0.1:{port}/sse"
    proc.terminate()
    proc.wait(10)


def trace(tmp_path, *command: str) -> tuple[dict, sqlite_utils.Database, dict]:
    """`agentprobe trace -- COMMAND`; returns what the agent printed, the database, and the run's findings."""
    db = tmp_path / "ap.db"
    env = {"AGENTPROBE_CONFDIR": str(tmp_path / "conf")}
    done = run_cli("trace", "--db", str(db), "--", *command, env=env, timeout=180)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), sqlite_utils.Database(db), scan_findings(db)


def scan_findings(db, *flags: str) -> list[dict]:
    scan = run_cli("scan", "--db", str(db), "--json", *flags)
    assert scan.returncode == 0, scan.stderr
    return json.loads(scan.stdout)["findings"]


def rows(db) -> list[tuple]:
    return [tuple(r[c] for c in COLUMNS) for r in db.query("SELECT * FROM calls ORDER BY seq")]


def links(db) -> list[tuple]:
    """(tool seq, seq of the LLM call that asked for it, seq of the LLM call that sent its result back)."""
    return [tuple(r.values()) for r in db.query(
        "SELECT t.seq, a.seq AS asked, r.seq AS returned FROM calls t LEFT JOIN calls a ON a.id = t.asked_by_call_id"
        " LEFT JOIN calls r ON r.id = t.returned_by_call_id WHERE t.mcp_method = 'tools/call' ORDER BY t.seq")]


def rules(findings) -> dict[str, dict]:
    return {f["rule"]: f for f in findings}


def the_sdk_agents_rows(transport: str, server: str | None, first_seq: int = 1, stream: bool = False):
    """What the official-SDK agent's run holds: discover, list, the model's turn asking for three tools,
    the three tools (slow dispatched first, finishing last), the model's turn that gets the results."""
    s = first_seq
    llm = ("openai_compatible", "chat.completions", None, None, None, None, None, None, None, None)
    tool = ("mcp", None, transport, "tools/call")
    return [
        (s, None, "mcp", None, transport, "server/discover", None, server, None, None, None, None),
        (s + 1, None, "mcp", None, transport, "tools/list", None, server, None, None, None, None),
        (s + 2, None, *llm),
        (s + 3, None, *tool, "slow_lookup", server, 0, None, "call_1", "arguments"),
        (s + 4, None, *tool, "fast_lookup", server, 0, None, "call_2", "arguments"),
        (s + 5, None, *tool, "broken", server, 1, "tool_error", "call_3", "arguments"),
        (s + 6, None, *llm),
    ]


def without_completion(table: list[tuple]) -> list[tuple]:
    return [(r[0], None, *r[2:]) for r in table]


def completion_order(db) -> list[str]:
    return [r["name"] for r in db.query("SELECT coalesce(mcp_name, mcp_method, api) AS name FROM calls"
                                        " WHERE mcp_method IS NOT NULL OR api IS NOT NULL ORDER BY completion_seq")]


EXPECTED_COMPLETIONS = ["server/discover", "tools/list", "chat.completions", "fast_lookup", "broken", "slow_lookup",
                        "chat.completions"]


def assert_sdk_agent_findings(findings, tools: list[int], llm_return: int) -> None:
    """The race (results returned fast-first), its LLM-side echo, and the ignored isError; nothing else."""
    found = rules(findings)
    assert set(found) == {"race_condition/tool_results_in_completion_order", "race_condition/tool_result_order",
                          "api_latency/tool_error_ignored"}, [f["rule"] for f in findings]
    race = found["race_condition/tool_results_in_completion_order"]
    slow, fast, broken = tools
    assert race["severity"] == "high"
    assert race["data"] == {"dispatched": [slow, fast, broken], "completed": [fast, broken, slow],
                            "asked": ["call_1", "call_2", "call_3"], "returned": ["call_2", "call_3", "call_1"],
                            "pairs": 2}
    assert f"LLM call {llm_return} then sent the results back" in race["evidence"]
    ignored = found["api_latency/tool_error_ignored"]
    assert [c["seq"] for c in ignored["calls"]] == [broken] and ignored["data"] == {"calls": 1, "returned_to_model": 1}
    assert "broken: on purpose" in ignored["evidence"]


def test_official_sdk_agent_over_streamable_http(tmp_path, fake_provider, http_server):
    """Two tools in parallel, the slower one first, plus one that fails with isError, which the agent ignores."""
    seen, db, findings = trace(tmp_path, PY, str(HERE / "sdk_agent.py"), fake_provider.url + "/v1", "http",
                               http_server)
    assert seen["completed"] == ["fast_lookup", "broken", "slow_lookup"] and seen["errors"] == ["broken"]
    assert without_completion(rows(db)) == the_sdk_agents_rows("streamable_http", "probe-tools")
    assert completion_order(db) == EXPECTED_COMPLETIONS
    assert links(db) == [(4, 3, 7), (5, 3, 7), (6, 3, 7)]
    calls = {r["seq"]: r for r in db.query("SELECT * FROM calls")}
    assert {calls[k]["mcp_protocol"] for k in (1, 2, 4, 5, 6)} == {"2026-07-28"}
    assert calls[4]["latency_ms"] > 550 > calls[5]["latency_ms"]
    assert json.loads(calls[4]["tool_arguments"]) == {"city": "Oslo"} and calls[4]["arguments_sha256"]
    assert calls[6]["error_message"] == "broken: on purpose"
    assert calls[2]["tools_sha256"] and calls[2]["status"] == 200
    assert_sdk_agent_findings(findings, [4, 5, 6], 7)
    # A lower tool budget reports the slow tool too.
    slow = scan_findings(tmp_path / "ap.db", "--tool-latency-budget-ms", "500")
    assert [f["calls"][0]["seq"] for f in slow if f["rule"] == "api_latency/tool_slow"] == [4]
    # `calls` and the HTML report show the chain: model asks -> tool runs -> result returned.
    listed = json.loads(run_cli("calls", "--db", str(tmp_path / "ap.db"), "--json").stdout)
    assert [c["tools"] for c in listed] == [
        "server/discover", "tools/list", "asks call_1 slow_lookup, call_2 fast_lookup, call_3 broken",
        "tools/call slow_lookup; runs call_1 asked in call 3; result back in call 7",
        "tools/call fast_lookup; runs call_2 asked in call 3; result back in call 7",
        "tools/call broken; runs call_3 asked in call 3; result back in call 7", "returns call_2, call_3, call_1"]
    html = run_cli("report", "--db", str(tmp_path / "ap.db"), "-o", "-").stdout
    assert "tools/call slow_lookup; runs call_1 asked in call 3; result back in call 7" in html


def test_pydantic_ai_runs_mcp_tools_in_parallel(tmp_path, fake_provider, http_server):
    """pydantic-ai (MCPToolset over fastmcp) runs the two tool calls at once and returns the results in the
    model's order: the inversion is reported, the results are not (and the LLM side sees no reordering)."""
    seen, db, findings = trace(tmp_path, PY, str(HERE / "pydantic_ai_agent.py"), fake_provider.url + "/v1",
                               http_server)
    assert seen["returned"] == ["slow_lookup", "fast_lookup"]
    llm = ("openai_compatible", "chat.completions", None, None, None, None, None, None, None, None)
    tool = ("mcp", None, "streamable_http", "tools/call")
    assert without_completion(rows(db)) == [
        (1, None, "mcp", None, "streamable_http", "server/discover", None, "probe-tools", None, None, None, None),
        (2, None, "mcp", None, "streamable_http", "tools/list", None, "probe-tools", None, None, None, None),
        (3, None, *llm),
        (4, None, *tool, "slow_lookup", "probe-tools", 0, None, "call_1", "arguments"),
        (5, None, *tool, "fast_lookup", "probe-tools", 0, None, "call_2", "arguments"),
        (6, None, *llm),
    ]
    assert completion_order(db) == ["server/discover", "tools/list", "chat.completions", "fast_lookup", "slow_lookup",
                                    "chat.completions"]
    assert links(db) == [(4, 3, 6), (5, 3, 6)]
    slow, fast = (db.execute(f"SELECT started_at, ended_at FROM calls WHERE seq = {k}").fetchone() for k in (4, 5))
    assert fast[0] < slow[1]  # really in parallel: the fast one started before the slow one ended
    assert [f["rule"] for f in findings] == ["race_condition/tool_completion_inversion"]
    assert findings[0]["data"]["returned"] == ["call_1", "call_2"] == findings[0]["data"]["asked"]


def test_stdio_server_through_the_wrapper_joins_the_trace(tmp_path, fake_provider):
    """The agent starts `agentprobe mcp -- SERVER` as its stdio server: the server's calls land in the trace's
    run, numbered with the LLM calls, linked to them, with the same findings."""
    seen, db, findings = trace(tmp_path, PY, str(HERE / "sdk_agent.py"), fake_provider.url + "/v1", "stdio",
                               PY, "-m", "agentprobe", "mcp", "--", PY, SERVER, "stdio")
    assert seen["completed"] == ["fast_lookup", "broken", "slow_lookup"]
    assert [r["n"] for r in db.query("SELECT count(*) AS n FROM runs")] == [1]
    assert without_completion(rows(db)) == the_sdk_agents_rows("stdio", "probe-tools")
    assert completion_order(db) == EXPECTED_COMPLETIONS
    assert links(db) == [(4, 3, 7), (5, 3, 7), (6, 3, 7)]
    stdio = list(db.query("SELECT * FROM calls WHERE provider = 'mcp'"))
    assert {(r["method"], r["host"], r["status"], r["path"]) for r in stdio} == {
        (None, "stdio", None, f"{PY} {SERVER} stdio")}
    assert_sdk_agent_findings(findings, [4, 5, 6], 7)


def test_stdio_wrapper_alone_is_byte_transparent_and_records_a_run_of_its_own(tmp_path):
    lines = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "broken", "arguments": {"reason": "x"}}},
        {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "fast_lookup",
                                                                       "arguments": {"city": "Rome"}}},
    ]
    # Two messages in one write, one split across writes: the wrapper must pass them on as they are.
    # The tool calls go one at a time, so the server's answers come in one order both times.
    encoded = [json.dumps(m).encode() + b"\n" for m in lines]
    pieces = [encoded[0] + encoded[1], encoded[2][:10], encoded[2][10:], encoded[3], encoded[4]]
    env = {"AGENTPROBE_DB": str(tmp_path / "own.db"), "PATH": "/usr/bin:/bin"}

    def talk(argv) -> bytes:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        out = b""
        for k, piece in enumerate(pieces):
            proc.stdin.write(piece)
            proc.stdin.flush()
            if k != 1:  # each request's answer before the next request, as a client that waits for it
                out += proc.stdout.readline()
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        return out + rest

    direct = talk([PY, SERVER, "stdio"])
    wrapped = talk([PY, "-m", "agentprobe", "mcp", "--", PY, SERVER, "stdio"])
    assert wrapped == direct and direct.count(b"\n") == 4
    db = sqlite_utils.Database(tmp_path / "own.db")
    run = next(db.query("SELECT * FROM runs"))
    assert (run["mode"], run["status"], run["exit_code"], run["command"]) == ("stdio", "completed", 0,
                                                                             f"{PY} {SERVER} stdio")
    assert [(r["seq"], r["completion_seq"], r["mcp_method"], r["mcp_name"], r["mcp_protocol"], r["mcp_server"],
             r["tool_is_error"], r["error_type"]) for r in db.query("SELECT * FROM calls ORDER BY seq")] == [
        (1, 1, "initialize", None, "2025-11-25", "probe-tools", None, None),
        (2, 2, "tools/list", None, None, "probe-tools", None, None),
        (3, 3, "tools/call", "broken", None, "probe-tools", 1, "tool_error"),
        (4, 4, "tools/call", "fast_lookup", None, "probe-tools", 0, None),
    ]
    # A run with no model: no gap findings (nobody could have asked), and the error is reported only
    # if the agent went on after it (here fast_lookup came next).
    assert [f["rule"] for f in scan_findings(tmp_path / "own.db")] == ["api_latency/tool_error_ignored"]


def test_legacy_http_sse_transport(tmp_path, fake_provider, sse_server):
    """The answers come back on the GET /sse stream; each completes its POST, in the order they arrived there."""
    seen, db, findings = trace(tmp_path, PY, str(HERE / "sdk_agent.py"), fake_provider.url + "/v1", "sse",
                               sse_server)
    assert seen["completed"] == ["fast_lookup", "broken", "slow_lookup"]
    table = rows(db)
    assert table[0][:6] == (1, table[0][1], "mcp", None, "http+sse", None)  # the session's stream, first
    assert without_completion(table[1:]) == the_sdk_agents_rows("http+sse", "probe-tools", first_seq=2)
    assert completion_order(db) == EXPECTED_COMPLETIONS
    calls = {r["seq"]: r for r in db.query("SELECT * FROM calls")}
    assert {calls[k]["status"] for k in (2, 3, 5, 6, 7)} == {202}
    assert "session_id=[REDACTED]" in calls[5]["path"]
    assert calls[5]["latency_ms"] > 550 > calls[6]["latency_ms"]
    assert_sdk_agent_findings(findings, [5, 6, 7], 8)


def test_streamed_answers_pass_through_byte_for_byte(tmp_path, http_server):
    """A tools/call answered as SSE (the client asked for progress) and one answered as JSON: the bytes
    through the proxy are the bytes the server sent."""
    from proxy_fixtures import Recorded

    port = int(http_server.rsplit(":", 1)[1].split("/")[0])
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}}

    def call(name: str, progress: bool, via: str | None) -> tuple[int, str, bytes]:
        body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                "params": {"name": name, "arguments": {"city": "Kyiv"},
                           "_meta": {**meta, **({"progressToken": 7} if progress else {})}}}
        headers = {"content-type": "application/json", "accept": "application/json, text/event-stream",
                   "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": name}
        if via:
            host, vport = via.rsplit("//", 1)[1].split(":")
            conn = http.client.HTTPConnection(host, int(vport), timeout=30)
            target = f"http://127.0.0.1:{port}/mcp"
        else:
            conn, target = http.client.HTTPConnection("127.0.0.1", port, timeout=30), "/mcp"
        conn.request("POST", target, json.dumps(body), headers)
        resp = conn.getresponse()
        out = (resp.status, resp.getheader("content-type"), resp.read())
        conn.close()
        return out

    rec = Recorded(tmp_path, None)
    try:
        for name, progress, kind in (("slow_lookup", True, "text/event-stream"), ("fast_lookup", False,
                                                                                  "application/json")):
            direct, proxied = call(name, progress, None), call(name, progress, rec.url)
            assert direct[1].startswith(kind) and proxied == direct
    finally:
        rec.stop()
    recorded = [(r["mcp_name"], r["stream"], r["error_type"]) for r in rec.calls()]
    assert recorded == [("slow_lookup", None, None), ("fast_lookup", None, None)]
