"""api_latency: failures the agent swallowed, rate limits, retries, cut streams, slow calls."""

from __future__ import annotations

from .base import Finding, ScanContext, by_run, seqs

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


CHECKS = [swallowed_error, rate_limited, retry, stream_cut, abandoned, upstream_unreachable, slow]
