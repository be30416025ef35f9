"""The checks behind `agentprobe scan`: one module per failure mode, each a list of functions
from a ScanContext to Findings. SQL does the scanning; Python only sees aggregates and the
few rows a finding cites, so a million recorded calls scan in seconds."""

from __future__ import annotations

from . import (
    agent_config,
    api_latency,
    config_checks,
    context_overflow,
    prompt_drift,
    race_condition,
    recording,
    temperature_drift,
    token_limit,
    usage,
)
from .base import MADE_BY_AGENTPROBE, MODES, SEVERITIES, Finding, ScanContext, Thresholds, severity_rank

SCAN_MMAP_BYTES = 4 << 30

ALL_CHECKS = [
    *temperature_drift.CHECKS,
    *context_overflow.CHECKS,
    *token_limit.CHECKS,
    *prompt_drift.CHECKS,
    *api_latency.CHECKS,
    *race_condition.CHECKS,
    *usage.CHECKS,
    *recording.CHECKS,
    config_checks.against_runs,
]

__all__ = ["ALL_CHECKS", "Finding", "MODES", "SEVERITIES", "ScanContext", "Thresholds", "peers", "run_checks",
           "scan_runs", "severity_rank", "thresholds_for", "windows_for"]


def peers(db, run_ids: list[str], *, same_label_only: bool = False) -> tuple[list[str], dict[str, str]]:
    """(runs the cross-run rules may compare with, scanned run -> its previous run).

    The previous run is the last earlier run with the same label that made LLM or MCP calls and that
    agentprobe did not make itself (a failed empty run, or a replay, is no baseline); else the
    last earlier such run of any label. same_label_only: compare a run only with the last earlier
    run of its own label (a test's run with the same test's last run), never with other labels as
    if they were environments.
    """
    cross, previous = set(run_ids), {}
    real = (f"NOT {MADE_BY_AGENTPROBE} AND EXISTS (SELECT 1 FROM calls c WHERE c.run_id = r.id"
            " AND (c.api IS NOT NULL OR c.provider = 'mcp'))")
    for run_id in run_ids:
        label = db.execute("SELECT label FROM runs WHERE id = ?", [run_id]).fetchone()[0]
        row = db.execute(
            f"SELECT id FROM runs r WHERE id < ? AND label IS ? AND {real} ORDER BY id DESC LIMIT 1",
            [run_id, label]).fetchone()
        if row is None and not same_label_only:
            row = db.execute(f"SELECT id FROM runs r WHERE id < ? AND {real} ORDER BY id DESC LIMIT 1",
                             [run_id]).fetchone()
        if row:
            previous[run_id] = row[0]
            cross.add(row[0])
        if same_label_only:
            continue
        for (other,) in db.execute(
                f"SELECT max(id) FROM runs r WHERE label IS NOT NULL AND label IS NOT ? AND {real} GROUP BY label",
                [label]):
            cross.add(other)
    return sorted(cross), previous


def run_checks(ctx: ScanContext, extra: list[Finding] = ()) -> list[Finding]:
    findings = list(extra)
    if ctx.run_ids:
        for check in ALL_CHECKS:
            findings.extend(check(ctx))
    return sorted(findings, key=lambda f: (-severity_rank(f.severity), f.rule, f.run_id or ""))


def thresholds_for(config: dict | None, **flags) -> Thresholds:
    """Defaults, overridden by the config's `thresholds`, overridden by flags that were given."""
    thresholds = Thresholds()
    overrides = (config or {}).get("thresholds") or {}
    for name in ("context", "latency_ms", "tool_latency_ms", "usage_tolerance"):
        value = flags.get(name) or overrides.get(name)
        if value:
            setattr(thresholds, name, value)
    return thresholds


def windows_for(config: dict | None) -> dict[str, int]:
    """Context windows the config adds to (or overrides in) the built-in table."""
    windows = dict((config or {}).get("models") or {})
    if config and config.get("context_window"):
        windows[config["model"]] = config["context_window"]
    return windows


def scan_runs(db, run_ids: list[str], *, config: dict | None = None, env: str | None = None,
              thresholds: Thresholds | None = None, same_label_only: bool = False) -> list[Finding]:
    """Every finding for these runs, plus the config's own when one is given; ConfigError for an `env` the
    config lacks (matching runs against an environment that does not exist would find nothing, silently)."""
    agent_config.check_environment(config, env)
    windows = windows_for(config)
    extra = config_checks.static(config, windows) if config else []
    # The rules read the calls table a score of times; mapped pages save each read's copy
    # into SQLite's small page cache (about 15% of a 1M-call scan here).
    db.execute(f"PRAGMA mmap_size = {SCAN_MMAP_BYTES}")
    cross, previous = peers(db, run_ids, same_label_only=same_label_only)
    ctx = ScanContext(db, run_ids, cross_run_ids=cross, previous_run=previous,
                      thresholds=thresholds or thresholds_for(config), config=config, env=env,
                      context_windows=windows)
    return run_checks(ctx, extra)
