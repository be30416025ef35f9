"""`report`: one self-contained HTML page about a run, or two runs compared."""

from __future__ import annotations

from pathlib import Path

import click

from ..checks import thresholds_for, windows_for
from ..report.html import render_report
from ..store.db import open_db
from ..store.queries import resolve_run
from .common import db_option, load_config
from .errors import UserError
from .output import write_output


@click.command()
@db_option
@click.argument("run", default="latest")
@click.argument("run_b", required=False)
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
              default=Path("agentprobe-report.html"), show_default=True,
              help="Where to write the page ('-' for stdout).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Agent config (agent_config.json): its models' context windows and its settings are checked too.")
@click.option("--context-threshold", type=click.FloatRange(0, 1, min_open=True),
              help="Share of the context window drawn as the warning line (default 0.75).")
def report(db, run, run_b, output, config_path, context_threshold):
    """Write an HTML report of RUN (default: latest), or of RUN against RUN_B with their prompt diff.

    The page needs no network: summary, findings with evidence, a timeline of calls, context
    growth against each model's window, tokens and errors over time.

    \b
    agentprobe report latest -o report.html
    agentprobe report 01J9ABC 01J9XYZ -o compare.html
    """
    config = load_config(config_path)
    # Windows and thresholds are taken from the config exactly as `scan --config` takes them.
    windows = windows_for(config)
    thresholds = thresholds_for(config, context=context_threshold)
    database = open_db(db)
    run_ids = [resolve_run(database, run)]
    if run_b is not None:
        second = resolve_run(database, run_b)
        if second == run_ids[0]:
            raise UserError(f"RUN and RUN_B are the same run ({second}): give two different runs to compare")
        run_ids.append(second)
    page = render_report(database, run_ids, thresholds=thresholds, context_windows=windows, config=config)
    write_output(page, output, f"the report of {' vs '.join(run_ids)}")
    return 0


COMMANDS = [report]
