"""`runs` and `calls`: look at what was captured."""

from __future__ import annotations

import json
from dataclasses import replace

import click

from ..store.db import open_db
from ..store.queries import call_ref, decode_json_columns, iter_calls, list_runs, resolve_run, tool_chain
from .common import db_option, label_option
from ..report.table import Column, cell
from .errors import UserError
from .output import emit, json_option, output_options

SESSION_COLUMNS = [Column("session", max_width=24, wide=True), Column("client", max_width=40, wide=True),
                   Column("trace_id", "trace", fmt=lambda v: str(v or "")[:8], wide=True)]

# In order of importance: a narrow terminal keeps the first ones.
RUN_COLUMNS = [
    Column("id"), Column("started_at", "started", fmt=lambda v: str(v or "")[5:19].replace("T", " ")),
    Column("calls"), Column("errors"), Column("status"), Column("label", max_width=24),
    Column("input_tokens", "tokens in"), Column("output_tokens", "tokens out"),
    Column("calls_lost", "lost"), Column("bypassed_connections", "bypassed"),
    Column("command", wrap=True, max_width=60),
    # A session of a long-running recorder: the client's name for it, who sent it, its trace. Last, so
    # a terminal too narrow for them loses them first; shown by default only when a run listed has them
    # (session_columns), so that databases without sessions keep their tables as they were.
    *SESSION_COLUMNS,
    Column("ended_at", "ended", wide=True),
    Column("session_key_by", "keyed by", wide=True),
    Column("fastpath", wide=True), Column("parent_run_id", "parent", wide=True),
]
CALL_COLUMNS = [
    Column("seq"), Column("model"), Column("status"), Column("latency_ms", "ms", fmt=lambda v: cell(round(v)) if
                                                                            isinstance(v, (int, float)) else ""),
    Column("finish_reason", "finish"), Column("error_type", "error", max_width=28),
    Column("input_tokens", "in"), Column("output_tokens", "out"), Column("stream"), Column("attempt"),
    Column("turn"), Column("completion_seq", "done#"),
    # MCP: the chain model asks -> tool runs -> result returned, as call numbers.
    Column("tools", wrap=True, max_width=40), Column("ttft_ms", "ttft", wide=True),
    Column("provider", wide=True), Column("api", wide=True), Column("host", wide=True),
    Column("retry_of", wide=True), Column("conversation_id", "conversation", wide=True),
    Column("parse_error", wide=True, wrap=True),
]


@click.command()
@db_option
@label_option("Only runs with this label.")
@click.option("-n", "--limit", type=click.IntRange(min=1), default=None, help="At most this many runs.")
@output_options
def runs(db, label, limit, fmt):
    """List recorded runs, newest first."""
    database = open_db(db)
    found = list_runs(database, label=label, limit=limit)
    if not found and fmt.format == "table":
        # An empty table says nothing; machine formats still get their empty list.
        what = f"no run labelled {label!r}" if label else "no runs"
        click.echo(f"agentprobe: {what} in this database yet: record one with agentprobe trace -- CMD", err=True)
        return
    emit(found, fmt, session_columns(found), title="runs")
    stale = [r for r in found if r["status"] == "stale"]
    if stale:
        click.echo(f"agentprobe: {len(stale)} run(s) stale: the recorder stopped stamping them without ending them"
                   f" (killed, or cut off from this database), the last at {max(r['alive_at'] for r in stale)};"
                   " what they recorded until then is kept", err=True)


def session_columns(rows: list[dict]) -> list[Column]:
    """RUN_COLUMNS, with the session columns shown by default when a run listed came from a session."""
    if not any(r.get("session") or r.get("client") or r.get("trace_id") for r in rows):
        return RUN_COLUMNS
    return [replace(c, wide=False) if c in SESSION_COLUMNS else c for c in RUN_COLUMNS]


@click.command()
@db_option
@click.option("--run", "run_ref", default="latest", show_default=True, help="Run id (or unique prefix) or 'latest'.")
@output_options
def calls(db, run_ref, fmt):
    """List the calls of one run in dispatch order."""
    database = open_db(db)
    run_id = resolve_run(database, run_ref)
    rows = [decode_json_columns(r) for r in iter_calls(database, run_id)]
    seq_of = {r["id"]: r["seq"] for r in rows}
    for r in rows:
        r["tools"] = tool_chain(r, seq_of)
    emit(rows, fmt, CALL_COLUMNS, title=f"calls of run {run_id}")


@click.command()
@click.argument("ref", metavar="RUN#SEQ")
@db_option
@json_option("the call")
def show(ref, db, as_json):
    """Show one call: the request as sent (system prompt, messages, tools, settings), the answer,
    its status, timing and usage, and the findings that cite it.

    \b
    agentprobe show latest#3
    agentprobe show C5P1YZ#13        # as findings cite calls
    """
    from ..checks import scan_runs
    from ..report.call_view import call_view

    database = open_db(db)
    run_id, seq = call_ref(database, ref)
    try:
        view = call_view(database, run_id, seq, findings=scan_runs(database, [run_id]))
    except LookupError as e:
        raise UserError(str(e)) from None
    if as_json:
        click.echo(json.dumps(view, indent=2, default=str, ensure_ascii=False))
    else:
        from ..report.console import print_call

        print_call(view)


COMMANDS = [runs, calls, show]
