"""`scan`: find the failure modes in recorded runs and agent configs."""

from __future__ import annotations

from pathlib import Path

import click

from ..checks import SEVERITIES, scan_runs, severity_rank, thresholds_for, windows_for
from ..checks.config_checks import static
from ..report import render
from ..store.db import open_db
from ..store.queries import resolve_run
from .common import check_environment, db_option, label_option, load_config
from .errors import UserError
from .output import json_option, write_output


FORMATS = ["table", "json", "sarif", "junit", "xml"]


def output_format(fmt: str | None, as_json: bool, output: Path | None) -> str:
    """--format, else --json, else what -o's name says, else a table."""
    if as_json:
        if fmt not in (None, "json"):
            raise UserError(f"--json and --format {fmt} ask for two formats: give one")
        return "json"
    if fmt:
        return fmt
    name = output.name.lower() if output else ""
    if name.endswith((".sarif", ".sarif.json")):
        return "sarif"
    if name.endswith(".json"):
        return "json"
    if name.endswith(".xml"):
        return "junit" if "junit" in name else "xml"
    return "table"


def empty_runs(db, run_ids: list[str]) -> list[str]:
    return [r for r in run_ids if not db.execute("SELECT 1 FROM calls WHERE run_id = ? AND api IS NOT NULL LIMIT 1",
                                                 [r]).fetchone()]


def describe_empty(db, run_id: str) -> str:
    status, code, command = db.execute("SELECT status, exit_code, command FROM runs WHERE id = ?", [run_id]).fetchone()
    parts = [f"status {status}"] + ([f"exit code {code}"] if code is not None else []) \
        + ([f"command {command}"] if command else [])
    return ", ".join(parts)


def select_runs(db, run_refs, all_runs: bool, label: str | None) -> list[str]:
    if all_runs:
        return [r[0] for r in db.execute("SELECT id FROM runs ORDER BY id")]
    if label:
        ids = [r[0] for r in db.execute("SELECT id FROM runs WHERE label = ? ORDER BY id", [label])]
        if not ids:
            raise UserError(f"no runs labelled {label!r}: `agentprobe runs` lists them")
        return ids
    return [resolve_run(db, ref) for ref in (run_refs or ["latest"])]


@click.command()
@db_option
@click.option("--run", "run_refs", multiple=True, help="Run id, prefix or 'latest' (repeatable; default latest).")
@click.option("--all", "all_runs", is_flag=True, help="Scan every recorded run.")
@label_option("Scan every run with this label.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Agent config (agent_config.json) to check, alone or against the runs.")
@click.option("--env", "env_name", help="Config environment the runs should match (default: the run's label).")
@click.option("--format", "fmt", type=click.Choice(FORMATS),
              help="Output format (default: from -o's extension: .json, .sarif, .xml for the analysis XML,"
                   " junit*.xml for JUnit, anything else a table; without -o, a table).")
@json_option("the findings (the same as --format json)")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write the report here.")
@click.option("--fail-on", type=click.Choice(SEVERITIES), help="Exit 1 if any finding is at or above this severity.")
@click.option("--context-threshold", type=click.FloatRange(0, 1, min_open=True), help="Default 0.75.")
@click.option("--latency-budget-ms", type=click.FloatRange(0, min_open=True), help="Default 30000.")
@click.option("--tool-latency-budget-ms", type=click.FloatRange(0, min_open=True),
              help="MCP tool calls slower than this are reported. Default 10000.")
@click.option("--usage-tolerance", type=click.FloatRange(0, min_open=True), help="Default 0.10.")
def scan(db, run_refs, all_runs, label, config_path, env_name, fmt, as_json, output, fail_on, context_threshold,
         latency_budget_ms, tool_latency_budget_ms, usage_tolerance):
    """Find temperature drift, context overflow, truncation, prompt drift, swallowed API errors and
    race conditions in recorded runs (default: the latest) and in an agent config.

    \b
    agentprobe scan                              # the latest run
    agentprobe scan --config agent_config.json   # a config, before anything runs
    agentprobe scan --label prod --fail-on high  # CI gate
    agentprobe scan --format sarif -o agentprobe.sarif
    """
    fmt = output_format(fmt, as_json, output)
    if output is not None and str(output) != "-" and not output.resolve().parent.is_dir():
        raise UserError(f"cannot write {output}: its directory {output.resolve().parent} does not exist")
    config = load_config(config_path)
    thresholds = thresholds_for(config, context=context_threshold, latency_ms=latency_budget_ms,
                                tool_latency_ms=tool_latency_budget_ms, usage_tolerance=usage_tolerance)
    run_ids: list[str] = []
    check_environment(config, env_name)
    if not config or run_refs or all_runs or label:
        database = open_db(db)
        run_ids = select_runs(database, run_refs, all_runs, label)
        empty = empty_runs(database, run_ids)
        if empty and run_refs and len(empty) == len(run_ids):
            raise UserError(f"run {empty[0]} recorded no LLM calls: nothing to scan"
                            f" ({describe_empty(database, empty[0])})")
        for run_id in empty:
            click.echo(f"agentprobe: run {run_id} recorded no LLM calls ({describe_empty(database, run_id)})", err=True)
        findings = scan_runs(database, run_ids, config=config, env=env_name, thresholds=thresholds)
    else:
        findings = sorted(static(config, windows_for(config)), key=lambda f: -severity_rank(f.severity))
    meta = {"runs": run_ids, "config": str(config_path) if config_path else None}
    if fmt == "table" and not output:
        from ..report.console import print_findings

        print_findings(findings, meta)
    else:
        text = render(fmt, findings, meta)
        write_output(text + "\n", output, f"{len(findings)} finding(s)")
    if fail_on:
        from ..report.console import exit_line

        line = exit_line(findings, fail_on)
        if line:
            click.echo(line, err=True)
            return 1
    return 0


COMMANDS = [scan]
