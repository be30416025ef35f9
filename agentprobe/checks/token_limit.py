"""token_limit: answers cut off by the max_tokens ceiling."""

from __future__ import annotations

from .base import Finding, ScanContext, generates, seqs


def truncated(ctx: ScanContext) -> list[Finding]:
    where, params = ctx.runs_sql()
    groups = ctx.db.execute(
        f"SELECT run_id, model, count(*), max(max_tokens) FROM calls WHERE {where} AND {generates()} AND"
        " (finish_reason = 'length' OR (max_tokens IS NOT NULL AND output_tokens >= max_tokens))"
        " GROUP BY run_id, model", params).fetchall()
    out = []
    for run_id, model, n, limit in groups:
        rows = ctx.cited(f"run_id = ? AND model IS ? AND {generates()} AND (finish_reason = 'length'"
                         " OR (max_tokens IS NOT NULL AND output_tokens >= max_tokens))", [run_id, model],
                         "max_tokens, output_tokens, raw_finish_reason")
        reason = rows[0]["raw_finish_reason"] or "length"
        limit_text = f"max_tokens {limit}" if limit else "the model's output ceiling"
        out.append(Finding(
            rule="token_limit/truncated", severity="high",
            title=f"{n} answer(s) from {model} were cut off at {limit_text}",
            evidence=f"{n} call(s) in run {run_id} stopped with {reason} (calls {seqs(rows)}); the agent received an"
                     " incomplete answer (a cut JSON object or tool call fails to parse downstream).",
            fix=f"Raise max_tokens above the longest expected answer (the cut answers hit {limit or 'the ceiling'}),"
                " check finish_reason on every response, and continue or retry when it is length/max_tokens.",
            run_id=run_id, calls=ctx.refs(rows), data={"calls": n, "max_tokens": limit, "model": model}))
    return out


CHECKS = [truncated]
