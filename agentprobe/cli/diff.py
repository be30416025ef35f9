"""`diff`: the first point where two runs (ids or trace files) diverge."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click

from ..diff.compare import diff_runs
from ..diff.sides import load_side
from ..store.db import open_db
from ..store.queries import resolve_run
from ..traces import TraceError, load_file
from .common import db_option
from .errors import UserError
from .output import json_option


def _side(ref: str, db, scratch: Path):
    """A run id (or prefix, or latest) in --db, or a trace / HAR file loaded into a scratch database."""
    path = Path(ref)
    if path.suffix.lower() in (".json", ".har") or path.exists():
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
@click.option("--max-changed", metavar="PCT",
              help="Regression gate: exit 1 only if more than this share of the matched calls changed their output"
                   " (e.g. 10%), 0 otherwise, whatever else differs.")
@json_option("the comparison")
def diff(run_a, run_b, opt_a, opt_b, db, max_changed, as_json):
    """Find where RUN_B first diverges from RUN_A, classify why, and show what followed.

    Each side is a run in the database or a trace file from `agentprobe export` (or a HAR file).
    Exit 0 when the runs match in what matters, 1 when they diverge; with --max-changed, 1 only when
    the share of changed outputs is above it.

    \b
    agentprobe diff 01J9ABC 01J9XYZ
    agentprobe diff --run-a good.json --run-b latest
    agentprobe diff OLD NEW --max-changed 10%
    """
    limit = _share(max_changed) if max_changed is not None else None
    a, b = opt_a or run_a, opt_b or run_b
    if (opt_a and run_a) or (opt_b and run_b) or (run_b and not run_a):
        raise UserError("give the two runs either as arguments or as --run-a/--run-b")
    if not a or not b:
        raise UserError("diff needs two runs: agentprobe diff RUN_A RUN_B")
    with tempfile.TemporaryDirectory(prefix="agentprobe-diff-") as scratch:
        result = diff_runs(_side(a, db, Path(scratch)), _side(b, db, Path(scratch)))
    outputs = result["outputs"]
    if limit is not None:
        result["gate"] = {"max_changed": limit, "passed": outputs["share"] <= limit}
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
    else:
        from ..report.console import print_diff

        print_diff(result)
    if limit is not None:
        return 0 if result["gate"]["passed"] else 1
    return 0 if result["identical"] else 1


def _share(text: str) -> float:
    """10%, 10 or 0.1 -> 0.1 (a bare number above 1 is a percentage)."""
    raw = text.strip()
    try:
        value = float(raw.rstrip("%"))
    except ValueError:
        raise UserError(f"--max-changed {text!r}: expected a share such as 10% or 0.1") from None
    if raw.endswith("%") or value > 1:
        value /= 100
    if not 0 <= value <= 1:
        raise UserError(f"--max-changed {text!r}: must be between 0% and 100%")
    return value


COMMANDS = [diff]
