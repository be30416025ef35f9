"""api_latency: failures the agent swallowed, rate limits, retries, cut streams, slow calls; and at the
tool level (MCP tools/call): tool errors carried on from, slow tools, timed-out tools, and gaps between
the tool calls a model asked for and the ones that ran."""

from __future__ import annotations

import json

from ..capture.tool_links import model_tool_call_id
from .base import Finding, ScanContext, by_run, generates, seqs, tool_calls

FAILED = "(c.error_type IS NOT NULL OR c.status IS NULL OR c.status >= 400 OR c.stream_complete = 0)"
OK = "(s.error_type IS NULL AND s.status < 400 AND coalesce(s.stream_complete, 1) = 1)"


def swallowed_error(ctx: ScanContext) -> list[Finding]:
    """A failure never retried to success, after which the agent kept going as if nothing happened."""
    where, params = ctx.runs_sql("c.run_id")
    rows = list(ctx.db.query(
        "SELECT c.id, c.run_id, c.seq, c.model, c.status, c.error_type, c.ended_at, c.request_sha256"
        f" FROM calls c WHERE {where} AND c.api IS NOT NULL AND {FAILED}"
        # The unary plus keeps SQLite on the request-hash index: without statistics it otherwise walks
        # every later call of the run for each failure, which is quadratic on large runs.
        " AND NOT EXISTS (SELECT 1 FROM calls s WHERE s.request_sha256 = c.request_sha256"
        f"   AND +s.run_id = c.run_id AND +s.seq > c.seq AND {OK})"
        " AND EXISTS (SELECT 1 FROM calls n WHERE n.run_id = c.run_id AND n.seq > c.seq AND n.api IS NOT NULL"
        "   AND n.started_at >= c.ended_at AND n.request_sha256 IS NOT c.request_sha256)"
        " ORDER BY c.run_id, c.seq", params))
    out = []
    for run_id, mine in by_run(rows):
        first = mine[0]
        later = ctx.db.execute(
            "SELECT count(*) FROM calls WHERE run_id = ? AND seq > ? AND api IS NOT NULL AND started_at >= ?",
            [run_id, first["seq"], first["ended_at"]]).fetchone()[0]
        what = f"{first['status'] or 'no response'} {first['error_type'] or ''}".strip()
        out.append(Finding(
            rule="api_latency/swallowed_error", severity="critical",
            title=f"{len(mine)} failed call(s) were never retried successfully, and the agent carried on",
            evidence=f"in run {run_id}, call(s) {seqs(mine)} failed (first: {what}) with no successful retry of the"
                     f" same request, yet the agent made {later} more call(s) after the first one.",
            fix="Treat API errors as failures: retry with backoff up to a limit, then halt the step (circuit"
                " breaker) and return a structured error to the caller instead of continuing on a missing answer.",
            run_id=run_id, calls=ctx.refs(mine), data={"calls": len(mine)}))
    return out


def rate_limited(ctx: ScanContext) -> list[Finding]:
    where, params = ctx.runs_sql()
    out = []
    for run_id, n, waits, most in ctx.db.execute(
            f"SELECT run_id, count(*), avg(retry_after_s), max(retry_after_s) FROM calls WHERE {where}"
            " AND status = 429 GROUP BY run_id", params).fetchall():
        rows = ctx.cited("run_id = ? AND status = 429", [run_id])
        wait_text = f"; retry-after averaged {waits:.1f}s (max {most:.1f}s)" if waits is not None else ""
        out.append(Finding(
            rule="api_latency/rate_limited", severity="medium",
            title=f"{n} call(s) were rate limited (429)",
            evidence=f"run {run_id} received {n} 429 response(s) (calls {seqs(rows)}){wait_text}.",
            fix="Honour retry-after, cap concurrency below your tier's limits, and spread bursts (a token bucket"
                " in front of the client); in production, the same burst will hit harder.",
            run_id=run_id, calls=ctx.refs(rows), data={"calls": n, "retry_after_avg_s": waits}))
    return out


def retry(ctx: ScanContext) -> list[Finding]:
    where, params = ctx.runs_sql()
    out = []
    for run_id, n, worst in ctx.db.execute(
            f"SELECT run_id, count(*), max(attempt) FROM calls WHERE {where} AND attempt > 1 GROUP BY run_id",
            params).fetchall():
        rows = ctx.cited("run_id = ? AND attempt > 1", [run_id])
        out.append(Finding(
            rule="api_latency/retry", severity="low",
            title=f"{n} request(s) were retries of failed calls",
            evidence=f"run {run_id} repeated failed requests {n} time(s) (calls {seqs(rows)}; up to attempt {worst}).",
            fix="Retries hide flaky dependencies and add latency: log them, alert on their rate, and make sure the"
                " retried operation is idempotent.",
            run_id=run_id, calls=ctx.refs(rows), data={"retries": n, "max_attempt": worst}))
    return out


def stream_cut(ctx: ScanContext) -> list[Finding]:
    where, params = ctx.runs_sql()
    rows = list(ctx.db.query(
        f"SELECT id, run_id, seq, model, error_type FROM calls WHERE {where} AND api IS NOT NULL AND stream = 1"
        " AND (stream_complete = 0 OR error_type IN ('stream_cut', 'client_disconnected')) ORDER BY run_id, seq",
        params))
    out = []
    for run_id, mine in by_run(rows):
        out.append(Finding(
            rule="api_latency/stream_cut", severity="high",
            title=f"{len(mine)} response(s) ended before their final event",
            evidence=f"in run {run_id}, call(s) {seqs(mine)} were cut mid-response ({mine[0]['error_type']});"
                     " whatever the agent read from them is partial.",
            fix="Check for the stream's terminal event ([DONE], message_stop, response.completed) before using"
                " the text, and retry the call when it is missing; set read timeouts above your longest answer.",
            run_id=run_id, calls=ctx.refs(mine), data={"calls": len(mine)}))
    return out


def abandoned(ctx: ScanContext) -> list[Finding]:
    """Calls (not streams) the client gave up on before the answer came: a client-side timeout."""
    where, params = ctx.runs_sql("c.run_id")
    rows = list(ctx.db.query(
        "SELECT c.id, c.run_id, c.seq, c.model, c.latency_ms,"
        " EXISTS (SELECT 1 FROM calls r WHERE r.retry_of = coalesce(c.retry_of, c.id) AND r.seq > c.seq) AS retried"
        f" FROM calls c WHERE {where} AND c.api IS NOT NULL AND coalesce(c.stream, 0) = 0"
        " AND c.error_type = 'client_disconnected' ORDER BY c.run_id, c.seq", params))
    out = []
    for run_id, mine in by_run(rows):
        retried = sum(1 for r in mine if r["retried"])
        waits = sorted(r["latency_ms"] for r in mine if r["latency_ms"] is not None)
        gave_up = f"after {waits[0]:,.0f} ms" if len(set(waits)) <= 1 and waits else \
            f"after {waits[0]:,.0f} to {waits[-1]:,.0f} ms" if waits else "at an unknown time"
        out.append(Finding(
            rule="api_latency/abandoned", severity="medium" if retried == len(mine) else "high",
            title=f"the client gave up on {len(mine)} call(s) before the answer came",
            evidence=f"in run {run_id}, the agent hung up on call(s) {seqs(mine)} {gave_up}; {retried} of them were"
                     " retried. The provider may still have done (and billed) the work.",
            fix="Set the client timeout above the slowest answer you expect (stream long answers so the first"
                " tokens arrive early), and make sure a timed-out call is retried or fails the step loudly.",
            run_id=run_id, calls=ctx.refs(mine), data={"calls": len(mine), "retried": retried}))
    return out


def upstream_unreachable(ctx: ScanContext) -> list[Finding]:
    """Calls the proxy itself could not deliver: the agent got agentprobe's 502, never the provider's answer."""
    from ..store.queries import PROXY_ERRORS, unreachable

    out = []
    for run_id in ctx.run_ids:
        for u in unreachable(ctx.db, run_id):
            marks = ", ".join("?" * len(PROXY_ERRORS))
            rows = ctx.cited(f"run_id = ? AND host IS ? AND port IS ? AND status IS NULL AND error_type = ?"
                             f" AND error_type IN ({marks})", [run_id, u["host"], u["port"], u["error_type"],
                                                                *PROXY_ERRORS])
            out.append(Finding(
                rule="api_latency/upstream_unreachable", severity="high",
                title=f"the proxy could not reach {u['host']}:{u['port']} for {u['calls']} call(s)",
                evidence=f"in run {run_id}, call(s) {seqs(rows)} never reached the provider: {u['cause']}."
                         " The agent saw a 502 from agentprobe; nothing was sent or billed.",
                fix=u["fix"][0].upper() + u["fix"][1:] + ".", run_id=run_id, calls=ctx.refs(rows),
                data={"host": u["host"], "port": u["port"], "error_type": u["error_type"], "calls": u["calls"]}))
    return out


def slow(ctx: ScanContext) -> list[Finding]:
    where, params = ctx.runs_sql()
    budget = ctx.thresholds.latency_ms
    out = []
    for run_id, n, worst in ctx.db.execute(
            f"SELECT run_id, count(*), max(latency_ms) FROM calls WHERE {where} AND api IS NOT NULL"
            " AND latency_ms > ? GROUP BY run_id", params + [budget]).fetchall():
        rows = ctx.cited("run_id = ? AND api IS NOT NULL AND latency_ms > ?", [run_id, budget], "latency_ms",
                         order="latency_ms DESC")
        out.append(Finding(
            rule="api_latency/slow", severity="medium",
            title=f"{n} call(s) took longer than the {budget / 1000:g}s latency budget",
            evidence=f"run {run_id} had {n} call(s) over {budget:,.0f} ms; the slowest took {worst:,.0f} ms"
                     f" (call {rows[0]['seq']}).",
            fix="Set client timeouts just above the budget, stream long answers, and plan what the agent does when"
                " a call times out (retry, smaller model, or a clear failure).",
            run_id=run_id, calls=ctx.refs(rows), data={"calls": n, "max_latency_ms": worst, "budget_ms": budget}))
    return out


TOOL_FAILED = "(c.error_type IN ('tool_error', 'rpc_error') AND coalesce(c.rpc_error_code, 0) != -32001)"
TOOL_TIMED_OUT = ("(c.error_type IN ('client_disconnected', 'timeout', 'cancelled', 'no_answer', 'stream_cut')"
                  " OR c.rpc_error_code = -32001)")
# A later call of the run, LLM or tool, sent after this one ended: the agent went on.
_LATER = ("EXISTS (SELECT 1 FROM calls n WHERE n.run_id = c.run_id AND n.seq > c.seq AND n.started_at >= c.ended_at"
          " AND (n.api IS NOT NULL OR n.provider = 'mcp'))")


def _names(rows: list[dict], limit: int = 6) -> str:
    shown = ", ".join(f"{r['mcp_name']} (call {r['seq']})" for r in rows[:limit])
    return shown + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


def tool_error_ignored(ctx: ScanContext) -> list[Finding]:
    """A tool call that failed (isError, or a JSON-RPC error), never retried to success, and the agent went on."""
    where, params = ctx.runs_sql("c.run_id")
    rows = list(ctx.db.query(
        "SELECT c.id, c.run_id, c.seq, c.mcp_name, c.error_type, c.rpc_error_code, c.error_message,"
        " c.returned_by_call_id FROM calls c"
        f" WHERE {where} AND {tool_calls('c')} AND {TOOL_FAILED}"
        " AND NOT EXISTS (SELECT 1 FROM calls s WHERE s.run_id = c.run_id AND +s.seq > c.seq"
        f"   AND {tool_calls('s')} AND s.mcp_name IS c.mcp_name AND s.arguments_sha256 IS c.arguments_sha256"
        "   AND s.error_type IS NULL)"
        f" AND {_LATER} ORDER BY +c.run_id, +c.seq", params))
    out = []
    for run_id, mine in by_run(rows):
        first = mine[0]
        what = (f"JSON-RPC error {first['rpc_error_code']}" if first["rpc_error_code"] is not None
                else "isError") + (f": {first['error_message'][:120]}" if first["error_message"] else "")
        fed = sum(1 for r in mine if r["returned_by_call_id"])
        out.append(Finding(
            rule="api_latency/tool_error_ignored", severity="high",
            title=f"{len(mine)} tool call(s) failed and the agent carried on without a retry",
            evidence=f"in run {run_id}, tool call(s) {_names(mine)} failed (first: {what}); none was retried with the"
                     f" same arguments, and the agent kept going; {fed} of the failures went back to the model as an"
                     " ordinary tool result.",
            fix="Check every tool result's isError (and JSON-RPC errors): retry transient failures with backoff, and"
                " otherwise stop the step or tell the model plainly that the tool failed, instead of treating the"
                " error text as data.",
            run_id=run_id, calls=ctx.refs(mine), data={"calls": len(mine), "returned_to_model": fed}))
    return out


def tool_slow(ctx: ScanContext) -> list[Finding]:
    where, params = ctx.runs_sql("c.run_id")
    budget = ctx.thresholds.tool_latency_ms
    rows = list(ctx.db.query(
        f"SELECT c.id, c.run_id, c.seq, c.mcp_name, c.latency_ms FROM calls c WHERE {where} AND {tool_calls('c')}"
        " AND c.latency_ms > ? ORDER BY +c.run_id, c.latency_ms DESC", params + [budget]))
    out = []
    for run_id, mine in by_run(rows):
        worst = mine[0]
        out.append(Finding(
            rule="api_latency/tool_slow", severity="medium",
            title=f"{len(mine)} tool call(s) took longer than the {budget / 1000:g}s tool budget",
            evidence=f"in run {run_id}, tool call(s) {_names(mine)} ran over {budget:,.0f} ms; the slowest,"
                     f" {worst['mcp_name']} (call {worst['seq']}), took {worst['latency_ms']:,.0f} ms.",
            fix="Give each tool call a timeout just above its budget, run slow tools in the background or cache"
                " them, and decide what the agent does when a tool is late (retry, a fallback, or a clear failure).",
            run_id=run_id, calls=ctx.refs(mine),
            data={"calls": len(mine), "max_latency_ms": worst["latency_ms"], "budget_ms": budget}))
    return out


def tool_timeout(ctx: ScanContext) -> list[Finding]:
    """Tool calls with no answer: the client gave up or cancelled, the server timed out, or the stream ended first."""
    where, params = ctx.runs_sql("c.run_id")
    rows = list(ctx.db.query(
        "SELECT c.id, c.run_id, c.seq, c.mcp_name, c.error_type, c.rpc_error_code, c.latency_ms FROM calls c"
        f" WHERE {where} AND {tool_calls('c')} AND {TOOL_TIMED_OUT} ORDER BY +c.run_id, +c.seq", params))
    out = []
    for run_id, mine in by_run(rows):
        kinds = sorted({"JSON-RPC -32001 (request timeout)" if r["rpc_error_code"] == -32001 else r["error_type"]
                        for r in mine})
        waits = sorted(r["latency_ms"] for r in mine if r["latency_ms"] is not None)
        out.append(Finding(
            rule="api_latency/tool_timeout", severity="high",
            title=f"{len(mine)} tool call(s) timed out or got no answer",
            evidence=f"in run {run_id}, tool call(s) {_names(mine)} ended without a result ({', '.join(kinds)})"
                     + (f" after {waits[0]:,.0f} to {waits[-1]:,.0f} ms." if waits else "."),
            fix="Set the tool call timeout above the tool's slowest expected run, make the tool report progress, and"
                " handle a timed-out call explicitly (retry if it is idempotent, or fail the step).",
            run_id=run_id, calls=ctx.refs(mine), data={"calls": len(mine), "kinds": kinds}))
    return out


def _mcp_tool_names(ctx: ScanContext, run_id: str) -> set[str]:
    """Tools MCP servers offered in the run (tools/list) and tools the run called through MCP."""
    names = {r[0] for r in ctx.db.execute(
        f"SELECT DISTINCT mcp_name FROM calls WHERE run_id = ? AND {tool_calls()} AND mcp_name IS NOT NULL",
        [run_id])}
    for (sha,) in ctx.db.execute("SELECT DISTINCT tools_sha256 FROM calls WHERE run_id = ? AND provider = 'mcp'"
                                 " AND mcp_method = 'tools/list' AND tools_sha256 IS NOT NULL", [run_id]):
        try:
            names |= {t.get("name") for t in json.loads(ctx.text(sha) or "[]") if isinstance(t, dict)}
        except ValueError:
            pass
    return names - {None}


def tool_gaps(ctx: ScanContext) -> list[Finding]:
    """Tool calls the model asked for (of MCP servers' tools) that never ran, and executions no model asked for."""
    out = []
    for run_id in ctx.run_ids:
        mcp_names = _mcp_tool_names(ctx, run_id)
        if not mcp_names:
            continue
        executed = {r[0] for r in ctx.db.execute(
            f"SELECT tool_call_id FROM calls WHERE run_id = ? AND {tool_calls()} AND tool_call_id IS NOT NULL",
            [run_id])}
        missing = []
        llm_rows = list(ctx.db.query(
            f"SELECT id, run_id, seq, model, tool_calls FROM calls WHERE run_id = ? AND {generates()}"
            " AND tool_calls IS NOT NULL ORDER BY seq", [run_id]))
        for row in llm_rows:
            try:
                issued = json.loads(row["tool_calls"])
            except ValueError:
                continue
            for k, tc in enumerate(issued, 1):
                ident = model_tool_call_id(row["id"], k, tc.get("id"))
                if tc.get("name") in mcp_names and ident not in executed:
                    missing.append((row, tc.get("name"), ident))
        if missing:
            shown = ", ".join(f"{name} ({ident}, asked in call {row['seq']})" for row, name, ident in missing[:6])
            out.append(Finding(
                rule="api_latency/tool_not_executed", severity="high",
                title=f"the model asked for {len(missing)} MCP tool call(s) that never ran",
                evidence=f"in run {run_id}, {shown}{' and more' if len(missing) > 6 else ''} never reached an MCP"
                         " server: no tools/call with that tool and those arguments followed.",
                fix="Run every tool call the model issues (or answer it with an explicit error result): a call"
                    " dropped silently leaves the model reasoning about a result it never got.",
                run_id=run_id, calls=ctx.refs([m[0] for m in missing]),
                data={"calls": len(missing), "tool_call_ids": [m[2] for m in missing]}))
        if not llm_rows and not ctx.db.execute(
                f"SELECT 1 FROM calls WHERE run_id = ? AND {generates()} LIMIT 1", [run_id]).fetchone():
            continue  # no model in this run (a wrapped stdio server on its own): nobody could have asked
        rows = list(ctx.db.query(
            f"SELECT id, run_id, seq, mcp_name FROM calls WHERE run_id = ? AND {tool_calls()}"
            " AND tool_call_id IS NULL ORDER BY +seq", [run_id]))
        if rows:
            out.append(Finding(
                rule="api_latency/tool_unrequested", severity="medium",
                title=f"{len(rows)} tool call(s) ran that no model call asked for",
                evidence=f"in run {run_id}, tool call(s) {_names(rows)} matched no tool call of an earlier model"
                         " answer (by tool name and arguments).",
                fix="Make sure tools run only on the model's request, or record why the agent calls them itself;"
                    " an execution nobody asked for is often a duplicate retry or a stale plan.",
                run_id=run_id, calls=ctx.refs(rows), data={"calls": len(rows)}))
    return out


CHECKS = [swallowed_error, rate_limited, retry, stream_cut, abandoned, upstream_unreachable, slow,
          tool_error_ignored, tool_slow, tool_timeout, tool_gaps]
