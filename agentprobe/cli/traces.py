"""`export` and `import`: runs as portable trace files (JSON or HAR), and OTLP spans."""

from __future__ import annotations

from pathlib import Path

import click

from ..store.db import open_db, resolve_path
from ..store.queries import resolve_run
from ..traces import TraceError, load_file
from .common import db_option, label_option
from .errors import UserError
from .output import write_output


@click.command("export")
@click.argument("run_ref", required=False, default="latest")
@db_option
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write here (default: stdout).")
@click.option("--format", "fmt", type=click.Choice(["json", "har", "otlp"]), default="json", show_default=True,
              help="json: agentprobe's trace file; har: HAR 1.2; otlp: send spans to --endpoint.")
@click.option("--endpoint", default="http://127.0.0.1:4318", show_default=True,
              help="With --format otlp: the OTLP/HTTP collector.")
def export(run_ref, db, output, fmt, endpoint):
    """Write RUN (default: latest) as a self-contained trace file, as HAR, or as OpenTelemetry spans.

    \b
    agentprobe export latest -o good.json       # diff, replay --trace or import it elsewhere
    agentprobe export RUN --format har -o run.har
    agentprobe export RUN --format otlp --endpoint http://localhost:4318
    """
    database = open_db(db)
    run_id = resolve_run(database, run_ref)
    if fmt == "otlp":
        from ..traces.otlp_export import send_run

        try:
            n = send_run(database, run_id, endpoint)
        except OSError as e:
            raise UserError(f"cannot send spans to {endpoint}: {e}") from None
        click.echo(f"agentprobe: sent {n} span(s) of run {run_id} to {endpoint}", err=True)
        return 0
    import json

    if fmt == "har":
        from ..traces.har import har_dict

        text = json.dumps(har_dict(database, run_id), indent=1, ensure_ascii=False) + "\n"
    else:
        from ..traces.export_json import dumps, trace_dict

        text = dumps(trace_dict(database, run_id))
    write_output(text, output, f"run {run_id}")
    return 0


@click.command("import")
@click.argument("trace_file", type=click.Path(dir_okay=False, path_type=Path))
@db_option
@label_option("Label the imported run (default: the trace's own; `har` for HAR files).")
def import_(trace_file, db, label):
    """Load a trace file written by `export` (or a HAR file of LLM calls) into the database."""
    try:
        run_id = load_file(resolve_path(db), trace_file, label=label)
    except TraceError as e:
        raise UserError(str(e)) from None
    click.echo(run_id)
    return 0


COMMANDS = [export, import_]
