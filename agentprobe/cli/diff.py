"""`diff`: the first point where two runs (ids or trace files) diverge."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import click

from ..diff.compare import EXPLAIN, diff_runs
from ..diff.sides import load_side
from ..store.db import open_db
from ..store.queries import resolve_run
from ..traces import TraceError, load_file
from .common import db_option
from .errors import UserError


def _side(ref: str, db, scratch: Path):
    """A run id (or prefix, or latest) in --db, or a trace / HAR file loaded into a scratch database."""
    path = Path(ref)
    if path.suffix.lower() in (".json", ".har") or path.is_file():
        target = scratch / f"{len(list(scratch.iterdir()))}.db"
        try:
            run_id = load_file(target, path)
        except TraceError as e:
            raise UserError(str(e)) from None
        database = open_db(target)
    else:
        database = open_db(db)
        run_id = resolve_run(database, ref)
    return load_side(database, run_id)


@click.command()
@click.argument("run_a", required=False)
@click.argument("run_b", required=False)
@click.option("--run-a", "opt_a", help="The first run: an id, a prefix, latest, or a trace file.")
@click.option("--run-b", "opt_b", help="The second run.")
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def diff(run_a, run_b, opt_a, opt_b, db, as_json):
    """Find where RUN_B first diverges from RUN_A, classify why, and show what followed.

    Each side is a run in the database or a trace file from `agentprobe export` (or a HAR file).
    Exit 0 when the runs match in what matters, 1 when they diverge.

    \b
    agentprobe diff 01J9ABC 01J9XYZ
    agentprobe diff --run-a good.json --run-b latest
    """
    a, b = opt_a or run_a, opt_b or run_b
    if (opt_a and run_a) or (opt_b and run_b) or (run_b and not run_a):
        raise UserError("give the two runs either as arguments or as --run-a/--run-b")
    if not a or not b:
        raise UserError("diff needs two runs: agentprobe diff RUN_A RUN_B")
    with tempfile.TemporaryDirectory(prefix="agentprobe-diff-") as scratch:
        result = diff_runs(_side(a, db, Path(scratch)), _side(b, db, Path(scratch)))
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
    else:
        print_diff(result)
    return 0 if result["identical"] else 1


def print_diff(result: dict) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.syntax import Syntax
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 120)
    ra, rb = result["run_a"], result["run_b"]
    name = (lambda r: escape(r["id"] + (f" [{r['label']}]" if r["label"] else "")))
    steps = result["steps"]
    console.print(f"A: {name(ra)}, {ra['calls']} call(s)\nB: {name(rb)}, {rb['calls']} call(s)\n"
                  f"{steps['aligned']} step(s) aligned, {steps['only_a']} only in A, {steps['only_b']} only in B\n")
    d = result["divergence"]
    if d is None:
        console.print("[green]identical[/green] in what matters: same requests, outputs, statuses and retries")
        return
    console.print(f"[bold red]first divergence[/bold red] at step {d['index'] + 1}: [bold]{d['kind']}[/bold]"
                  f" ({EXPLAIN[d['kind']]})\n{escape(d['summary'])}\n")
    plain = [f for f in d["fields"] if "diff" not in f]
    if plain:
        table = Table("field", "A", "B")
        for f in plain:
            extra = f" (message {f['index']})" if "index" in f else ""
            extra += f" (similarity {f['similarity']:.0%})" if "similarity" in f else ""
            table.add_row(f["field"] + extra, escape(_cell(f.get("a"))), escape(_cell(f.get("b"))))
        console.print(table)
    for f in d["fields"]:
        if f.get("diff"):
            console.print(f"[bold]{f['field']}[/bold]")
            console.print(Syntax(f["diff"], "diff", theme="ansi_dark", word_wrap=True))
    if result["later_differences"]:
        console.print(f"{result['later_differences']} more step(s) differ after this one.")
    table = Table("from the divergence on", "A before", "B before", "A after", "B after", title="downstream effect")
    e = result["effect"]
    for metric in ("calls", "errors", "input_tokens", "output_tokens", "latency_ms", "cost_usd"):
        table.add_row(metric, *(_cell(e[part][side][metric]) for part in ("before", "after") for side in ("a", "b")))
    console.print(table)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.6g}"
    return str(value)


COMMANDS = [diff]
