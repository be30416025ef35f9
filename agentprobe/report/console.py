"""Everything agentprobe prints for a person: scan findings, run and serve summaries, a diff, an analysis.

The CLI decides what to print and where; these functions only render. Off a terminal, rich's
80-column default would wrap every line of a CI log, so output gets a wider fixed width there.
"""

from __future__ import annotations

import json
import sys

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from ..checks import Finding, severity_rank

SEVERITY_STYLE = {"critical": "bold white on red", "high": "bold red", "medium": "yellow", "low": "cyan"}


def terminal(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, width=None if stream.isatty() else 120)


def _say(line: str) -> None:
    sys.stderr.write(line + "\n")


def print_findings(findings: list[Finding], meta: dict, console: Console | None = None) -> None:
    console = console or terminal()
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
        head.append(f" {f.severity.upper()} ", style=SEVERITY_STYLE[f.severity])
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


def print_summary(summary: dict, as_json: bool = False) -> None:
    """The numbers `trace` and `record` print when a run ends: JSON on stdout, or lines on stderr.

    What the record lacks (connections around the proxy, no LLM call at all) is said on stderr in
    both cases: a CI log of `trace --json` shows it too.
    """
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        for line in run_warnings(summary):
            _say(line)
        return
    errors = ", ".join(f"{n}x {s}" for s, n in summary["errors_by_status"].items()) or "none"
    status = summary.get("status")
    lines = [f"agentprobe: run {summary['run_id']}" + (f" [{summary['label']}]" if summary["label"] else "")
             + (f" ({status})" if status and status not in ("completed", "running") else "")]
    lines.append(
        f"  calls {summary['calls']} (LLM {summary['llm_calls']}, conversations {summary['conversations']},"
        f" retries {summary['retries']}, streams cut {summary['streams_cut']})"
    )
    if summary.get("mcp_calls"):
        lines.append(f"  MCP {summary['mcp_calls']} (tool calls {summary.get('tool_calls', 0)},"
                     f" failed {summary.get('tool_errors', 0)})")
    lines.append(f"  errors {summary['errors']} (by status: {errors})")
    lines.append(f"  tokens in {summary['input_tokens']:,} / out {summary['output_tokens']:,}")
    if summary["models"]:
        lines.append(f"  models {', '.join(summary['models'])}")
    if summary["wall_time_s"] is not None:
        lines.append(f"  wall time {summary['wall_time_s']:.2f}s")
    if summary["calls_lost"]:
        lines.append(f"  WARNING: {summary['calls_lost']} call(s) could not be recorded")
    bypass = summary.get("bypass") or {}
    if bypass.get("checked"):
        lines.append(f"  bypassed connections {summary.get('bypassed_connections') or 0} (ports"
                     f" {','.join(map(str, bypass.get('ports', [])))} watched, polled every"
                     f" {bypass.get('interval_ms')} ms)")
    _say("\n".join([*lines, *run_warnings(summary)]))


def _endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def bypass_lines(bypass: dict | None) -> list[str]:
    """One line per process whose connections went around the proxy, or one saying none were looked for."""
    if not bypass:
        return []
    if not bypass.get("checked"):
        return [f"agentprobe: bypassed connections were not checked: {bypass.get('reason', 'unknown reason')}"]
    by_process: dict[tuple, list[dict]] = {}
    for b in bypass.get("bypasses", []):
        by_process.setdefault((b["pid"], b["process"]), []).append(b)
    lines = []
    for (pid, process), groups in by_process.items():
        n = sum(g["connections"] for g in groups)
        if len(groups) == 1:
            where = _endpoint(groups[0]["address"], groups[0]["port"])
        else:
            where = ", ".join(f"{_endpoint(g['address'], g['port'])} ({g['connections']})" for g in groups)
        lines.append(f"agentprobe: WARNING: {n} connection{'s' if n != 1 else ''} from {process} (pid {pid}) to"
                     f" {where} bypassed the proxy and {'were' if n != 1 else 'was'} not recorded")
    if bypass.get("poll_errors"):
        lines.append(f"agentprobe: WARNING: {bypass['poll_errors']} of {bypass.get('polls')} polls for bypassed"
                     f" connections failed ({bypass.get('last_error')}): some may not have been seen")
    if bypass.get("groups_left_off"):
        lines.append(f"agentprobe: WARNING: and more from {bypass['groups_left_off']} other process/address"
                     " pair(s): `agentprobe runs --json` has the total")
    return lines


def no_llm_call_lines(summary: dict) -> list[str]:
    """A run without one LLM call says so, with what usually causes it."""
    if summary.get("llm_calls"):
        return []
    causes = []
    bypassed = summary.get("bypassed_connections")
    if bypassed:
        causes.append(f"{bypassed} connection(s) went around the proxy (the warnings above say which process"
                      " and where): that client does not use the proxy")
    if summary.get("calls"):
        causes.append(f"{summary['calls']} request(s) did go through the proxy, but none to an API agentprobe"
                      " recognises as an LLM's (`agentprobe calls` lists them)")
    causes += [
        "a client that ignores HTTPS_PROXY: Node's built-in fetch before Node 24 (the openai, Anthropic and"
        " Vercel AI npm SDKs use it), aiohttp without trust_env=True",
        "NO_PROXY (or no_proxy) names the provider's host, e.g. localhost or 127.0.0.1 for a local model server",
        "a base URL (OPENAI_BASE_URL, ANTHROPIC_BASE_URL, base_url=...) pointing at a server the client reaches"
        " without the proxy: `agentprobe record --upstream URL` records it in reverse mode",
    ]
    if summary.get("command"):
        code = summary.get("exit_code")
        causes.append("the command failed before its first call"
                      + (f" (it exited with {code})" if code not in (None, 0) else ""))
    return ["agentprobe: WARNING: no LLM call was recorded in this run. Likely causes:",
            *(f"  - {c}" for c in causes)]


def run_warnings(summary: dict) -> list[str]:
    return [*bypass_lines(summary.get("bypass")), *no_llm_call_lines(summary)]


def print_serve_summary(summary: dict, as_json: bool = False) -> None:
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        return
    _say(
        f"agentprobe serve: {summary['requests']} request(s): {summary['matched_by_body']} matched the recording"
        f" exactly, {summary['matched_by_conversation']} by their place in a conversation,"
        f" {len(summary['unmatched'])} unmatched",
    )
    for miss in summary["unmatched"]:
        _say(f"  DIVERGED at request {miss['request']} ({miss['path']}): no recorded call matches")
    if summary["never_requested"]:
        _say(f"  recorded calls never requested: seq {summary['never_requested']}")


def print_diff(result: dict) -> None:
    from rich.syntax import Syntax
    from rich.table import Table

    from ..diff.compare import EXPLAIN

    console = terminal()
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
            table.add_row(f["field"] + extra, escape(_diff_cell(f.get("a"))), escape(_diff_cell(f.get("b"))))
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
        table.add_row(metric, *(_diff_cell(e[part][side][metric]) for part in ("before", "after") for side in ("a", "b")))
    console.print(table)


def _diff_cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.6g}"
    return str(value)


def print_analysis(analysis, meta: dict, console: Console | None = None) -> None:
    console = console or terminal()
    present = sorted(analysis.present, key=lambda v: -severity_rank(v.severity or "low"))
    by = f" by {meta['model']}" if meta.get("model") else ""
    console.print(f"[bold]Failure analysis{by}[/bold] ({meta.get('prompt_version', '')}):"
                  f" {len(present)} of 6 failure modes present\n")
    for v in present:
        head = Text()
        head.append(f" {(v.severity or 'low').upper()} ", style=SEVERITY_STYLE.get(v.severity or "low", ""))
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
