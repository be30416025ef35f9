"""Tables that fit the terminal: the most important columns first, ids and model names never wrapped.

As `gh` and `kubectl` do: at a terminal (or when COLUMNS says how wide it is) a table takes the
columns that fit, in their order of importance; `--wide` adds the rest and `--columns` picks them.
Piped into a file or another program, a table keeps every column: nothing is cut there.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table


@dataclass(frozen=True)
class Column:
    name: str
    header: str | None = None  # default: the name
    wide: bool = False  # shown only with --wide (or --columns), never by default
    wrap: bool = False  # free text that may wrap (ids, names and numbers never do)
    max_width: int | None = None  # longer values are cut with an ellipsis
    fmt: Callable[[object], str] | None = None

    @property
    def title(self) -> str:
        return self.header or self.name


def cell(value) -> str:
    """A value as a person reads it in a table: no exponents, no None."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    if isinstance(value, float):
        if value.is_integer():
            return f"{value:.0f}"
        if abs(value) >= 1:
            return f"{value:,.2f}".rstrip("0").rstrip(".")
        return f"{value:.8f}".rstrip("0").rstrip(".")
    return str(value)


def terminal_width() -> int | None:
    """How wide the table may be: the terminal's, or COLUMNS; None when nothing limits it (a pipe)."""
    if os.environ.get("COLUMNS", "").isdigit():
        return int(os.environ["COLUMNS"])
    if sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    return None


def choose(columns: Sequence[Column], *, wide: bool = False, names: Sequence[str] | None = None) -> list[Column]:
    if names:
        by_name = {c.name: c for c in columns}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ValueError(f"unknown column {unknown[0]!r}; known: {', '.join(by_name)}")
        return [by_name[n] for n in names]
    return [c for c in columns if wide or not c.wide]


def fit(rows: list[dict], columns: Sequence[Column], width: int | None) -> list[Column]:
    """The leading columns, in order of importance, that fit `width` (always at least the first)."""
    if width is None:
        return list(columns)
    kept, used = [], 1  # the table's left border
    for col in columns:
        need = _natural_width(rows, col) + 3  # rich's padding and separator
        if kept and used + need > width:
            break  # the rest are less important: none of them before this one
        kept.append(col)
        used += need
    return kept


def _text(col: Column, value) -> str:
    text = col.fmt(value) if col.fmt else cell(value)
    if col.max_width and len(text) > col.max_width:
        text = text[: col.max_width - 1] + "…"
    return text


def _natural_width(rows: list[dict], col: Column) -> int:
    widths = [len(col.title)] + [len(_text(col, row.get(col.name))) for row in rows]
    natural = max(widths)
    if col.wrap:  # free text takes what is left, but not less than its header
        natural = min(natural, max(len(col.title), 20))
    return natural


def render(rows: Iterable[dict], columns: Sequence[Column], *, title: str | None = None, wide: bool = False,
           names: Sequence[str] | None = None, width: int | None = None, console: Console | None = None) -> None:
    rows = list(rows)
    width = terminal_width() if width is None else width
    wanted = choose(columns, wide=wide or width is None, names=names)
    if wide or names:
        # Asked for by name or all of them: every one at its natural width, however long the lines
        # get (the terminal wraps them, `less -S` scrolls), rather than squeezed until ids are cut.
        shown, width = wanted, None
    else:
        shown = fit(rows, wanted, width)
    table = Table(title=title, show_lines=False)
    for col in shown:
        table.add_column(col.title, no_wrap=not col.wrap, overflow="fold" if col.wrap else "ellipsis")
    for row in rows:
        table.add_row(*(_text(col, row.get(col.name)) for col in shown))
    hidden = [c.name for c in wanted if c not in shown]
    console = console or Console(width=width or 10_000, soft_wrap=False)
    console.print(table)
    if hidden:
        console.print(f"{len(hidden)} more column(s) did not fit ({', '.join(hidden)}): --wide or --columns",
                      style="dim")
