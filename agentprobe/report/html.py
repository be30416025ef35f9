"""One self-contained HTML page about one run, or two runs side by side.

Everything the page needs is inline (CSS, SVG, a little JS), so it opens from a mail
attachment or a CI artifact with no network. Recorded strings are untrusted (prompts,
error messages, model names all come from the agent or the provider): every one goes
through `esc`, and a CSP with a per-page nonce stops any script that is not ours even if
an escape were ever missed.
"""

from __future__ import annotations

import datetime as dt
import difflib
import html
import math
import secrets
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import sqlite_utils

from .. import __version__
from ..checks import Finding, ScanContext, Thresholds, peers, run_checks
from ..checks.models import context_window
from ..checks.race_condition import inverted_pairs
from ..store.queries import summarize

# Caps that keep a report of a huge run openable; each one is announced on the page when hit.
MAX_TIMELINE_CALLS = 4000
MAX_TABLE_CALLS = 1000
MAX_CONVERSATIONS_PER_CHART = 12
MAX_INVERSION_PAIRS_LISTED = 20
TIME_BUCKETS = 40

_PALETTE = ["#2563eb", "#16a34a", "#9333ea", "#0891b2", "#ca8a04", "#db2777", "#4f46e5", "#65a30d", "#0d9488",
            "#c2410c", "#7c3aed", "#be123c"]
_CALL_COLUMNS = ("id, seq, completion_seq, started_at, first_byte_at, ended_at, latency_ms, ttft_ms, provider, api,"
                 " model, status, error_type, error_message, attempt, retry_of, conversation_id, turn, input_tokens,"
                 " output_tokens, counted_input_tokens, finish_reason, stream, stream_complete")


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _ts(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def _num(n: float | int | None) -> str:
    if n is None:
        return "–"
    return f"{n:,.0f}" if float(n).is_integer() else f"{n:,.2f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    return f"{seconds / 60:.1f} min"


def _compact(n: float) -> str:
    for div, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            v = n / div
            return f"{v:.0f}{suffix}" if v >= 10 or v.is_integer() else f"{v:.1f}{suffix}"
    return f"{n:.0f}" if float(n).is_integer() else f"{n:.2g}"


def _nice_step(span: float, target: int = 6) -> float:
    if span <= 0:
        return 1.0
    raw = span / target
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * power:
            return m * power
    return 10 * power


def _ticks(lo: float, hi: float, target: int = 6) -> list[float]:
    step = _nice_step(hi - lo, target)
    first = (lo // step) * step
    out, v = [], first
    while v <= hi + step * 1e-9:
        if v >= lo - step * 1e-9:
            out.append(round(v, 10))
        v += step
    return out


# -- the data behind the page ------------------------------------------------------------------


@dataclass
class Bar:
    call: dict
    start: float  # seconds from the first call's start
    end: float
    lane: int = 0
    error: bool = False
    open: bool = False  # no end recorded: drawn to its last known instant
    inverted: bool = False


@dataclass
class RunView:
    run_id: str
    summary: dict
    calls: list[dict]
    bars: list[Bar] = field(default_factory=list)
    lanes: int = 0
    t0: float | None = None  # epoch seconds of the first call's start
    span: float = 0.0
    inversions: list[tuple[dict, dict]] = field(default_factory=list)
    truncated_timeline: int = 0


def _is_error(call: dict) -> bool:
    return bool(call["error_type"]) or (call["status"] is not None and call["status"] >= 400) \
        or call["stream_complete"] == 0 or (call["status"] is None and call["ended_at"] is not None)


def _inversions(calls: list[dict]) -> list[tuple[dict, dict]]:
    # The sweep race_condition/completion_inversion counts, so the picture marks exactly its pairs.
    llm = [(i, c["completion_seq"], c["started_at"], c["ended_at"]) for i, c in enumerate(calls) if c["api"] is not None]
    return [(calls[a], calls[b]) for a, b in inverted_pairs(llm)]


def load_run(db: sqlite_utils.Database, run_id: str) -> RunView:
    calls = list(db.query(f"SELECT {_CALL_COLUMNS} FROM calls WHERE run_id = ? ORDER BY seq", [run_id]))
    view = RunView(run_id, summarize(db, run_id), calls)
    view.inversions = _inversions(calls)
    inverted = {c["seq"] for pair in view.inversions for c in pair}
    starts = [t for t in (_ts(c["started_at"]) for c in calls) if t is not None]
    if not starts:
        return view
    view.t0 = min(starts)
    drawn = calls[:MAX_TIMELINE_CALLS]
    view.truncated_timeline = len(calls) - len(drawn)
    lane_ends: list[float] = []
    for call in drawn:
        start = _ts(call["started_at"])
        if start is None:
            continue
        end = _ts(call["ended_at"])
        is_open = end is None
        if end is None:
            end = start + (call["latency_ms"] or 0) / 1000
        bar = Bar(call, start - view.t0, max(end, start) - view.t0, error=_is_error(call), open=is_open,
                  inverted=call["seq"] in inverted)
        # Lowest free lane, so calls that overlap never share a row and sequential ones stay on row 0.
        for lane, lane_end in enumerate(lane_ends):
            if lane_end <= bar.start:
                break
        else:
            lane = len(lane_ends)
            lane_ends.append(0.0)
        bar.lane = lane
        lane_ends[lane] = bar.end
        view.bars.append(bar)
    view.lanes = len(lane_ends)
    view.span = max((b.end for b in view.bars), default=0.0)
    return view


def _findings(db: sqlite_utils.Database, run_ids: list[str], thresholds: Thresholds,
              windows: dict[str, int], config: dict | None) -> list[Finding]:
    # The same peers and context as `scan`, so the page never disagrees with the CI gate.
    cross, previous = peers(db, run_ids)
    ctx = ScanContext(db, run_ids, cross_run_ids=cross, previous_run=previous, thresholds=thresholds,
                      config=config, context_windows=windows)
    return run_checks(ctx)


# -- page sections -----------------------------------------------------------------------------


def _run_name(view: RunView, index: int, total: int) -> str:
    label = f" ({view.summary['label']})" if view.summary.get("label") else ""
    prefix = f"run {'AB'[index]}: " if total == 2 else "run "
    return f"{prefix}{view.run_id}{label}"


def _summary(views: list[RunView]) -> str:
    def errors_by_status(s: dict) -> str:
        if not s["errors_by_status"] and not s["errors"]:
            return "none"
        parts = [f"{status} ×{n}" for status, n in s["errors_by_status"].items()]
        return ", ".join(parts) or f"{s['errors']} (no HTTP error status)"

    rows = [
        ("calls", lambda s: _num(s["calls"]), "calls"),
        ("LLM calls", lambda s: _num(s["llm_calls"]), "llm_calls"),
        ("conversations", lambda s: _num(s["conversations"]), "conversations"),
        ("errors", lambda s: _num(s["errors"]), "errors"),
        ("errors by status", errors_by_status, None),
        ("retries", lambda s: _num(s["retries"]), "retries"),
        ("streams cut", lambda s: _num(s["streams_cut"]), "streams_cut"),
        ("input tokens", lambda s: _num(s["input_tokens"]), "input_tokens"),
        ("output tokens", lambda s: _num(s["output_tokens"]), "output_tokens"),
        ("wall time", lambda s: _duration(s["wall_time_s"]), "wall_time_s"),
        ("models", lambda s: ", ".join(s["models"]) or "–", None),
        ("providers", lambda s: ", ".join(s["providers"]) or "–", None),
        ("status", lambda s: s["status"] or "–", None),
        ("command", lambda s: s["command"] or "–", None),
        ("calls lost by the recorder", lambda s: _num(s["calls_lost"]), "calls_lost"),
    ]
    two = len(views) == 2
    head = "".join(f"<th>{esc(_run_name(v, i, len(views)))}</th>" for i, v in enumerate(views))
    if two:
        head += "<th>B − A</th>"
    body = []
    for name, fmt, key in rows:
        cells = "".join(f'<td data-key="{esc(key or name)}">{esc(fmt(v.summary))}</td>' for v in views)
        if two:
            a, b = (v.summary.get(key) if key else None for v in views)
            delta = ""
            if isinstance(a, (int, float)) and isinstance(b, (int, float)):
                d = b - a
                sign = "+" if d > 0 else "−" if d < 0 else ""
                delta = sign + (_duration(abs(d)) if key == "wall_time_s" else _num(abs(d)))
            cells += f'<td class="delta">{esc(delta)}</td>'
        cls = ' class="bad"' if key in ("errors", "calls_lost", "streams_cut") and any(
            (v.summary.get(key) or 0) > 0 for v in views) else ""
        body.append(f"<tr{cls}><th scope=\"row\">{esc(name)}</th>{cells}</tr>")
    cards = []
    for i, v in enumerate(views):
        s = v.summary
        tag = f'<div class="card tag"><b>{"AB"[i]}</b><span>run</span></div>' if two else ""
        cards.append(
            f'<div class="cards" data-run="{esc(v.run_id)}">{tag}'
            f'<div class="card"><b>{esc(_num(s["calls"]))}</b><span>calls</span></div>'
            f'<div class="card{" bad" if s["errors"] else ""}"><b>{esc(_num(s["errors"]))}</b><span>errors</span></div>'
            f'<div class="card"><b>{esc(_compact(s["input_tokens"] or 0))}</b><span>tokens in</span></div>'
            f'<div class="card"><b>{esc(_compact(s["output_tokens"] or 0))}</b><span>tokens out</span></div>'
            f'<div class="card"><b>{esc(_duration(s["wall_time_s"]))}</b><span>wall time</span></div>'
            f'<div class="card"><b>{esc(len(v.inversions))}</b><span>inversions</span></div>'
            "</div>")
    return (f'<section id="summary"><h2>Summary</h2>{"".join(cards)}'
            f'<table class="summary"><thead><tr><th></th>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
            "</section>")


def _call_anchor(run_id: str | None, seq: Any) -> str:
    return f"call-{run_id}-{seq}"


def _findings_section(findings: list[Finding], views: list[RunView]) -> str:
    shown_runs = {v.run_id for v in views}
    counts = {s: sum(f.severity == s for f in findings) for s in ("critical", "high", "medium", "low")}
    summary = ", ".join(f'<span class="sev sev-{s}">{n} {s}</span>' for s, n in counts.items() if n)
    if not findings:
        return '<section id="findings"><h2>Findings</h2><p class="none">No findings: every check passed.</p></section>'
    items = []
    for f in findings:
        refs = []
        for c in f.calls:
            text = f"{str(c.get('run_id') or '?')[-6:]}#{c.get('seq')}"
            if c.get("run_id") in shown_runs:
                refs.append(f'<a href="#{esc(_call_anchor(c.get("run_id"), c.get("seq")))}">{esc(text)}</a>')
            else:
                refs.append(f"<span>{esc(text)}</span>")
        calls = f'<p class="refs">calls: {" ".join(refs)}</p>' if refs else ""
        items.append(
            f'<article class="finding sev-{esc(f.severity)}" data-rule="{esc(f.rule)}" data-severity="{esc(f.severity)}">'
            f'<header><span class="sev sev-{esc(f.severity)}">{esc(f.severity)}</span> <code>{esc(f.rule)}</code>'
            f" {esc(f.title)}</header>"
            f'<pre class="evidence">{esc(f.evidence)}</pre>{calls}'
            f'<p class="fix"><b>fix:</b> {esc(f.fix)}</p></article>')
    return (f'<section id="findings"><h2>Findings <small>{len(findings)}: {summary}</small></h2>'
            f'{"".join(items)}</section>')


def _time_axis(span: float, x0: float, width: float, y: float, height: float) -> str:
    out = []
    for t in _ticks(0, span or 1):
        x = x0 + (t / (span or 1)) * width
        if height:
            out.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{y - height:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text class="tick" x="{x:.1f}" y="{y + 14:.1f}" text-anchor="middle">{esc(_duration(t) if t else "0")}'
                   "</text>")
    return "".join(out)


def _timeline(view: RunView, name: str) -> str:
    if not view.bars:
        return f'<div class="run-block"><h3>{esc(name)}</h3><p class="none">No calls with timestamps.</p></div>'
    left, width = 48, 930
    lane_h = 18 if view.lanes <= 24 else max(3, 432 // view.lanes)
    top = 8
    height = top + view.lanes * lane_h + 28
    span = view.span or 1e-3
    parts = [f'<svg class="timeline" viewBox="0 0 1000 {height}" role="img" '
             f'aria-label="{esc(f"timeline of {len(view.bars)} calls in {view.lanes} lanes")}" '
             f'data-run="{esc(view.run_id)}" data-lanes="{view.lanes}">',
             _time_axis(span, left, width, top + view.lanes * lane_h, view.lanes * lane_h)]
    for lane in range(view.lanes):
        parts.append(f'<text class="lane-label" x="{left - 6}" y="{top + lane * lane_h + lane_h * 0.7:.1f}"'
                     f' text-anchor="end">{lane + 1 if lane_h >= 12 else ""}</text>')
    positions: dict[int, tuple[float, float, float]] = {}
    for b in view.bars:
        c = b.call
        x = left + b.start / span * width
        w = max(2.0, (b.end - b.start) / span * width)
        y = top + b.lane * lane_h + 2
        h = lane_h - 4 if lane_h > 6 else lane_h - 1
        positions[c["seq"]] = (x, w, y + h / 2)
        classes = ["bar", "error" if b.error else "ok"] + (["inverted"] if b.inverted else []) + (
            ["open"] if b.open else [])
        status = c["status"] if c["status"] is not None else "no response"
        tip = (f"call {c['seq']} (finished {c['completion_seq'] or '?'}): {c['model'] or c['api'] or 'unknown API'},"
               f" status {status}, {_duration(b.end - b.start)}"
               + (f", {c['error_type']}" if c["error_type"] else "")
               + (", finished after a call sent later" if b.inverted else ""))
        label = (f'<text class="bar-label" x="{x + 3:.1f}" y="{y + h * 0.78:.1f}">{esc(c["seq"])}</text>'
                 if w > 22 and h >= 10 else "")
        parts.append(f'<g class="call" data-seq="{esc(c["seq"])}" data-completion="{esc(c["completion_seq"])}">'
                     f'<a href="#{esc(_call_anchor(view.run_id, c["seq"]))}">'
                     f'<rect class="{" ".join(classes)}" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}"'
                     f' rx="2"><title>{esc(tip)}</title></rect>{label}</a></g>')
    # A connector from each earlier-sent call's end to the later-sent call that beat it.
    for a, b in view.inversions[:200]:
        if a["seq"] in positions and b["seq"] in positions:
            ax, aw, ay = positions[a["seq"]]
            bx, bw, by = positions[b["seq"]]
            parts.append(f'<line class="inversion-link" x1="{bx + bw:.1f}" y1="{by:.1f}" x2="{ax + aw:.1f}"'
                         f' y2="{ay:.1f}"><title>{esc(f"call {b["seq"]} was sent after call {a["seq"]} but finished first")}'
                         "</title></line>")
    parts.append("</svg>")
    notes = []
    if view.truncated_timeline:
        notes.append(f"Only the first {MAX_TIMELINE_CALLS:,} calls are drawn; {view.truncated_timeline:,} more are"
                     " in the database.")
    if view.inversions:
        listed = "".join(
            f"<li>call {esc(a['seq'])} was sent before call {esc(b['seq'])} but finished after it"
            f" (completion {esc(a['completion_seq'])} vs {esc(b['completion_seq'])})</li>"
            for a, b in view.inversions[:MAX_INVERSION_PAIRS_LISTED])
        more = (f"<li>and {len(view.inversions) - MAX_INVERSION_PAIRS_LISTED} more</li>"
                if len(view.inversions) > MAX_INVERSION_PAIRS_LISTED else "")
        notes.append(f'<details class="inversions" open><summary>{len(view.inversions)} completion-order'
                     f" inversion(s)</summary><ul>{listed}{more}</ul></details>")
    return (f'<div class="run-block"><h3>{esc(name)}</h3>{"".join(parts)}'
            f'<p class="axis-note">t = 0 is the first call; each row is a lane, so calls in flight together sit on'
            f" separate rows. {view.lanes} lane(s) = at most {view.lanes} calls in flight at once.</p>"
            + "".join(f"<p class=\"note\">{n}</p>" if not n.startswith("<") else n for n in notes) + "</div>")


def _legend(items: list[tuple[str, str]]) -> str:
    return '<p class="legend">' + "".join(
        f'<span><i class="{esc(cls)}"></i>{esc(text)}</span>' for cls, text in items) + "</p>"


@dataclass
class Conversation:
    id: str
    model: str | None
    points: list[tuple[int, int]]  # (turn, input tokens)

    @property
    def peak(self) -> int:
        return max(t for _, t in self.points)


def _conversations(view: RunView) -> list[Conversation]:
    by_id: dict[str, dict[int, int]] = {}
    model_at_peak: dict[str, tuple[int, str | None]] = {}
    for c in view.calls:
        tokens = c["input_tokens"] if c["input_tokens"] is not None else c["counted_input_tokens"]
        if not c["conversation_id"] or tokens is None:
            continue
        turn = c["turn"] or 1
        turns = by_id.setdefault(c["conversation_id"], {})
        turns[turn] = max(turns.get(turn, 0), tokens)
        if tokens >= model_at_peak.get(c["conversation_id"], (-1, None))[0]:
            model_at_peak[c["conversation_id"]] = (tokens, c["model"])
    return [Conversation(cid, model_at_peak[cid][1], sorted(turns.items())) for cid, turns in by_id.items()]


def _context_chart(convs: list[Conversation], window: int | None, y_max: float, threshold: float) -> str:
    left, width, top, plot_h = 64, 910, 10, 220
    max_turn = max(max(t for t, _ in c.points) for c in convs)
    x_of = (lambda turn: left + width / 2) if max_turn == 1 else (
        lambda turn: left + (turn - 1) / (max_turn - 1) * width)

    def y_of(v: float) -> float:
        return top + plot_h - min(v, y_max) / y_max * plot_h

    parts = []
    for t in _ticks(0, y_max, 5):
        parts.append(f'<line class="grid" x1="{left}" x2="{left + width}" y1="{y_of(t):.1f}" y2="{y_of(t):.1f}"/>'
                     f'<text class="tick" x="{left - 6}" y="{y_of(t) + 4:.1f}" text-anchor="end">{esc(_compact(t))}</text>')
    turn_ticks = [t for t in _ticks(1, max_turn, 8) if float(t).is_integer()] if max_turn > 1 else [1]
    for t in turn_ticks:
        parts.append(f'<text class="tick" x="{x_of(t):.1f}" y="{top + plot_h + 16}" text-anchor="middle">'
                     f"turn {int(t)}</text>")
    if window:
        for cls, value, text in (("threshold", window * threshold, f"{threshold:.0%} of the window"),
                                 ("window", window, f"context window {window:,}")):
            if value <= y_max:
                y = y_of(value)
                parts.append(f'<line class="{cls}" x1="{left}" x2="{left + width}" y1="{y:.1f}" y2="{y:.1f}"/>'
                             f'<text class="{cls}-label" x="{left + width}" y="{y - 4:.1f}" text-anchor="end">'
                             f"{esc(text)}</text>")
            else:
                parts.append(f'<text class="offscale" x="{left + width}" y="{top + 12}" text-anchor="end">'
                             f"{esc(text)}: {esc(_compact(value))} tokens, above this scale</text>")
                break
    for i, conv in enumerate(convs):
        color = _PALETTE[i % len(_PALETTE)]
        pts = " ".join(f"{x_of(t):.1f},{y_of(v):.1f}" for t, v in conv.points)
        over = window and conv.peak >= window * threshold
        parts.append(f'<g class="conversation{" over" if over else ""}" data-conversation="{esc(conv.id)}"'
                     f' style="--c:{color}">')
        if len(conv.points) > 1:
            parts.append(f'<polyline class="growth" points="{pts}"/>')
        for t, v in conv.points:
            share = f" ({v / window:.1%} of the window)" if window else ""
            parts.append(f'<circle class="point" cx="{x_of(t):.1f}" cy="{y_of(v):.1f}" r="3.5">'
                         f"<title>{esc(f'conversation …{conv.id[-8:]} turn {t}: {v:,} input tokens{share}')}</title>"
                         "</circle>")
        parts.append("</g>")
    return "".join(parts)


def _data_scale(peak: float) -> float:
    """A y range just above the data that ends on a labelled tick."""
    top = max(peak * 1.1, 10)
    step = _nice_step(top, 5)
    return math.ceil(top / step) * step


def _context(view: RunView, name: str, threshold: float, windows: dict[str, int]) -> str:
    convs = _conversations(view)
    if not convs:
        return (f'<div class="run-block"><h3>{esc(name)}</h3><p class="none">No conversation with recorded input'
                " tokens.</p></div>")
    by_model: dict[str | None, list[Conversation]] = {}
    for c in convs:
        by_model.setdefault(c.model, []).append(c)
    blocks = []
    for model, group in sorted(by_model.items(), key=lambda kv: str(kv[0])):
        group.sort(key=lambda c: (-len(c.points), -c.peak))
        shown = group[:MAX_CONVERSATIONS_PER_CHART]
        window = context_window(model, windows)
        peak = max(c.peak for c in group)
        height = 260
        if window:
            full = _context_chart(shown, window, max(window, peak) * 1.05, threshold)
            zoom = _context_chart(shown, window, _data_scale(peak), threshold)
            note = (f"{esc(model)}: context window {window:,} tokens; the dashed line is {threshold:.0%}."
                    f" Largest conversation input: {peak:,} tokens ({peak / window:.1%}).")
            body = (f'<div class="scale-toggle"><button type="button" class="zoom" aria-pressed="false">'
                    f"zoom to the data</button></div>"
                    f'<svg class="context-chart" viewBox="0 0 1000 {height}" role="img"'
                    f' aria-label="{esc(f"input tokens per turn for {model}")}" data-model="{esc(model)}"'
                    f' data-window="{window}">'
                    f'<g class="scale-full">{full}</g><g class="scale-zoom" style="display:none">{zoom}</g></svg>')
        else:
            chart = _context_chart(shown, None, _data_scale(peak), threshold)
            hint = (f'; add it to the agent config as "models": {{"{esc(model)}": &lt;tokens&gt;}} and pass it'
                    " with --config to report or scan" if model else "")
            note = (f'<span class="unknown-window">The context window of {esc(model or "an unnamed model")} is'
                    f" unknown, so this growth cannot be compared with a limit{hint}.</span>"
                    f" Largest conversation input: {peak:,} tokens.")
            body = (f'<svg class="context-chart unknown" viewBox="0 0 1000 {height}" role="img"'
                    f' aria-label="{esc(f"input tokens per turn for {model}")}" data-model="{esc(model)}">'
                    f"{chart}</svg>")
        rows = "".join(
            f'<tr><td><span class="swatch" style="background:{_PALETTE[i % len(_PALETTE)]}"></span>'
            f"…{esc(c.id[-8:])}</td><td>{len(c.points)}</td><td>{c.peak:,}</td>"
            f"<td>{esc(f'{c.peak / window:.1%}' if window else 'unknown window')}</td></tr>"
            for i, c in enumerate(shown))
        more = (f'<p class="note">{len(group) - len(shown)} smaller conversation(s) not drawn.</p>'
                if len(group) > len(shown) else "")
        blocks.append(f'<div class="model-block"><h4>{esc(model or "unknown model")}</h4><p>{note}</p>{body}{more}'
                      '<table class="conversations"><thead><tr><th>conversation</th><th>turns</th>'
                      f"<th>peak input tokens</th><th>of window</th></tr></thead><tbody>{rows}</tbody></table></div>")
    return f'<div class="run-block"><h3>{esc(name)}</h3>{"".join(blocks)}</div>'


def _over_time(view: RunView, name: str) -> str:
    if not view.bars:
        return f'<div class="run-block"><h3>{esc(name)}</h3><p class="none">No calls with timestamps.</p></div>'
    span = view.span or 1e-3
    n = TIME_BUCKETS
    tokens_in, tokens_out, errors = [0] * n, [0] * n, [0] * n
    for b in view.bars:
        i = min(n - 1, int(b.end / span * n))
        tokens_in[i] += b.call["input_tokens"] or 0
        tokens_out[i] += b.call["output_tokens"] or 0
        errors[i] += b.error
    left, width, top, plot_h = 64, 910, 26, 180
    y_max = max(max(a + b for a, b in zip(tokens_in, tokens_out)), 1) * 1.1
    slot = width / n
    parts = [f'<svg class="usage-chart" viewBox="0 0 1000 {top + plot_h + 24}" role="img"'
             f' aria-label="tokens and errors over time" data-run="{esc(view.run_id)}">',
             '<text class="lane-label" x="4" y="16">errors</text>']
    for t in _ticks(0, y_max, 4):
        y = top + plot_h - t / y_max * plot_h
        parts.append(f'<line class="grid" x1="{left}" x2="{left + width}" y1="{y:.1f}" y2="{y:.1f}"/>'
                     f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{esc(_compact(t))}</text>')
    parts.append(_time_axis(span, left, width, top + plot_h, 0))
    for i in range(n):
        x = left + i * slot + 1
        t_from, t_to = i * span / n, (i + 1) * span / n
        base = top + plot_h
        for cls, what, value in (("tokens-in", "input tokens", tokens_in[i]),
                                 ("tokens-out", "output tokens", tokens_out[i])):
            if value:
                h = value / y_max * plot_h
                base -= h
                parts.append(f'<rect class="{cls}" x="{x:.1f}" y="{base:.1f}" width="{slot - 2:.1f}" height="{h:.1f}">'
                             f"<title>{esc(f'{_duration(t_from)}–{_duration(t_to)}: {value:,} {what}')}"
                             "</title></rect>")
        if errors[i]:
            parts.append(f'<g class="error-mark"><circle cx="{x + slot / 2 - 1:.1f}" cy="12" r="{min(4 + errors[i], 9)}">'
                         f"<title>{esc(f'{_duration(t_from)}–{_duration(t_to)}: {errors[i]} failed call(s)')}</title>"
                         f'</circle><text x="{x + slot / 2 - 1:.1f}" y="15.5" text-anchor="middle">{errors[i]}</text></g>')
    parts.append("</svg>")
    return (f'<div class="run-block"><h3>{esc(name)}</h3>'
            + _legend([("tokens-in", "input tokens"), ("tokens-out", "output tokens"), ("error-mark", "failed calls")])
            + "".join(parts) + f'<p class="axis-note">Calls are counted when they finished, in {n} slices of'
            f" {_duration(span / n)}.</p></div>")


def _calls_table(view: RunView, name: str) -> str:
    inverted = {c["seq"] for pair in view.inversions for c in pair}
    rows = []
    for c in view.calls[:MAX_TABLE_CALLS]:
        start = _ts(c["started_at"])
        offset = start - view.t0 if start is not None and view.t0 is not None else None
        cls = " ".join(filter(None, ["error" if _is_error(c) else "", "inverted" if c["seq"] in inverted else ""]))
        error = c["error_type"] or ""
        if c["error_message"]:
            error += f": {c['error_message'][:200]}"
        conv = f"…{c['conversation_id'][-6:]} / {c['turn']}" if c["conversation_id"] else ""
        rows.append(
            f'<tr id="{esc(_call_anchor(view.run_id, c["seq"]))}" class="{cls}">'
            f"<td>{esc(c['seq'])}</td><td>{esc(c['completion_seq'])}</td><td>{esc(_duration(offset))}</td>"
            f"<td>{esc(_num(round(c['latency_ms'])) if c['latency_ms'] is not None else '–')}</td><td>{esc(c['model'] or c['api'] or '')}</td>"
            f"<td>{esc(c['status'] if c['status'] is not None else 'none')}</td><td>{esc(c['finish_reason'])}</td>"
            f"<td>{esc(_num(c['input_tokens']))}</td><td>{esc(_num(c['output_tokens']))}</td>"
            f"<td>{esc(conv)}</td><td>{esc(c['attempt'] if (c['attempt'] or 1) > 1 else '')}</td>"
            f'<td class="err">{esc(error)}</td></tr>')
    more = (f'<p class="note">Only the first {MAX_TABLE_CALLS:,} of {len(view.calls):,} calls are listed;'
            " `agentprobe calls --run RUN --json` lists them all.</p>" if len(view.calls) > MAX_TABLE_CALLS else "")
    return (f'<div class="run-block"><h3>{esc(name)}</h3>'
            '<label class="filter"><input type="checkbox" class="only-errors"> only failed or out-of-order calls</label>'
            '<div class="scroll"><table class="calls"><thead><tr><th>seq</th><th>done</th><th>start</th>'
            "<th>latency ms</th><th>model</th><th>status</th><th>finish</th><th>in</th><th>out</th>"
            f"<th>conversation / turn</th><th>attempt</th><th>error</th></tr></thead><tbody>{''.join(rows)}"
            f"</tbody></table></div>{more}</div>")


def _prompt_sets(db: sqlite_utils.Database, run_id: str, column: str) -> dict[str | None, list[str]]:
    """model -> hashes in order of first use, like prompt_drift compares them."""
    out: dict[str | None, list[str]] = {}
    for model, h in db.execute(
            f"SELECT model, {column} FROM calls WHERE run_id = ? AND {column} IS NOT NULL ORDER BY seq", [run_id]):
        hashes = out.setdefault(model, [])
        if h not in hashes:
            hashes.append(h)
    return out


def _prompt_text(db: sqlite_utils.Database, sha: str) -> str:
    row = db.execute("SELECT text FROM prompts WHERE sha256 = ?", [sha]).fetchone()
    return (row[0] or "") if row else ""


def _diff_block(old: str, new: str, old_name: str, new_name: str) -> str:
    lines = list(difflib.unified_diff(old.splitlines(), new.splitlines(), old_name, new_name, lineterm="", n=3))
    out = []
    for line in lines:
        cls = ("file" if line.startswith(("---", "+++")) else "hunk" if line.startswith("@@")
               else "add" if line.startswith("+") else "del" if line.startswith("-") else "ctx")
        out.append(f'<div class="{cls}">{esc(line) or " "}</div>')
    # One block per line (not a <pre> with newlines) so added/removed lines get full-width backgrounds.
    return f'<div class="diff">{"".join(out)}</div>'


def prompt_diff(db: sqlite_utils.Database, run_a: str, run_b: str) -> str:
    sections = []
    for column, what in (("system_prompt_sha256", "system prompt"), ("tools_sha256", "tool schema")):
        a, b = _prompt_sets(db, run_a, column), _prompt_sets(db, run_b, column)
        for model in sorted(set(a) | set(b), key=str):
            old, new = a.get(model, []), b.get(model, [])
            title = f"{what} for {model or 'unknown model'}"
            if old == new:
                sections.append(f'<div class="prompt-same"><h4>{esc(title)}</h4><p>unchanged'
                                f" (sha256 {esc(', '.join(h[:12] for h in old))})</p></div>")
                continue
            added = [h for h in new if h not in old]
            removed = [h for h in old if h not in new]
            blocks = []
            for h in added:
                text = _prompt_text(db, h)
                # Against the most similar prompt run A used, as prompt_drift does, so an edit reads as an edit.
                base = max(removed or old, key=lambda o: difflib.SequenceMatcher(
                    None, _prompt_text(db, o), text).quick_ratio(), default=None)
                base_text = _prompt_text(db, base) if base else ""
                blocks.append(_diff_block(base_text, text, f"A {run_a} {base[:12] if base else '(none)'}",
                                          f"B {run_b} {h[:12]}"))
            if not added:
                for h in removed:
                    blocks.append(_diff_block(_prompt_text(db, h), "", f"A {run_a} {h[:12]}", f"B {run_b} (not sent)"))
            sections.append(f'<div class="prompt-changed" data-kind="{esc(column)}"><h4>{esc(title)}</h4>'
                            f'{"".join(blocks)}</div>')
    if not sections:
        sections.append('<p class="none">Neither run sent a system prompt or tools.</p>')
    return (f'<section id="prompt-diff"><h2>Prompt diff <small>A {esc(run_a)} → B {esc(run_b)}</small></h2>'
            f'{"".join(sections)}</section>')


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath("assets", name).read_text(encoding="utf-8")


def render_report(db: sqlite_utils.Database, run_ids: list[str], *, thresholds: Thresholds | None = None,
                  context_windows: dict[str, int] | None = None, config: dict | None = None,
                  generated_at: str | None = None) -> str:
    """The whole page for one run, or for two (A then B) with their prompt diff.

    `context_windows` adds models to the built-in table; `config` is a loaded agent config,
    checked against the runs as `scan --config` does.
    """
    if not 1 <= len(run_ids) <= 2:
        raise ValueError("a report covers one or two runs")
    thresholds = thresholds or Thresholds()
    windows = dict(context_windows or {})
    views = [load_run(db, r) for r in run_ids]
    findings = _findings(db, run_ids, thresholds, windows, config)
    names = [_run_name(v, i, len(views)) for i, v in enumerate(views)]
    nonce = secrets.token_urlsafe(16)
    generated_at = generated_at or dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    title = "agentprobe report: " + " vs ".join(run_ids)
    # The timeline comes before the findings so the first screen shows what happened, not only a list.
    nav = [("summary", "Summary"), ("timeline", "Timeline"), ("findings", "Findings"), ("context", "Context growth"),
           ("usage", "Tokens & errors"), ("calls", "Calls")]
    if len(views) == 2:
        nav.append(("prompt-diff", "Prompt diff"))
    body = [
        _summary(views),
        '<section id="timeline"><h2>Timeline</h2>'
        + _legend([("bar ok", "call"), ("bar error", "failed call"), ("bar inverted", "finished after a later call"),
                   ("inversion-link", "inversion: later call → the earlier one it beat")])
        + "".join(_timeline(v, n) for v, n in zip(views, names)) + "</section>",
        _findings_section(findings, views),
        '<section id="context"><h2>Context growth <small>input tokens per turn, per conversation</small></h2>'
        + "".join(_context(v, n, thresholds.context, windows) for v, n in zip(views, names)) + "</section>",
        '<section id="usage"><h2>Tokens and errors over time</h2>'
        + "".join(_over_time(v, n) for v, n in zip(views, names)) + "</section>",
        '<section id="calls"><h2>Calls</h2>' + "".join(_calls_table(v, n) for v, n in zip(views, names))
        + "</section>",
    ]
    if len(views) == 2:
        body.append(prompt_diff(db, run_ids[0], run_ids[1]))
    links = "".join(f'<a href="#{a}">{esc(t)}</a>' for a, t in nav)
    csp = f"default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-{nonce}'; img-src data:; base-uri 'none'; form-action 'none'"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{esc(csp)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="agentprobe {esc(__version__)}">'
        f"<title>{esc(title)}</title><style>{_asset('report.css')}</style></head>"
        f'<body data-runs="{esc(" ".join(run_ids))}">'
        f'<header class="top"><h1>agentprobe report</h1><p>{esc(" vs ".join(names))} · generated {esc(generated_at)}'
        f" · agentprobe {esc(__version__)}</p>"
        f"<nav>{links}</nav></header>"
        f'<main>{"".join(body)}</main>'
        f'<script nonce="{nonce}">{_asset("report.js")}</script></body></html>\n'
    )
