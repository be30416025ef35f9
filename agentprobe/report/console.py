"""Everything agentprobe prints for a person: scan findings, run and serve summaries, a diff, an analysis.

The CLI decides what to print and where; these functions only render. Off a terminal, rich's
80-column default would wrap every line of a CI log, so output gets a wider fixed width there.
"""

from __future__ import annotations

import json
import os
import sys

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from ..checks import Finding, severity_rank

SEVERITY_STYLE = {"critical": "bold white on red", "high": "bold red", "medium": "yellow", "low": "cyan"}


def terminal(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    # The terminal's width (or COLUMNS); piped, 120 rather than rich's 80 so a CI log stays readable.
    columns = os.environ.get("COLUMNS", "")
    width = int(columns) if columns.isdigit() else (None if stream.isatty() else 120)
    return Console(file=stream, width=width)


def _say(line: str) -> None:
    sys.stderr.write(line + "\n")


def scanned_text(meta: dict) -> str:
    runs = meta.get("runs") or []
    scanned = ", ".join(runs) if len(runs) <= 3 else f"{len(runs)} runs"
    if meta.get("config"):
        return f"{scanned} with config {meta['config']}" if scanned else f"config {meta['config']}"
    return scanned or "no runs"


def call_refs(calls: list[dict], limit: int = 8) -> str:
    """Calls as findings cite them, RUN#SEQ with the end of the run id: `show` and `--run` take them back."""
    shown = ", ".join(f"{c['run_id'][-6:] if c.get('run_id') else '?'}#{c['seq']}" for c in calls[:limit])
    return shown + (" ..." if len(calls) > limit else "")


def print_findings(findings: list[Finding], meta: dict, console: Console | None = None) -> None:
    console = console or terminal()
    scanned = scanned_text(meta)
    if not findings:
        if scanned == "no runs":  # not "no findings in no runs"
            console.print("no findings: there was no run to scan")
        else:
            console.print(f"[green]no findings[/green] in {escape(scanned)}")
        return
    counts = {s: sum(f.severity == s for f in findings) for s in ("critical", "high", "medium", "low")}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    console.print(f"[bold]{len(findings)} finding(s)[/bold] in {escape(scanned)}: {summary}\n")

    def indented(text: Text) -> None:  # wrapped lines keep the indent, and get no trailing blanks
        for line in text.wrap(console, max(console.width - 4, 20)):
            line.rstrip()
            console.print(Text("    ") + line)

    for f in findings:
        head = Text()
        head.append(f" {f.severity.upper()} ", style=SEVERITY_STYLE[f.severity])
        head.append(f" {f.rule}", style="bold")
        if head.cell_len + 2 + Text(f.title).cell_len <= console.width:
            console.print(head + Text("  " + f.title))
        else:  # a title that would wrap under the severity goes on its own, indented, line
            console.print(head)
            indented(Text(f.title))
        for line in f.evidence.splitlines():
            indented(Text(line, style="dim" if line.startswith(("+", "-", "@")) else ""))
        if f.calls:
            indented(Text(f"calls: {call_refs(f.calls)}", style="dim"))
        indented(Text("fix: ", style="green") + Text(f.fix))
        console.print()


def exit_line(findings: list[Finding], fail_on: str) -> str | None:
    """Why `scan --fail-on` exits 1, in one line (as ruff says why it failed); None when it does not."""
    tripped = [f for f in findings if severity_rank(f.severity) >= severity_rank(fail_on)]
    if not tripped:
        return None
    worst = max(tripped, key=lambda f: severity_rank(f.severity))
    where = f" at {call_refs(worst.calls, 1)}" if worst.calls else ""
    return (f"agentprobe: {len(tripped)} finding(s) at or above {fail_on} (worst: {worst.severity}"
            f" {worst.rule}{where}): exit 1")


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
    for u in summary.get("unreachable") or ():
        lines.append(f"  ERROR: the proxy could not reach {u['host']}:{u['port']} ({u['calls']} call(s)): {u['cause']}"
                     f" - fix: {u['fix']}")
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
        "a client that reads no proxy setting (a raw socket, http.client, aiohttp with an explicit"
        " trust_env=False, a process the command did not start itself)",
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
        f" {len(summary['unmatched'])} unmatched"
        + (f", {len(summary['live'])} sent live" if summary.get("live") else ""),
    )
    for miss in summary["unmatched"]:
        _say(f"  DIVERGED at request {miss['request']} ({miss['path']}): no recorded call matches")
        if miss.get("closest"):
            _say(f"    {miss['why']}")
    if summary.get("live"):
        first = summary["live"][0]
        _say(f"  live from request {first['request']} on ({first['path']}"
             + (f", model {first['model']})" if first.get("model") else ")"))
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
    _print_outputs(console, result)
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


def _print_outputs(console, result: dict) -> None:
    o = result.get("outputs")
    if not o:
        return
    line = (f"outputs changed: {o['share']:.1%} ({o['changed']} of {o['matched']} matched call(s))")
    if o["changed"]:
        line += f", token match of the changed ones {o['changed_mean_match']:.1%} (all: {o['mean_match']:.1%})"
    gate = result.get("gate")
    if gate:
        verdict = "[green]pass[/green]" if gate["passed"] else "[bold red]FAIL[/bold red]"
        line += f"; gate --max-changed {gate['max_changed']:.0%}: {verdict}"
    console.print(line + "\n")


def _diff_cell(value) -> str:
    from .table import cell

    return "-" if value is None else cell(value)


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


def print_call(view: dict, console: Console | None = None) -> None:
    """`agentprobe show`: the call's request, its answer, and the numbers around them."""
    from rich.rule import Rule

    from .table import cell

    console = console or terminal()
    call, outcome = view["call"], view["outcome"]
    console.print(Text(f"{view['ref']}  {call.get('method')} {call.get('host')}{call.get('path')}", style="bold"))
    status = outcome.get("status", "no response")
    console.print(f"{call.get('provider')} {call.get('api') or ''} · model {call.get('model') or '?'}"
                  + (f" (answered by {call['response_model']})" if call.get("response_model") not in
                     (None, call.get("model")) else "") + f" · status {status}")
    settings = ", ".join(f"{k}={cell(v)}" for k, v in view["settings"].items()) or "none sent (provider defaults)"
    console.print(f"settings: {settings}")
    request = view["request"]
    if request.get("system"):
        console.print(Rule("system prompt", align="left"))
        console.print(Text(request["system"]))
    if request.get("messages"):
        console.print(Rule(f"messages ({len(request['messages'])})", align="left"))
        for m in request["messages"]:
            head = Text(f"[{m.get('role')}] ", style="bold cyan")
            console.print(head + Text(str(m.get("content") or "")))
            for tc in m.get("tool_calls") or ():
                console.print(Text(f"    -> {tc.get('name')}({tc.get('arguments')})", style="dim"))
    elif request.get("body") is not None:
        console.print(Rule("request body", align="left"))
        body = request["body"]
        console.print(Text(body if isinstance(body, str) else json.dumps(body, indent=2, ensure_ascii=False)))
    if request.get("tools"):
        names = [((t.get("function") or {}).get("name") or t.get("name") or "?") if isinstance(t, dict) else "?"
                 for t in request["tools"]]
        console.print(Text(f"tools: {', '.join(names)}", style="dim"))
    answer = view["answer"]
    console.print(Rule("answer", align="left"))
    if answer.get("text"):
        console.print(Text(answer["text"]))
    for tc in answer.get("tool_calls") or ():
        console.print(Text(f"-> {tc.get('name')}({tc.get('arguments')})", style="cyan"))
    if not answer.get("text") and not answer.get("tool_calls"):
        console.print(Text("(no answer recorded)", style="dim"))
    console.print(Rule(style="dim"))
    t, u = view["timing"], view["usage"]

    def ms(value) -> str:  # a time that was never measured (no first byte) is "-", not " ms"
        return "-" if value is None else f"{cell(value)} ms"

    def n(value) -> str:
        return "-" if value is None else cell(value)

    console.print(f"timing: latency {ms(t.get('latency_ms'))}, first byte {ms(t.get('ttft_ms'))},"
                  f" sent #{t.get('seq')}, finished #{n(t.get('completion_seq'))}, started {t.get('started_at')}")
    console.print(f"usage: in {n(u.get('input_tokens'))} / out {n(u.get('output_tokens'))}"
                  f" ({u.get('usage_source') or 'not reported'}); counted {n(u.get('counted_input_tokens'))}"
                  f" with {u.get('tokenizer') or '-'}")
    rest = {k: v for k, v in outcome.items() if k != "status"}
    if rest:
        console.print("outcome: " + ", ".join(f"{k}={cell(v)}" for k, v in rest.items()))
    for f in view["findings"]:
        head = Text()
        head.append(f" {f['severity'].upper()} ", style=SEVERITY_STYLE[f["severity"]])
        head.append(f" {f['rule']}  ", style="bold")
        head.append(f["title"])
        console.print(head)
