"""`runs` and `calls`: look at what was captured."""

from __future__ import annotations

import click

from ..store.db import open_db
from ..store.queries import decode_json_columns, iter_calls, list_runs, resolve_run, tool_chain
from .common import db_option
from .output import emit, output_options

RUN_COLUMNS = ["id", "started_at", "label", "status", "calls", "errors", "input_tokens", "output_tokens", "calls_lost",
               "bypassed_connections", "command"]
CALL_COLUMNS = [
    "seq", "completion_seq", "provider", "model", "status", "stream", "latency_ms", "ttft_ms",
    "input_tokens", "output_tokens", "finish_reason", "attempt", "turn", "error_type", "tools",
]


@click.command()
@db_option
@click.option("--label", help="Only runs with this label.")
@click.option("-n", "--limit", type=click.IntRange(min=1), default=None, help="At most this many runs.")
@output_options
def runs(db, label, limit, fmt):
    """List recorded runs, newest first."""
    database = open_db(db)
    emit(list_runs(database, label=label, limit=limit), fmt, RUN_COLUMNS, title="runs")


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


COMMANDS = [runs, calls]
