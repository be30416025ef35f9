"""The default scan output: findings grouped by severity, each with its evidence and fix."""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from ..checks import Finding

_STYLE = {"critical": "bold white on red", "high": "bold red", "medium": "yellow", "low": "cyan"}


def print_findings(findings: list[Finding], meta: dict, console: Console | None = None) -> None:
    import sys

    console = console or Console(width=None if sys.stdout.isatty() else 120)
    scanned = ", ".join(meta.get("runs") or []) or "no runs"
    if meta.get("config"):
        scanned += f" with config {meta['config']}"
    if not findings:
        console.print(f"[green]no findings[/green] in {scanned}")
        return
    counts = {s: sum(f.severity == s for f in findings) for s in ("critical", "high", "medium", "low")}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    console.print(f"[bold]{len(findings)} finding(s)[/bold] in {scanned}: {summary}\n")
    for f in findings:
        head = Text()
        head.append(f" {f.severity.upper()} ", style=_STYLE[f.severity])
        head.append(f" {f.rule}  ", style="bold")
        head.append(f.title)
        console.print(head)
        for line in f.evidence.splitlines():
            console.print(Text("    " + line, style="dim" if line.startswith(("+", "-", "@")) else ""))
        if f.calls:
            where = ", ".join(f"{c['run_id'][-6:] if c.get('run_id') else '?'}#{c['seq']}" for c in f.calls[:8])
            console.print(Text(f"    calls: {where}" + (" ..." if len(f.calls) > 8 else ""), style="dim"))
        console.print(Text("    fix: ", style="green") + Text(f.fix))
        console.print()
