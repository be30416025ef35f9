"""The output options every command shares (as sqlite-utils does): `--json` for commands that print one
document, `--json/--nl/--csv/--table` for listings."""

from __future__ import annotations

import csv
import functools
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import click

from ..report.table import Column


FORMATS = ("json", "nl", "csv", "table")


def output_options(fn):
    """--json/--nl/--csv/--table (one of them), and for tables --wide and --columns."""

    @click.option("--json", "as_json", is_flag=True, help="Output a JSON array.")
    @click.option("--nl", "as_nl", is_flag=True, help="Output newline-delimited JSON.")
    @click.option("--csv", "as_csv", is_flag=True, help="Output CSV.")
    @click.option("--table", "as_table", is_flag=True, help="Output a table (default): the columns that fit"
                  " the terminal; every column when piped.")
    @click.option("--wide", is_flag=True, help="Table: every column, however wide.")
    @click.option("--columns", metavar="A,B,C", help="Table: these columns, in this order.")
    @functools.wraps(fn)
    def wrapper(*args, as_json, as_nl, as_csv, as_table, wide, columns, **kwargs):
        from .errors import UserError

        chosen = [name for name, on in zip(FORMATS, (as_json, as_nl, as_csv, as_table)) if on]
        if len(chosen) > 1:
            raise UserError(f"--{chosen[0]} and --{chosen[1]} ask for two formats: give one")
        fmt = chosen[0] if chosen else "table"
        if (wide or columns) and fmt != "table":
            raise UserError(f"--{'wide' if wide else 'columns'} shapes a table; --{fmt} always has every column")
        names = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
        return fn(*args, fmt=Output(fmt, wide, names), **kwargs)

    return wrapper


@dataclass(frozen=True)
class Output:
    format: str
    wide: bool = False
    columns: list[str] | None = None


def json_option(what: str):
    """`--json` (as `as_json`): print `what` as JSON on stdout instead of for a person."""
    return click.option("--json", "as_json", is_flag=True, help=f"Print {what} as JSON on stdout.")


def emit(rows: Iterable[dict], out: Output, columns: Sequence[Column], *, title: str | None = None) -> None:
    """Write rows: every field for machine formats; for a table, the columns that fit."""
    fmt = out.format
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
    from ..report.table import render
    from .errors import UserError

    try:
        render(rows, columns, title=title, wide=out.wide, names=out.columns)
    except ValueError as e:
        raise UserError(f"--columns: {e}") from None


def _cell(value) -> str:
    """A CSV field: exact values (a spreadsheet formats them), JSON for nested ones."""
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value)
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
