"""prompt_drift: the system prompt or tool schemas changed from the previous run or the pinned version."""

from __future__ import annotations

import difflib
import hashlib

from ..util import textdiff
from .base import Finding, ScanContext, generates

_MAX_DIFF_LINES = 40


# Which MCP server listed the tools: its name, else where it was reached (stdio: its command).
_MCP_SERVER = "coalesce(mcp_server, host || ':' || coalesce(port, '') || path)"


def _mcp_tool_hashes(ctx: ScanContext, run_id: str, column: str) -> dict[str | None, dict[str, dict]]:
    """MCP server -> {tools/list hash: first call listing it}"""
    out: dict[str | None, dict[str, dict]] = {}
    for row in ctx.db.query(
            f"SELECT id, run_id, min(seq) AS seq, {_MCP_SERVER} AS model, tools_sha256 AS h FROM calls WHERE run_id = ?"
            " AND provider = 'mcp' AND mcp_method = 'tools/list' AND tools_sha256 IS NOT NULL"
            f" GROUP BY {_MCP_SERVER}, tools_sha256 ORDER BY seq", [run_id]):
        out.setdefault(row["model"], {})[row["h"]] = row
    return out


def _hashes(ctx: ScanContext, run_id: str, column: str) -> dict[str | None, dict[str, dict]]:
    """model -> {hash: first call using it}"""
    out: dict[str | None, dict[str, dict]] = {}
    # SQLite takes the bare columns (id, run_id) from the row holding min(seq): the first call.
    for row in ctx.db.query(
        f"SELECT id, run_id, min(seq) AS seq, model, {column} AS h FROM calls WHERE run_id = ?"
        f" AND {column} IS NOT NULL AND (retry_of IS NULL) AND {generates()} GROUP BY model, {column} ORDER BY seq",
            [run_id]):
        out.setdefault(row["model"], {})[row["h"]] = row
    return out


def unified(old: str, new: str, old_name: str, new_name: str) -> str:
    return textdiff.unified(old, new, old_name, new_name, context=1, max_lines=_MAX_DIFF_LINES)


def _changed(ctx: ScanContext, column: str, rule: str, what: str, fix: str, hashes_fn=_hashes,
             sender: str = "sent {model} a {what}") -> list[Finding]:
    out = []
    seen: dict[str, dict] = {}  # a run is often one run's "after" and the next one's "before"

    def hashes_of(run_id: str) -> dict:
        if run_id not in seen:
            seen[run_id] = hashes_fn(ctx, run_id, column)
        return seen[run_id]

    for run_id in ctx.run_ids:
        previous = ctx.previous_run.get(run_id)
        if not previous:
            continue
        before, after = hashes_of(previous), hashes_of(run_id)
        for model, hashes in after.items():
            old = before.get(model)
            if not old:
                continue
            added = [h for h in hashes if h not in old]
            removed = [h for h in old if h not in hashes]
            if not added:
                continue
            for h in added:
                new_text = ctx.text(h)
                # Show the change against the most similar prompt the previous run used.
                base = max(removed or list(old), key=lambda o: difflib.SequenceMatcher(
                    None, ctx.text(o), new_text).quick_ratio())
                diff = unified(ctx.text(base), new_text, f"{previous} {base[:12]}", f"{run_id} {h[:12]}")
                first = hashes[h]
                out.append(Finding(
                    rule=rule, severity="high",
                    title=f"{what} for {model} changed since run {previous}",
                    evidence=f"run {run_id} {sender.format(model=model, what=what)} with sha256 {h[:12]}"
                             f" (first at call {first['seq']});"
                             f" run {previous} used {base[:12]}.\n{diff}",
                    fix=fix, run_id=run_id, calls=[ctx.ref(first)],
                    data={"previous_run": previous, "old_sha256": base, "new_sha256": h, "diff": diff}))
    return out


def system_prompt_changed(ctx: ScanContext) -> list[Finding]:
    out = _changed(
        ctx, "system_prompt_sha256", "prompt_drift/system_prompt_changed", "system prompt",
        "Keep system prompts in version control, pin each one's sha256 in the agent config, and run the same"
        " benchmark against old and new prompt before shipping; review any change that moves more than 10% of"
        " outputs.")
    pinned = (ctx.config or {}).get("_system_prompt_sha256")
    if pinned:
        where, params = ctx.runs_sql()
        rows = list(ctx.db.query(
            f"SELECT id, run_id, seq, model, system_prompt_sha256 FROM calls WHERE {where} AND {generates()}"
            " AND system_prompt_sha256 IS NOT NULL AND system_prompt_sha256 != ? ORDER BY seq", params + [pinned]))
        if rows:
            h = rows[0]["system_prompt_sha256"]
            pinned_text = (ctx.config or {}).get("_system_prompt_text") or ""
            diff = unified(pinned_text, ctx.text(h), f"pinned {pinned[:12]}", f"sent {h[:12]}") if pinned_text else ""
            out.append(Finding(
                rule="prompt_drift/system_prompt_changed", severity="critical",
                title="system prompt differs from the pinned canonical version",
                evidence=f"{len(rows)} call(s) sent a system prompt with sha256 {h[:12]}, not the pinned {pinned[:12]}"
                         + (f".\n{diff}" if diff else "."),
                fix="Deploy the reviewed prompt (or update the pinned sha256 in the config after review).",
                run_id=rows[0]["run_id"], calls=ctx.refs(rows), data={"pinned": pinned, "sent": h}))
    return out


def tools_changed(ctx: ScanContext) -> list[Finding]:
    """The tools sent to a model changed, or the tools an MCP server lists (tools/list) changed, between runs."""
    return _changed(
        ctx, "tools_sha256", "prompt_drift/tools_changed", "tool schema set",
        "Version tool schemas with the prompt: a renamed tool or changed parameter silently changes which tool"
        " the model picks. Diff the schemas and rerun the benchmark before shipping.") + _changed(
        ctx, "tools_sha256", "prompt_drift/tools_changed", "MCP tool list",
        "Pin the MCP server's version (or its tool list's sha256) and review its tool changes like a prompt change:"
        " agents pass a server's tools to the model as they are, so its new or renamed tools change the agent.",
        hashes_fn=_mcp_tool_hashes, sender="got from MCP server {model} an {what}")


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


CHECKS = [system_prompt_changed, tools_changed]
