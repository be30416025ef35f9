"""`demo`: see agentprobe work with nothing but this package."""

from __future__ import annotations

import click

from ..report.console import print_summary
from ..store.db import open_db
from ..store.queries import decode_json_columns, iter_calls, summarize
from .browse import CALL_COLUMNS
from .common import confdir_option, db_option
from .output import Output, emit


@click.command()
@db_option
@confdir_option
def demo(db, confdir):
    """Record the bundled example agent against a local fake provider (offline)."""
    from ..demo.run import run_demo

    run_id, code = run_demo(db, confdir)
    database = open_db(db)
    emit((decode_json_columns(r) for r in iter_calls(database, run_id)), Output("table"), CALL_COLUMNS,
         title=f"calls of run {run_id}")
    print_summary(summarize(database, run_id))
    from ..checks import scan_runs
    from ..report.console import print_findings

    print_findings(scan_runs(database, [run_id]), {"runs": [run_id]})
    click.echo("next (from .venv/bin): agentprobe report latest -o report.html | agentprobe export latest -o run.json"
               " | run the demo again and `agentprobe diff run.json latest` | agentprobe scan --format sarif",
               err=True)
    return code


COMMANDS = [demo]
