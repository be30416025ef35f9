"""The measured-evidence section of the analyst prompt: scan findings and run statistics, cut to a
token budget. Every line is a fact agentprobe measured, so the model can cite it instead of guessing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..capture import tokens
from ..checks import SEVERITIES, Finding, ScanContext, Thresholds, peers, run_checks, severity_rank
from ..checks.base import generates
from ..checks.config_checks import static
from ..checks.models import context_window
from ..store.queries import summarize

MAX_LINE = 600  # characters; a finding's evidence is a sentence or two, never a dump
TOP_CONVERSATIONS = 5
SERIES_POINTS = 8  # turns shown in a growth series before the middle is elided
_LLM = "coalesce(provider, 'unknown') != 'unknown'"


@dataclass
class Item:
    severity: str
    text: str
    kind: str  # "stat" or "finding"


@dataclass
class Evidence:
    runs: list[str]
    config_path: str | None = None
    stats: list[Item] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def items(self) -> list[Item]:
        return self.stats + [Item(f.severity, _finding_line(f), "finding") for f in self.findings]


@dataclass
class Section:
    text: str
    tokens: int
    tokenizer: str
    budget: int
    dropped: list[Item] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "tokenizer": self.tokenizer, "budget": self.budget,
                "dropped": [{"severity": i.severity, "kind": i.kind} for i in self.dropped]}


def gather(db, run_ids: list[str], config: dict | None = None, env: str | None = None) -> Evidence:
    """Findings exactly as `agentprobe scan` would report them, plus the statistics behind them."""
    from ..checks.agent_config import check_environment

    check_environment(config, env)
    thresholds = Thresholds()
    for name, value in ((config or {}).get("thresholds") or {}).items():
        setattr(thresholds, name, value)
    windows = dict((config or {}).get("models") or {})
    if config and config.get("context_window"):
        windows[config["model"]] = config["context_window"]
    extra = static(config, windows) if config else []
    if db is not None and run_ids:
        cross, previous = peers(db, run_ids)
        ctx = ScanContext(db, run_ids, cross_run_ids=cross, previous_run=previous, thresholds=thresholds,
                          config=config, env=env, context_windows=windows)
        findings = run_checks(ctx, extra)
    else:
        findings = sorted(extra, key=lambda f: -severity_rank(f.severity))
    stats = []
    for run_id in run_ids:
        stats += run_stats(db, run_id, windows)
    if config:
        stats.append(Item("medium", config_line(config), "stat"))
    return Evidence(list(run_ids), config.get("_path") if config else None, stats, findings)


# -- statistics --------------------------------------------------------------------------------


def run_stats(db, run_id: str, windows: dict[str, int]) -> list[Item]:
    """Statistics carry a severity too, so one budget trims them alongside findings: a run's totals
    and errors are what every conclusion leans on (high), settings and the largest conversation
    explain drift and overflow (medium), the rest only corroborate (low)."""
    s = summarize(db, run_id)
    head = f"run {run_id}"
    described = ", ".join(x for x in (
        f"label {s['label']}" if s["label"] else "",
        f"status {s['status']}" if s["status"] else "",
        f"exit code {s['exit_code']}" if s["exit_code"] is not None else "") if x)
    line = (f"{head}{f' ({described})' if described else ''}: {s['llm_calls']} LLM call(s) in"
            f" {s['conversations']} conversation(s), model(s) {', '.join(s['models']) or 'unknown'};"
            f" {s['input_tokens']:,} input and {s['output_tokens']:,} output tokens reported;"
            f" {s['errors']} error(s), {s['retries']} retried call(s), {s['streams_cut']} stream(s) cut")
    if s["calls_lost"]:
        line += f"; {s['calls_lost']} call(s) lost by the recorder, so the record is incomplete"
    if s.get("bypassed_connections"):
        line += (f"; {s['bypassed_connections']} connection(s) of the command went around the proxy, so calls"
                 " may be missing from the record")
    items = [Item("high", line + ".", "stat")]
    errors = error_line(db, run_id)
    if errors:
        items.append(Item("high", errors, "stat"))
    items.append(Item("medium", parameter_line(db, run_id), "stat"))
    items += conversation_lines(db, run_id, windows)
    items.append(order_line(db, run_id))
    return items


def error_line(db, run_id: str) -> str | None:
    rows = list(db.query(
        "SELECT status, error_type, count(*) AS n, group_concat(seq) AS seqs, max(retry_after_s) AS retry_after"
        " FROM (SELECT status, error_type, seq, retry_after_s FROM calls WHERE run_id = ?"
        " AND (error_type IS NOT NULL OR status >= 400 OR status IS NULL) ORDER BY seq)"
        " GROUP BY status, error_type ORDER BY n DESC", [run_id]))
    if not rows:
        return None
    parts = []
    for r in rows[:6]:
        what = f"HTTP {r['status']}" if r["status"] is not None else "no response"
        if r["error_type"]:
            what += f" {r['error_type']}"
        seqs = (r["seqs"] or "").split(",")
        shown = ", ".join(seqs[:6]) + (f" and {len(seqs) - 6} more" if len(seqs) > 6 else "")
        extra = f", retry-after up to {r['retry_after']:g}s" if r["retry_after"] is not None else ""
        parts.append(f"{what} x{r['n']} (call(s) {shown}{extra})")
    more = f"; {len(rows) - 6} other kind(s)" if len(rows) > 6 else ""
    return f"errors in run {run_id}: " + "; ".join(parts) + more + "."


def _value(column: str, value) -> str:
    if value is None:
        return "not sent"
    if column == "parallel_tool_calls":
        return "true" if value else "false"
    return f"{value:g}" if isinstance(value, float) else str(value)


def parameter_line(db, run_id: str) -> str:
    parts = []
    for column in ("temperature", "top_p", "max_tokens", "seed", "parallel_tool_calls"):
        rows = db.execute(
            f"SELECT {column}, count(*) AS n FROM calls WHERE run_id = ? AND {generates()}"
            f" GROUP BY {column} ORDER BY n DESC, {column}", [run_id]).fetchall()
        # An absent temperature or max_tokens is itself a finding-worthy fact; other unset knobs are noise.
        if not rows or (column not in ("temperature", "max_tokens") and all(v is None for v, _ in rows)):
            continue
        values = ", ".join(f"{_value(column, v)} ({n})" for v, n in rows[:5])
        if len(rows) > 5:
            values += f", {len(rows) - 5} other value(s)"
        parts.append(f"{column} {values}")
    streamed, total = db.execute(
        f"SELECT coalesce(sum(stream), 0), count(*) FROM calls WHERE run_id = ? AND {generates()}",
        [run_id]).fetchone()
    parts.append(f"streamed {streamed} of {total}")
    return f"parameters sent in run {run_id} (calls per value): " + "; ".join(parts) + "."


def _series(points: list[int]) -> str:
    shown = [f"{p:,}" for p in points]
    if len(shown) > SERIES_POINTS:
        half = SERIES_POINTS // 2
        shown = shown[:half] + ["..."] + shown[-half:]
    return " -> ".join(shown)


def conversation_lines(db, run_id: str, windows: dict[str, int]) -> list[Item]:
    tokens_sql = "coalesce(input_tokens, counted_input_tokens)"
    total = db.execute(
        "SELECT count(DISTINCT conversation_id) FROM calls WHERE run_id = ? AND conversation_id IS NOT NULL",
        [run_id]).fetchone()[0]
    # Aggregate in SQL first: a run with thousands of conversations must not be pulled into Python.
    top = list(db.query(
        f"SELECT conversation_id, count(*) AS calls, max({tokens_sql}) AS peak,"
        f" (SELECT model FROM calls c2 WHERE c2.run_id = calls.run_id AND c2.conversation_id = calls.conversation_id"
        f"  ORDER BY {tokens_sql} DESC LIMIT 1) AS model"
        f" FROM calls WHERE run_id = ? AND conversation_id IS NOT NULL"
        f" GROUP BY conversation_id ORDER BY peak IS NULL, peak DESC, conversation_id LIMIT ?",
        [run_id, TOP_CONVERSATIONS]))
    items = []
    for rank, conv in enumerate(top):
        points = [t for (t,) in db.execute(
            f"SELECT max({tokens_sql}) FROM calls WHERE run_id = ? AND conversation_id = ?"
            f" GROUP BY turn ORDER BY turn", [run_id, conv["conversation_id"]]) if t is not None]
        window = context_window(conv["model"], windows)
        line = (f"conversation {conv['conversation_id'][-8:]} in run {run_id} ({conv['model'] or 'unknown model'},"
                f" {len(points)} turn(s), {conv['calls']} call(s)): input tokens per turn {_series(points) or 'unknown'}")
        if len(points) > 1:
            line += f", +{(points[-1] - points[0]) / (len(points) - 1):,.0f} per turn on average"
        if conv["peak"] and window:
            share = conv["peak"] / window
            line += f"; peak {conv['peak']:,} = {f'{share:.1%}' if share >= 0.001 else 'under 0.1%'} of the" \
                    f" {window:,}-token window"
        elif conv["peak"]:
            line += f"; peak {conv['peak']:,}, context window unknown"
        # The largest conversation says most about overflow; the rest are corroboration.
        items.append(Item("medium" if rank == 0 else "low", line + ".", "stat"))
    if total > len(top):
        items.append(Item("low", f"{total - len(top)} smaller conversation(s) in run {run_id} not listed.", "stat"))
    return items


def order_line(db, run_id: str) -> Item:
    """How much the run overlapped, and how often a call finished before one dispatched earlier."""
    open_calls: list[tuple] = []
    widest, pairs, example = 1, 0, None
    for row in db.execute(
            f"SELECT seq, completion_seq, started_at, ended_at FROM calls WHERE run_id = ? AND {_LLM}"
            " AND started_at IS NOT NULL AND ended_at IS NOT NULL AND completion_seq IS NOT NULL ORDER BY seq",
            [run_id]):
        open_calls = [a for a in open_calls if a[3] > row[2]]
        for a in open_calls:
            if a[1] > row[1]:
                pairs += 1
                example = example or (a[0], row[0])
        open_calls.append(row)
        widest = max(widest, len(open_calls))
    if widest == 1:
        return Item("low", f"ordering in run {run_id}: calls ran one at a time, so none could finish out of"
                           " dispatch order.", "stat")
    line = f"ordering in run {run_id}: up to {widest} calls were in flight at once; {pairs} pair(s) finished in" \
           " reverse dispatch order"
    if example:
        line += f" (e.g. call {example[0]} was sent before call {example[1]} but finished after it)"
    return Item("medium" if pairs else "low", line + ".", "stat")


def config_line(config: dict) -> str:
    parts = [f"model {config['model']}"]
    if config.get("provider"):
        parts.append(f"provider {config['provider']}")
    if config.get("context_window"):
        parts.append(f"context_window {config['context_window']:,}")
    for name, env in sorted((config.get("environments") or {}).items()):
        knobs = ", ".join(f"{k} {_value(k, v)}" for k, v in env.items()) or "nothing pinned"
        parts.append(f"{name}: {knobs}")
    for key in ("parallel_tool_calls", "tool_results_reordered_by_index", "halt_on_error", "expected_output_tokens"):
        if key in config:
            parts.append(f"{key} {_value(key, config[key]).lower()}")
    for key in ("retries", "timeouts"):
        if config.get(key):
            parts.append(f"{key} " + ", ".join(f"{k} {v}" for k, v in config[key].items()))
    if config.get("tools"):
        parts.append(f"{len(config['tools'])} tool(s) defined")
    if config.get("_system_prompt_sha256"):
        pinned = "pinned" if (config.get("system_prompt") or {}).get("sha256") else "from its text"
        parts.append(f"system prompt sha256 {config['_system_prompt_sha256'][:12]} ({pinned})")
    return f"agent config {config.get('_path', '')}: " + "; ".join(parts) + "."


# -- the section -------------------------------------------------------------------------------


def _finding_line(f: Finding) -> str:
    line = f"[{f.severity}] {f.rule}: {f.title}. {f.evidence}"
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 3] + "..."


def _render(ev: Evidence, kept: list[Item], dropped: list[Item], budget: int) -> str:
    sources = []
    if ev.runs:
        sources.append(f"recorded API traffic (run(s) {', '.join(ev.runs)})")
    if ev.config_path:
        sources.append(f"its config ({ev.config_path})")
    lines = [
        "<measured_evidence>",
        f"Measured by agentprobe from the agent's {' and '.join(sources)}. A call number is the call's position"
        " in dispatch order within its run; bracketed severities and rule ids are agentprobe's own.",
    ]
    if dropped:
        gone = [i for i in dropped if i.kind == "finding"]
        by = ", ".join(f"{n} {sev}" for sev in reversed(SEVERITIES)
                       if (n := sum(i.severity == sev for i in gone)))
        what = " and ".join(x for x in (f"{len(gone)} finding(s) ({by})" if gone else "",
                                         f"{len(dropped) - len(gone)} statistic line(s)"
                                         if len(dropped) > len(gone) else "") if x)
        again = "".join(f" --run {r}" for r in ev.runs)
        lines.append(f"Trimmed to fit {budget:,} tokens, least severe first: {what} left out."
                     f" `agentprobe scan{again}` lists every finding.")
    stats = [i for i in kept if i.kind == "stat"]
    findings = [i for i in kept if i.kind == "finding"]
    if stats:
        lines.append("Statistics:")
        lines += [f"- {i.text}" for i in stats]
    total = len(ev.findings)
    if not total:
        lines.append("Findings: none; no agentprobe scan rule fired on this evidence.")
    else:
        lines.append(f"Findings, most severe first ({len(findings)} of {total}):" if len(findings) < total
                     else "Findings, most severe first:")
        lines += [f"- {i.text}" for i in findings]
    lines.append("</measured_evidence>")
    return "\n".join(lines)


def fit(ev: Evidence, budget: int, model: str | None = None) -> Section:
    """The section, with the least severe items dropped until it fits `budget` tokens.

    Statistics go before findings of the same severity: a finding already carries its own numbers.
    """
    items = ev.items
    drop_order = sorted(range(len(items)), key=lambda i: (severity_rank(items[i].severity),
                                                          0 if items[i].kind == "stat" else 1, -i))
    costs = [tokens.count(f"- {item.text}\n", model)[0] for item in items]
    overhead = tokens.count(_render(ev, [], [], budget), model)[0]
    dropped: set[int] = set()
    estimate, pos = overhead + sum(costs), 0
    # Per-line counts add up closely; the exact count below settles the rest one item at a time.
    while pos < len(drop_order) and estimate > budget:
        dropped.add(drop_order[pos])
        estimate -= costs[drop_order[pos]]
        pos += 1
    while True:
        gone = [items[k] for k in drop_order if k in dropped]
        text = _render(ev, [it for k, it in enumerate(items) if k not in dropped], gone, budget)
        used, tokenizer = tokens.count(text, model)
        if used <= budget or pos >= len(drop_order):
            return Section(text, used, tokenizer, budget, gone)
        dropped.add(drop_order[pos])
        pos += 1
