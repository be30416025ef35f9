"""The output options every command shares (as sqlite-utils does): `--json` for commands that print one
document, `--json/--nl/--csv/--table` for listings."""

from __future__ import annotations

import csv
import functools
import json
import sys
from collections.abc import Iterable, Sequence

import click


def output_options(fn):
    @click.option("--json", "fmt", flag_value="json", help="Output a JSON array.")
    @click.option("--nl", "fmt", flag_value="nl", help="Output newline-delimited JSON.")
    @click.option("--csv", "fmt", flag_value="csv", help="Output CSV.")
    @click.option("--table", "fmt", flag_value="table", default=True, help="Output a table (default).")
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)

    return wrapper


def json_option(what: str):
    """`--json` (as `as_json`): print `what` as JSON on stdout instead of for a person."""
    return click.option("--json", "as_json", is_flag=True, help=f"Print {what} as JSON on stdout.")


def emit(rows: Iterable[dict], fmt: str, columns: Sequence[str], *, title: str | None = None) -> None:
    """Write rows: all columns for machine formats, `columns` for the table."""
    if fmt == "json":
        # Streamed row by row so a 100,000-call run never sits in memory as one string.
        first = True
        sys.stdout.write("[")
        for row in rows:
            sys.stdout.write(("\n  " if first else ",\n  ") + json.dumps(row, default=str))
            first = False
        sys.stdout.write("]\n" if first else "\n]\n")
        return
    if fmt == "nl":
        for row in rows:
            sys.stdout.write(json.dumps(row, default=str) + "\n")
        return
    if fmt == "csv":
        writer = None
        for row in rows:
            if writer is None:
                writer = csv.DictWriter(sys.stdout, fieldnames=list(row), extrasaction="ignore")
                writer.writeheader()
            writer.writerow({k: _cell(v) for k, v in row.items()})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    # Piped output (less, grep, a CI log) gets room instead of rich's 80-column default.
    console = Console(soft_wrap=False, width=None if sys.stdout.isatty() else 200)
    console.print(table)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def write_output(text: str, output, what: str) -> None:
    """Text to stdout (no path, or "-"), else to the file, saying so on stderr; an unwritable path is one line."""
    from .errors import UserError

    if output is None or str(output) == "-":
        sys.stdout.write(text)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as e:
        raise UserError(f"cannot write {output}: {e.strerror or e}") from None
    click.echo(f"agentprobe: wrote {what} to {output}", err=True)
