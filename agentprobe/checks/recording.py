"""recording: agentprobe's own failures are findings too; a silent gap would make every other rule lie."""

from __future__ import annotations

from .base import Finding, ScanContext


def calls_lost(ctx: ScanContext) -> list[Finding]:
    where, params = ctx.runs_sql("id")
    out = []
    for run_id, lost in ctx.db.execute(
            f"SELECT id, calls_lost FROM runs WHERE {where} AND calls_lost > 0", params).fetchall():
        out.append(Finding(
            rule="recording/calls_lost", severity="high",
            title=f"{lost} call(s) of run {run_id} could not be recorded",
            evidence=f"the recorder counted {lost} call(s) it could not write (database locked or full, or a"
                     " backlog); findings for this run may be incomplete.",
            fix="Give the database its own disk with free space, avoid holding long write locks on it, and"
                " record again.", run_id=run_id, data={"calls_lost": lost}))
    return out


CHECKS = [calls_lost]
