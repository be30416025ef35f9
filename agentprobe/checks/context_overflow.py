"""context_overflow: conversations growing toward (or past) the model's context window."""

from __future__ import annotations

from .base import Finding, ScanContext, generates
from .models import context_window

_EXCEEDED_ERRORS = ("context_length_exceeded", "string_above_max_length", "request_too_large")
_TOKENS = "coalesce(input_tokens, counted_input_tokens)"  # the provider's count, else ours


def _peak(ctx: ScanContext, run_id: str, conversation_id: str) -> dict:
    """The call where a conversation's input was largest (the earliest, on a tie)."""
    return next(ctx.db.query(
        f"SELECT run_id, conversation_id, model, id, seq, turn, {_TOKENS} AS tokens"
        f" FROM calls WHERE conversation_id = ? AND run_id = ? AND {generates()} ORDER BY tokens DESC, seq LIMIT 1",
        [conversation_id, run_id]))


def near_limit(ctx: ScanContext) -> list[Finding]:
    where, params = ctx.runs_sql()
    # One aggregate row per conversation, run and model (a conversation rarely has more than one);
    # Python keeps each conversation's peak, ties to the lowest run and model. Only the
    # conversations a finding cites are then looked up call by call. Ranking every call with a
    # window function instead cost 5 s at 1M calls.
    groups = ctx.db.execute(
        f"SELECT conversation_id, run_id, model, max({_TOKENS}) FROM calls"
        f" WHERE {where} AND conversation_id IS NOT NULL AND {generates()} GROUP BY conversation_id, run_id, model",
        params).fetchall()
    peaks: dict[str, tuple] = {}
    for group in sorted(groups, key=lambda g: (g[0], -1 if g[3] is None else -g[3], g[1], g[2] or "")):
        peaks.setdefault(group[0], group)
    convs = [peaks[c] for c in sorted(peaks)]
    out, unknown = [], {}
    for conversation_id, run_id, model, tokens in convs:
        window = context_window(model, ctx.context_windows)
        if window is None:
            unknown.setdefault((run_id, model), []).append(conversation_id)
            continue
        if not tokens or tokens / window < ctx.thresholds.context:
            continue
        row = _peak(ctx, run_id, conversation_id)
        window = context_window(row["model"], ctx.context_windows) or window
        share = row["tokens"] / window
        exceeded = share >= 1
        out.append(Finding(
            rule="context_overflow/exceeded" if exceeded else "context_overflow/near_limit",
            severity="critical" if exceeded else ("high" if share >= 0.9 else "medium"),
            title=f"conversation reached {share:.0%} of {row['model']}'s context window",
            evidence=f"conversation {row['conversation_id'][-8:]} in run {row['run_id']} reached {row['tokens']:,} of"
                     f" {window:,} tokens ({share:.0%}) at turn {row['turn']} (call {row['seq']}); the threshold is"
                     f" {ctx.thresholds.context:.0%}.",
            fix="Budget tokens per turn and per conversation: summarise older turns into a short state block, drop"
                " stale tool results, or start a fresh context with a recovery prompt before the window fills.",
            run_id=row["run_id"], calls=[ctx.ref(row)],
            data={"tokens": row["tokens"], "window": window, "share": round(share, 4), "turn": row["turn"]}))
    for (run_id, model), convs in unknown.items():
        model = model or "calls that named no model"
        out.append(Finding(
            rule="context_overflow/unknown_window", severity="low",
            title=f"context window of {model} is unknown",
            evidence=f"{len(convs)} conversation(s) in run {run_id} use {model}, which is not in the built-in table,"
                     " so their growth could not be checked.",
            fix='Add the model to the config: "models": {"' + str(model) + '": <context window in tokens>}.',
            run_id=run_id, calls=ctx.refs([_peak(ctx, run_id, c) for c in convs[:ctx.thresholds.max_call_refs]]),
            data={"model": model}))
    return out


def provider_rejections(ctx: ScanContext) -> list[Finding]:
    where, params = ctx.runs_sql()
    likes = " OR ".join("error_type LIKE ?" for _ in _EXCEEDED_ERRORS)
    rows = list(ctx.db.query(
        f"SELECT id, run_id, seq, model, error_type, error_message FROM calls WHERE {where} AND ({likes}"
        " OR error_message LIKE '%context length%' OR error_message LIKE '%context window%'"
        " OR error_message LIKE '%prompt is too long%') ORDER BY seq",
        params + [f"%{e}%" for e in _EXCEEDED_ERRORS]))
    if not rows:
        return []
    first = rows[0]
    return [Finding(
        rule="context_overflow/exceeded", severity="critical",
        title=f"the provider rejected {len(rows)} call(s) for exceeding the context window",
        evidence=f"{len(rows)} call(s) failed with {first['error_type']} (first: run {first['run_id']} call"
                 f" {first['seq']}: {str(first['error_message'] or '')[:160]}).",
        fix="Trim the conversation before it reaches the window (summarise or drop old turns) and treat this error"
            " as fatal for the step instead of retrying the same oversized request.",
        run_id=first["run_id"], calls=ctx.refs(rows), data={"calls": len(rows)})]


CHECKS = [near_limit, provider_rejections]
