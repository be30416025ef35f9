"""A validated analysis as a person reads it: present modes first, worst first, then the fixes in order."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.text import Text

from ..checks import severity_rank
from .validate import Analysis

_STYLE = {"critical": "bold white on red", "high": "bold red", "medium": "yellow", "low": "cyan"}


def print_analysis(analysis: Analysis, meta: dict, console: Console | None = None) -> None:
    console = console or Console(width=None if sys.stdout.isatty() else 120)
    present = sorted(analysis.present, key=lambda v: -severity_rank(v.severity or "low"))
    by = f" by {meta['model']}" if meta.get("model") else ""
    console.print(f"[bold]Failure analysis{by}[/bold] ({meta.get('prompt_version', '')}):"
                  f" {len(present)} of 6 failure modes present\n")
    for v in present:
        head = Text()
        head.append(f" {(v.severity or 'low').upper()} ", style=_STYLE.get(v.severity or "low", ""))
        head.append(f" {v.name}", style="bold")
        console.print(head)
        console.print(Text("    evidence: ", style="dim") + Text(v.evidence))
        for i, step in enumerate(v.steps, 1):
            console.print(Text(f"    {i}. ", style="dim") + Text(step))
        console.print(Text("    fix: ", style="green") + Text(v.fix_strategy))
        console.print()
    absent = [v for v in analysis.modes if not v.present]
    if absent:
        console.print("[bold]Not present[/bold]")
        for v in absent:
            console.print(Text(f"    {v.name}: ", style="dim") + Text(v.evidence or "no reason given"))
        console.print()
    if analysis.not_assessed:
        console.print(f"[yellow]Not assessed by the model:[/yellow] {', '.join(analysis.not_assessed)}\n")
    console.print("[bold]Summary[/bold]")
    console.print(Text("    " + analysis.summary))
    if analysis.priority_fixes:
        console.print("\n[bold]Priority fixes[/bold]")
        for i, fix in enumerate(analysis.priority_fixes, 1):
            console.print(Text(f"    {i}. ") + Text(fix))
