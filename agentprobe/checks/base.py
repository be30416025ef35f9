"""What every check produces, and the context every check reads."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import sqlite_utils

from ..providers import DIALECTS

SEVERITIES = ("low", "medium", "high", "critical")
MODES = ("temperature_drift", "context_overflow", "token_limit", "prompt_drift", "api_latency", "race_condition")


# The APIs that sample an answer from a model. Embeddings and token counting do not: the rules about
# sampling settings, truncated answers, stream usage, conversations and prompts are about these only,
# while the ones about failures, latency and spent tokens read every recorded API call (api IS NOT NULL).
GENERATING_APIS = tuple(sorted(api for dialect in DIALECTS if dialect.GENERATES for api in dialect.APIS))


def generates(column: str = "api") -> str:
    """SQL: the call's api is one that generates (`column` names the api column, e.g. "c.api")."""
    return f"{column} IN ({', '.join(repr(api) for api in GENERATING_APIS)})"


# Runs agentprobe made itself (replays, offline serving, forks): never an environment to compare with,
# never the "previous run" a prompt is diffed against. `r` is the runs table's alias.
MADE_BY_AGENTPROBE = "(r.parent_run_id IS NOT NULL OR coalesce(r.label, '') IN ('replay', 'serve'))"
# MCP tool executions (provider 'mcp' rows have no api: the LLM rules never read them).
TOOL_CALLS = "provider = 'mcp' AND mcp_method = 'tools/call'"


def tool_calls(alias: str = "") -> str:
    """SQL: the row is an MCP tools/call (`alias` is a table alias, e.g. "c")."""
    p = f"{alias}." if alias else ""
    return f"{p}provider = 'mcp' AND {p}mcp_method = 'tools/call'"


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity)


@dataclass
class Finding:
    rule: str  # "<mode>/<rule>", a contract: users filter and suppress by it
    severity: str
    title: str
    evidence: str  # the numbers behind it, in a sentence
    fix: str  # a concrete change that makes it go away
    run_id: str | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)  # {"run_id", "seq", "model", "call_id"}
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def mode(self) -> str:
        return self.rule.split("/", 1)[0]

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, **asdict(self)}


@dataclass
class Thresholds:
    context: float = 0.75
    latency_ms: float = 30_000
    tool_latency_ms: float = 10_000  # an MCP tool call slower than this is reported
    usage_tolerance: float = 0.10  # relative, when our tokenizer is the model's own
    usage_tolerance_estimate: float = 0.35  # when the count is a labelled estimate
    # Providers add a few tokens of framing per message that a text count does not see; on
    # short prompts that alone is 30-50%, so smaller gaps than this are never reported.
    usage_min_tokens: int = 20
    max_call_refs: int = 20  # calls listed per finding; the numbers cover all of them


@dataclass
class ScanContext:
    db: sqlite_utils.Database
    run_ids: list[str]
    # Runs the cross-run rules compare against: the scanned ones plus their peers
    # (the latest run of each other label, and the run before each scanned one).
    cross_run_ids: list[str] = field(default_factory=list)
    previous_run: dict[str, str] = field(default_factory=dict)  # scanned run -> the run it is compared with
    thresholds: Thresholds = field(default_factory=Thresholds)
    config: dict[str, Any] | None = None
    env: str | None = None  # which config environment the runs should match (dev/prod)
    context_windows: dict[str, int] = field(default_factory=dict)  # user additions to the built-in table

    def runs_sql(self, column: str = "run_id", cross: bool = False) -> tuple[str, list[str]]:
        ids = sorted(set(self.run_ids) | set(self.cross_run_ids)) if cross else list(self.run_ids)
        return f"{column} IN ({', '.join('?' for _ in ids)})", ids

    def text(self, sha: str | None) -> str:
        if not sha:
            return ""
        row = self.db.execute("SELECT text FROM prompts WHERE sha256 = ?", [sha]).fetchone()
        return row[0] if row else ""

    def ref(self, row: dict) -> dict[str, Any]:
        return {"run_id": row.get("run_id"), "seq": row.get("seq"), "model": row.get("model"),
                "call_id": row.get("id")}

    def refs(self, rows: list[dict]) -> list[dict[str, Any]]:
        return [self.ref(r) for r in rows[: self.thresholds.max_call_refs]]

    def cited(self, where: str, params: list, columns: str = "", order: str = "seq") -> list[dict]:
        """The calls a finding names: those `where` (SQL over calls) selects, at most max_call_refs of them."""
        cols = "id, run_id, seq, model" + (f", {columns}" if columns else "")
        return list(self.db.query(f"SELECT {cols} FROM calls WHERE {where} ORDER BY {order} LIMIT ?",
                                  [*params, self.thresholds.max_call_refs]))


def by_run(rows: list[dict]) -> list[tuple[str, list[dict]]]:
    """Rows grouped by run, runs in id order, each run's rows in their original order."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["run_id"], []).append(row)
    return sorted(groups.items())


def seqs(rows: list[dict], limit: int = 8) -> str:
    shown = ", ".join(str(r["seq"]) for r in rows[:limit])
    return shown + (f" and {len(rows) - limit} more" if len(rows) > limit else "")
