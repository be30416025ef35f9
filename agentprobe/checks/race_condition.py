"""race_condition: concurrent calls finishing out of order, tool results sent back reordered."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from .base import Finding, ScanContext


def inverted_pairs(calls: Iterable[tuple]) -> list[tuple[Any, Any]]:
    """(a, b) for every pair in flight together where a was dispatched first but finished last.

    `calls` are (key, completion_seq, started_at, ended_at) in dispatch order; the keys come
    back in the pairs. A sweep keeps only the calls still open, so it stays linear in practice
    even over a million calls. A call missing its completion or either time (a crashed
    recording) cannot be placed in time, so it takes part in no pair.
    """
    open_calls: list[tuple] = []
    pairs: list[tuple[Any, Any]] = []
    for key, done, started, ended in calls:
        if done is None or not started or not ended:
            continue
        if open_calls:
            open_calls = [a for a in open_calls if a[2] > started]
            pairs.extend((a_key, key) for a_key, a_done, _ in open_calls if a_done > done)
        open_calls.append((key, done, ended))
    return pairs


def completion_inversion(ctx: ScanContext) -> list[Finding]:
    """Pairs of calls that were in flight together and finished in the opposite order they started."""
    out = []
    for run_id in ctx.run_ids:
        # Plain tuples, and only the columns the sweep compares: at a million calls, building a
        # dict per row cost more than the sweep itself.
        rows = ctx.db.execute(
            "SELECT seq, completion_seq, started_at, ended_at FROM calls"
            " WHERE run_id = ? AND api IS NOT NULL ORDER BY seq", [run_id]).fetchall()
        completion = {seq: done for seq, done, _, _ in rows}
        pairs = inverted_pairs(rows)
        if not pairs:
            continue
        involved = {seq for pair in pairs for seq in pair}
        example = pairs[0]
        cited = sorted(involved)[:ctx.thresholds.max_call_refs]
        calls = list(ctx.db.query(
            f"SELECT id, run_id, seq, model FROM calls WHERE run_id = ? AND seq IN ({', '.join('?' * len(cited))})"
            " ORDER BY seq", [run_id, *cited]))
        out.append(Finding(
            rule="race_condition/completion_inversion", severity="medium",
            title=f"{len(pairs)} pair(s) of concurrent calls completed in reverse dispatch order",
            evidence=f"in run {run_id}, {len(involved)} overlapping call(s) finished out of order; e.g. call"
                     f" {example[0]} was sent before call {example[1]} but finished after it"
                     f" (completion {completion[example[0]]} vs {completion[example[1]]}).",
            fix="Do not let the order answers arrive in drive the agent: tag each parallel call with its index and"
                " reassemble results by that index, or run order-dependent steps sequentially.",
            run_id=run_id, calls=ctx.refs(calls), data={"pairs": len(pairs), "calls": len(involved)}))
    return out


def tool_result_order(ctx: ScanContext) -> list[Finding]:
    """Tool results sent back in a different order than the model issued the tool calls."""
    where, params = ctx.runs_sql()
    issued: dict[str, list[str]] = {}  # tool call id -> the ordered ids of the response that issued it
    out = []
    for row in ctx.db.query(
            f"SELECT id, run_id, seq, model, tool_calls, tool_result_ids FROM calls WHERE {where}"
            " AND (tool_calls IS NOT NULL OR tool_result_ids IS NOT NULL) ORDER BY run_id, seq", params):
        if row["tool_result_ids"]:
            results = [i for i in json.loads(row["tool_result_ids"]) if i]
            asked = issued.get(results[0]) if results else None
            if asked:
                expected = [i for i in asked if i in results]
                got = [i for i in results if i in asked]
                if expected != got:
                    out.append(Finding(
                        rule="race_condition/tool_result_order", severity="medium",
                        title="tool results were sent back in a different order than the tool calls",
                        evidence=f"call {row['seq']} in run {row['run_id']} returned results in the order"
                                 f" {got}, but the model issued the calls as {expected}.",
                        fix="Collect parallel tool results and send them back in the order of the tool calls"
                            " (sort by the call's index), so the model pairs each result with the right call.",
                        run_id=row["run_id"], calls=[ctx.ref(row)], data={"issued": expected, "returned": got}))
        if row["tool_calls"]:
            ids = [c.get("id") for c in json.loads(row["tool_calls"]) if c.get("id")]
            for i in ids:
                issued[i] = ids
    return out


CHECKS = [completion_inversion, tool_result_order]
