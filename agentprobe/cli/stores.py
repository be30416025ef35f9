"""`copy` and `prune`: move runs between stores, and let old ones go."""

from __future__ import annotations

import json

import click

from .common import Database, label_option
from .errors import UserError


def _same_store(a, b) -> bool:
    from ..store.db import is_postgres, resolve_path

    a, b = resolve_path(a), resolve_path(b)
    if is_postgres(a) or is_postgres(b):
        return a == b
    return a.resolve() == b.resolve()


@click.command("copy")
@click.argument("run_refs", nargs=-1, required=True, metavar="RUN...")
@click.option("--to", "target", type=Database(), required=True, metavar="PATH|URL",
              help="The store to copy into: a SQLite file or postgresql://user@host/dbname (created and migrated"
                   " if need be).")
@click.option("--from", "source", type=Database(), envvar="AGENTPROBE_DB", metavar="PATH|URL",
              help="The store to copy from (default: $AGENTPROBE_DB, else .agentprobe/agentprobe.db).")
@click.option("--json", "as_json", is_flag=True, help="Print what was copied as JSON.")
def copy_command(run_refs, target, source, as_json):
    """Copy runs, with their calls, bodies and prompts, into another store.

    \b
    agentprobe copy latest --to postgresql://me@db.internal/agentprobe   # laptop -> team database
    agentprobe copy 01J... --from postgresql://me@db.internal/agentprobe --to here.db

    Copying a run again adds only what the target lacks.
    """
    from ..store.transfer import copy_runs

    if _same_store(source, target):
        raise UserError("--from and --to name the same store: nothing to copy")
    done = copy_runs(list(run_refs), source, target)
    if as_json:
        click.echo(json.dumps({"runs": done.runs, "calls": done.calls, "bodies": done.bodies,
                               "prompts": done.prompts}))
        return
    click.echo(f"agentprobe: copied {len(done.runs)} run(s) to {target}: {done.calls} new call(s),"
               f" {done.bodies} bodies, {done.prompts} prompt(s)", err=True)


@click.command()
@click.option("--db", type=Database(), envvar="AGENTPROBE_DB",
              help="SQLite file or postgresql://user@host/dbname (default: $AGENTPROBE_DB, else"
                   " .agentprobe/agentprobe.db).")
@click.option("--older-than", "older_than", required=True, metavar="AGE",
              help="Delete runs started longer ago than this: 30d, 12h, 2w (units s, m, h, d, w).")
@label_option("Only runs with this label.")
@click.option("--dry-run", is_flag=True, help="Say what would be deleted, delete nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def prune(db, older_than, label, dry_run, as_json):
    """Delete old runs, their calls, and bodies and prompts no call names any more.

    A run still recording is kept, however old. Safe while a recorder writes to the same store.
    """
    from ..store.retention import parse_age, prune as prune_store

    done = prune_store(db, parse_age(older_than), label=label, dry_run=dry_run)
    if as_json:
        click.echo(json.dumps(done.to_dict()))
        return
    verb = "would free" if dry_run else "freed"
    kept = f"; kept {done.kept_running} old run(s) still recording" if done.kept_running else ""
    click.echo(f"agentprobe: {verb} {done.runs} run(s), {done.calls} call(s), {done.bodies} bodies"
               f" ({_size(done.body_bytes)}) and {done.prompts} prompt(s) ({_size(done.prompt_bytes)}){kept}")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


COMMANDS = [copy_command, prune]
