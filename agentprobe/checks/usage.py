"""usage: provider token counts that disagree with ours, streams with no usage, tokens wasted on failures."""

from __future__ import annotations

from .base import Finding, ScanContext, by_run, generates, seqs
from .models import price


def mismatch(ctx: ScanContext) -> list[Finding]:
    where, params = ctx.runs_sql()
    t = ctx.thresholds
    rows = list(ctx.db.query(
        "SELECT id, run_id, seq, model, tokenizer, input_tokens, counted_input_tokens,"
        " abs(input_tokens - counted_input_tokens) * 1.0 / max(input_tokens, counted_input_tokens, 1) AS off"
        # With history held by the provider (previous_response_id, a context cache) the request
        # shows only part of the input, so our count cannot be compared with the provider's.
        f" FROM calls WHERE {where} AND input_tokens > 0 AND counted_input_tokens > 0 AND server_context IS NULL"
        " AND abs(input_tokens - counted_input_tokens) * 1.0 / max(input_tokens, counted_input_tokens, 1)"
        " > CASE WHEN tokenizer LIKE '%~%' OR tokenizer LIKE 'estimate%' THEN ? ELSE ? END"
        " AND abs(input_tokens - counted_input_tokens) >= ?"
        " ORDER BY off DESC", params + [t.usage_tolerance_estimate, t.usage_tolerance, t.usage_min_tokens]))
    out = []
    for run_id, mine in by_run(rows):
        worst = mine[0]
        out.append(Finding(
            rule="usage/mismatch", severity="low",
            title=f"provider-reported input tokens disagree with agentprobe's count on {len(mine)} call(s)",
            evidence=f"in run {run_id}, the worst is call {worst['seq']} ({worst['model']}): the provider reported"
                     f" {worst['input_tokens']:,} input tokens, agentprobe counted {worst['counted_input_tokens']:,}"
                     f" with {worst['tokenizer']} ({worst['off']:.0%} apart).",
            fix="Budget context and cost from your own tokenizer where precision matters, and check what the"
                " provider or gateway adds to prompts (hidden system text, tool schemas, images).",
            run_id=run_id, calls=ctx.refs(mine), data={"calls": len(mine), "worst_ratio": round(worst["off"], 4)}))
    return out


def missing(ctx: ScanContext) -> list[Finding]:
    where, params = ctx.runs_sql()
    out = []
    for run_id, api, n in ctx.db.execute(
            f"SELECT run_id, api, count(*) FROM calls WHERE {where} AND {generates()} AND stream = 1 AND status < 300"
            " AND stream_complete = 1 AND input_tokens IS NULL AND output_tokens IS NULL GROUP BY run_id, api",
            params).fetchall():
        rows = ctx.cited(f"run_id = ? AND api = ? AND {generates()} AND stream = 1 AND status < 300"
                         " AND stream_complete = 1 AND input_tokens IS NULL AND output_tokens IS NULL", [run_id, api])
        fix = ('Send stream_options={"include_usage": true} with streamed chat completions so the final chunk'
               " reports usage." if api == "chat.completions" else
               "Read usage from the stream's final event; if the server never sends it, count tokens yourself.")
        out.append(Finding(
            rule="usage/missing", severity="low",
            title=f"{n} streamed response(s) reported no token usage",
            evidence=f"in run {run_id}, {n} {api} stream(s) (calls {seqs(rows)}) ended without usage, so spend and"
                     " context growth are invisible to anything that reads provider usage.",
            fix=fix, run_id=run_id, calls=ctx.refs(rows), data={"calls": n, "api": api}))
    return out


def wasted(ctx: ScanContext) -> list[Finding]:
    """Tokens spent on calls whose answers the agent could not use: failures, and attempts before a retry."""
    where, params = ctx.runs_sql()
    out = []
    for run_id in ctx.run_ids:
        rows = list(ctx.db.query(
            "SELECT id, run_id, seq, model, coalesce(input_tokens, counted_input_tokens, 0) AS tin,"
            " coalesce(output_tokens, 0) AS tout FROM calls WHERE run_id = ? AND api IS NOT NULL AND"
            # Billed: the provider took the call (2xx). A 429, a 500 or a call that never reached it costs
            # nothing, and neither does an error answer that reports no usage.
            " status BETWEEN 200 AND 299 AND NOT (error_type IS NOT NULL AND input_tokens IS NULL"
            "  AND output_tokens IS NULL AND coalesce(stream_complete, 1) = 1) AND"
            " (error_type IS NOT NULL OR stream_complete = 0 OR finish_reason = 'length'"
            "  OR id IN (SELECT retry_of FROM calls WHERE run_id = ? AND retry_of IS NOT NULL))"
            " ORDER BY seq", [run_id, run_id]))
        tokens = sum(r["tin"] + r["tout"] for r in rows)
        if not rows or not tokens:
            continue
        cost, priced = 0.0, 0
        for r in rows:
            p = price(r["model"])
            if p:
                cost += (r["tin"] * p[0] + r["tout"] * p[1]) / 1_000_000
                priced += 1
        total = ctx.db.execute(
            "SELECT sum(coalesce(input_tokens, counted_input_tokens, 0) + coalesce(output_tokens, 0)) FROM calls"
            " WHERE run_id = ? AND api IS NOT NULL", [run_id]).fetchone()[0] or 1
        cost_text = f", about ${cost:.{2 if cost >= 1 else 6}f} at list prices" if priced else ""
        out.append(Finding(
            rule="usage/wasted", severity="low",
            title=f"{tokens:,} tokens ({tokens / total:.0%} of the run) went to calls the agent could not use",
            evidence=f"run {run_id}: {len(rows)} cut, truncated or retried call(s) the provider answered (and"
                     f" bills) consumed {tokens:,} tokens{cost_text}.",
            fix="Fix the failures above first; then cap retries and stop on errors that will not heal by retrying"
                " (400s, context overflow).",
            run_id=run_id, calls=ctx.refs(rows),
            data={"tokens": tokens, "share": round(tokens / total, 4), "cost_usd": round(cost, 6) if priced else None}))
    return out


CHECKS = [mismatch, missing, wasted]
