"""race_condition: concurrent calls finishing out of order, tool results sent back reordered, and tool
executions (MCP tools/call) that overlapped and finished out of the order they were dispatched in."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from ..capture.tool_links import model_tool_call_id
from .base import Finding, ScanContext, tool_calls


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


def _model_order(ctx: ScanContext, llm_call_id: str) -> list[str]:
    """The tool call ids an LLM answer issued, in its order."""
    row = ctx.db.execute("SELECT tool_calls FROM calls WHERE id = ?", [llm_call_id]).fetchone()
    try:
        issued = json.loads(row[0]) if row and row[0] else []
    except ValueError:
        return []
    return [model_tool_call_id(llm_call_id, k, c.get("id")) for k, c in enumerate(issued, 1)]


def _returned_order(ctx: ScanContext, llm_call_id: str | None) -> list[str]:
    row = ctx.db.execute("SELECT tool_result_ids FROM calls WHERE id = ?", [llm_call_id]).fetchone() \
        if llm_call_id else None
    try:
        return [i for i in json.loads(row[0]) if i] if row and row[0] else []
    except ValueError:
        return []


def tool_races(ctx: ScanContext) -> list[Finding]:
    """Tool executions of one model turn that ran at once and finished out of dispatch order.

    High when the results then reached the model in completion order rather than in the order the
    model asked for them (the agent let the race decide); medium when the agent put them back in order.
    Executions no model call is linked to are taken per run.
    """
    where, params = ctx.runs_sql()
    rows = ctx.db.execute(
        "SELECT id, run_id, seq, completion_seq, started_at, ended_at, mcp_name, tool_call_id, asked_by_call_id,"
        f" returned_by_call_id FROM calls WHERE {where} AND {tool_calls()} ORDER BY +run_id, +seq", params).fetchall()
    groups: dict[tuple, list[tuple]] = {}
    for row in rows:
        groups.setdefault((row[1], row[8]), []).append(row)
    out = []
    for (run_id, asked_by), group in sorted(groups.items(), key=lambda g: (g[0][0], g[1][0][2])):
        if len(group) < 2:
            continue
        pairs = inverted_pairs([(r, r[3], r[4], r[5]) for r in group])
        if not pairs:
            continue
        involved = sorted({r for pair in pairs for r in pair}, key=lambda r: r[2])
        first, second = pairs[0]
        dispatched = [f"{r[6]} (call {r[2]})" for r in group]
        completed = [f"{r[6]} (call {r[2]})" for r in sorted(group, key=lambda r: r[3])]
        asked = _model_order(ctx, asked_by) if asked_by else []
        returners = sorted({r[9] for r in group if r[9]})
        returned = _returned_order(ctx, returners[0]) if len(returners) == 1 else []
        ours = {r[7] for r in group if r[7]}
        by_completion = [r[7] for r in sorted(group, key=lambda r: r[3]) if r[7]]
        asked_here = [i for i in asked if i in ours]
        returned_here = [i for i in returned if i in ours]
        raced = bool(returned_here) and returned_here == by_completion and returned_here != asked_here
        calls = [{"run_id": run_id, "seq": r[2], "model": None, "call_id": r[0]} for r in involved]
        data = {"dispatched": [r[2] for r in group], "completed": [r[2] for r in sorted(group, key=lambda r: r[3])],
                "asked": asked_here, "returned": returned_here, "pairs": len(pairs)}
        evidence = (f"in run {run_id}, {len(group)} tool calls ran at once; dispatched {', '.join(dispatched)};"
                    f" completed {', '.join(completed)}: {first[6]} (call {first[2]}) started first and finished"
                    f" after {second[6]} (call {second[2]}).")
        if raced:
            returner = ctx.db.execute("SELECT seq FROM calls WHERE id = ?", [returners[0]]).fetchone()
            out.append(Finding(
                rule="race_condition/tool_results_in_completion_order", severity="high",
                title="parallel tool results reached the model in the order the tools finished, not the order asked",
                evidence=evidence + f" LLM call {returner[0] if returner else '?'} then sent the results back as"
                                    f" {returned_here}, their completion order; the model asked for {asked_here}.",
                fix="Gather parallel tool results and send them back in the order of the model's tool calls (index"
                    " each call, sort by it), not as they arrive: which tool is faster must not change what the"
                    " model reads.",
                run_id=run_id, calls=calls, data=data))
        else:
            out.append(Finding(
                rule="race_condition/tool_completion_inversion", severity="medium",
                title="parallel tool executions completed in reverse dispatch order",
                evidence=evidence + (" Their results went back to the model in the order asked."
                                     if returned_here and returned_here == asked_here else ""),
                fix="Make every step after a parallel tool batch independent of completion order: key results by"
                    " the tool call's id, and do not let side effects of one tool assume another finished first.",
                run_id=run_id, calls=calls, data=data))
    return out


CHECKS = [completion_inversion, tool_result_order, tool_races]
