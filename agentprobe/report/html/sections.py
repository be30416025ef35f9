"""The page's sections, each a function from the data to an HTML fragment."""

from __future__ import annotations

import difflib
from typing import Any

import sqlite_utils

from ...checks import Finding
from ...checks.models import context_window
from ...util.textdiff import diff_lines
from .data import (
    MAX_CONVERSATIONS_PER_CHART,
    MAX_INVERSION_PAIRS_LISTED,
    MAX_TABLE_CALLS,
    MAX_TIMELINE_CALLS,
    TIME_BUCKETS,
    Conversation,
    RunView,
    conversations_of,
    is_error,
    prompt_sets,
    prompt_text,
)
from .svg import PALETTE, data_scale, legend, ticks, time_axis
from .text import compact, duration, epoch, esc, number


def run_name(view: RunView, index: int, total: int) -> str:
    label = f" ({view.summary['label']})" if view.summary.get("label") else ""
    prefix = f"run {'AB'[index]}: " if total == 2 else "run "
    return f"{prefix}{view.run_id}{label}"


BAD_WHEN_MORE = ("errors", "calls_lost", "streams_cut", "bypassed_connections")


def summary_section(views: list[RunView]) -> str:
    def errors_by_status(s: dict) -> str:
        if not s["errors_by_status"] and not s["errors"]:
            return "none"
        parts = [f"{status} ×{n}" for status, n in s["errors_by_status"].items()]
        return ", ".join(parts) or f"{s['errors']} (no HTTP error status)"

    rows = [
        ("calls", lambda s: number(s["calls"]), "calls"),
        ("LLM calls", lambda s: number(s["llm_calls"]), "llm_calls"),
        ("conversations", lambda s: number(s["conversations"]), "conversations"),
        ("errors", lambda s: number(s["errors"]), "errors"),
        ("errors by status", errors_by_status, None),
        ("retries", lambda s: number(s["retries"]), "retries"),
        ("streams cut", lambda s: number(s["streams_cut"]), "streams_cut"),
        ("input tokens", lambda s: number(s["input_tokens"]), "input_tokens"),
        ("output tokens", lambda s: number(s["output_tokens"]), "output_tokens"),
        ("wall time", lambda s: duration(s["wall_time_s"]), "wall_time_s"),
        ("models", lambda s: ", ".join(s["models"]) or "–", None),
        ("providers", lambda s: ", ".join(s["providers"]) or "–", None),
        ("status", lambda s: s["status"] or "–", None),
        ("command", lambda s: s["command"] or "–", None),
        ("calls lost by the recorder", lambda s: number(s["calls_lost"]), "calls_lost"),
        ("connections around the proxy", lambda s: "not checked" if s.get("bypassed_connections") is None
         else number(s["bypassed_connections"]), "bypassed_connections"),
    ]
    two = len(views) == 2
    def head_cell(v: RunView, i: int) -> str:
        # The id on a line of its own, never broken: a narrow window wraps the label, not the id.
        label = f" ({v.summary['label']})" if v.summary.get("label") else ""
        name = f"run {'AB'[i]}" if len(views) == 2 else "run"
        return f'<th>{esc(name + label)}<br><span class="id">{esc(v.run_id)}</span></th>'

    head = "".join(head_cell(v, i) for i, v in enumerate(views))
    if two:
        head += "<th>B − A</th>"
    body = []
    for name, fmt, key in rows:
        cells = "".join(f'<td data-key="{esc(key or name)}">{esc(fmt(v.summary))}</td>' for v in views)
        if two:
            a, b = (v.summary.get(key) if key else None for v in views)
            delta, worse = "", False
            if isinstance(a, (int, float)) and isinstance(b, (int, float)):
                d = b - a
                sign = "+" if d > 0 else "−" if d < 0 else ""
                delta = sign + (duration(abs(d)) if key == "wall_time_s" else number(abs(d)))
                worse = key in BAD_WHEN_MORE and d > 0  # only more errors is worse: zero or fewer is not red
            cells += f'<td class="delta{" worse" if worse else ""}">{esc(delta)}</td>'
        cls = ' class="bad"' if key in BAD_WHEN_MORE and any(
            (v.summary.get(key) or 0) > 0 for v in views) else ""
        body.append(f"<tr{cls}><th scope=\"row\">{esc(name)}</th>{cells}</tr>")
    cards = []
    for i, v in enumerate(views):
        s = v.summary
        tag = f'<div class="card tag"><b>{"AB"[i]}</b><span>run</span></div>' if two else ""
        cards.append(
            f'<div class="cards" data-run="{esc(v.run_id)}">{tag}'
            f'<div class="card"><b>{esc(number(s["calls"]))}</b><span>calls</span></div>'
            f'<div class="card{" bad" if s["errors"] else ""}"><b>{esc(number(s["errors"]))}</b><span>errors</span></div>'
            f'<div class="card"><b>{esc(compact(s["input_tokens"] or 0))}</b><span>tokens in</span></div>'
            f'<div class="card"><b>{esc(compact(s["output_tokens"] or 0))}</b><span>tokens out</span></div>'
            f'<div class="card"><b>{esc(duration(s["wall_time_s"]))}</b><span>wall time</span></div>'
            f'<div class="card"><b>{esc(len(v.inversions))}</b><span>inversions</span></div>'
            "</div>")
    return (f'<section id="summary"><h2>Summary</h2>{"".join(cards)}'
            f'<div class="wide plain"><table class="summary"><thead><tr><th></th>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>'
            "</section>")


def _call_anchor(run_id: str | None, seq: Any) -> str:
    return f"call-{run_id}-{seq}"


def findings_section(findings: list[Finding], views: list[RunView]) -> str:
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


def timeline_section(view: RunView, name: str) -> str:
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
             time_axis(span, left, width, top + view.lanes * lane_h, view.lanes * lane_h)]
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
               f" status {status}, {duration(b.end - b.start)}"
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


def _context_chart(convs: list[Conversation], window: int | None, y_max: float, threshold: float) -> str:
    left, width, top, plot_h = 64, 910, 10, 220
    max_turn = max(max(t for t, _ in c.points) for c in convs)
    x_of = (lambda turn: left + width / 2) if max_turn == 1 else (
        lambda turn: left + (turn - 1) / (max_turn - 1) * width)

    def y_of(v: float) -> float:
        return top + plot_h - min(v, y_max) / y_max * plot_h

    parts = []
    for t in ticks(0, y_max, 5):
        parts.append(f'<line class="grid" x1="{left}" x2="{left + width}" y1="{y_of(t):.1f}" y2="{y_of(t):.1f}"/>'
                     f'<text class="tick" x="{left - 6}" y="{y_of(t) + 4:.1f}" text-anchor="end">{esc(compact(t))}</text>')
    turn_ticks = [t for t in ticks(1, max_turn, 8) if float(t).is_integer()] if max_turn > 1 else [1]
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
                             f"{esc(text)}: {esc(compact(value))} tokens, above this scale</text>")
                break
    for i, conv in enumerate(convs):
        color = PALETTE[i % len(PALETTE)]
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


def context_section(view: RunView, name: str, threshold: float, windows: dict[str, int]) -> str:
    convs = conversations_of(view)
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
            zoom = _context_chart(shown, window, data_scale(peak), threshold)
            note = (f"{esc(model)}: context window {window:,} tokens; the dashed line is {threshold:.0%}."
                    f" Largest conversation input: {peak:,} tokens ({peak / window:.1%}).")
            body = (f'<div class="scale-toggle"><button type="button" class="zoom" aria-pressed="false">'
                    f"zoom to the data</button></div>"
                    f'<svg class="context-chart" viewBox="0 0 1000 {height}" role="img"'
                    f' aria-label="{esc(f"input tokens per turn for {model}")}" data-model="{esc(model)}"'
                    f' data-window="{window}">'
                    f'<g class="scale-full">{full}</g><g class="scale-zoom" style="display:none">{zoom}</g></svg>')
        else:
            chart = _context_chart(shown, None, data_scale(peak), threshold)
            hint = (f'; add it to the agent config as "models": {{"{esc(model)}": &lt;tokens&gt;}} and pass it'
                    " with --config to report or scan" if model else "")
            note = (f'<span class="unknown-window">The context window of {esc(model or "an unnamed model")} is'
                    f" unknown, so this growth cannot be compared with a limit{hint}.</span>"
                    f" Largest conversation input: {peak:,} tokens.")
            body = (f'<svg class="context-chart unknown" viewBox="0 0 1000 {height}" role="img"'
                    f' aria-label="{esc(f"input tokens per turn for {model}")}" data-model="{esc(model)}">'
                    f"{chart}</svg>")
        rows = "".join(
            f'<tr><td><span class="swatch" style="background:{PALETTE[i % len(PALETTE)]}"></span>'
            f"…{esc(c.id[-8:])}</td><td>{len(c.points)}</td><td>{c.peak:,}</td>"
            f"<td>{esc(f'{c.peak / window:.1%}' if window else 'unknown window')}</td></tr>"
            for i, c in enumerate(shown))
        more = (f'<p class="note">{len(group) - len(shown)} smaller conversation(s) not drawn.</p>'
                if len(group) > len(shown) else "")
        blocks.append(f'<div class="model-block"><h4>{esc(model or "unknown model")}</h4><p>{note}</p>{body}{more}'
                      '<table class="conversations"><thead><tr><th>conversation</th><th>turns</th>'
                      f"<th>peak input tokens</th><th>of window</th></tr></thead><tbody>{rows}</tbody></table></div>")
    return f'<div class="run-block"><h3>{esc(name)}</h3>{"".join(blocks)}</div>'


def over_time_section(view: RunView, name: str) -> str:
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
    for t in ticks(0, y_max, 4):
        y = top + plot_h - t / y_max * plot_h
        parts.append(f'<line class="grid" x1="{left}" x2="{left + width}" y1="{y:.1f}" y2="{y:.1f}"/>'
                     f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{esc(compact(t))}</text>')
    parts.append(time_axis(span, left, width, top + plot_h, 0))
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
                             f"<title>{esc(f'{duration(t_from)}–{duration(t_to)}: {value:,} {what}')}"
                             "</title></rect>")
        if errors[i]:
            parts.append(f'<g class="error-mark"><circle cx="{x + slot / 2 - 1:.1f}" cy="12" r="{min(4 + errors[i], 9)}">'
                         f"<title>{esc(f'{duration(t_from)}–{duration(t_to)}: {errors[i]} failed call(s)')}</title>"
                         f'</circle><text x="{x + slot / 2 - 1:.1f}" y="15.5" text-anchor="middle">{errors[i]}</text></g>')
    parts.append("</svg>")
    return (f'<div class="run-block"><h3>{esc(name)}</h3>'
            + legend([("tokens-in", "input tokens"), ("tokens-out", "output tokens"), ("error-mark", "failed calls")])
            + "".join(parts) + f'<p class="axis-note">Calls are counted when they finished, in {n} slices of'
            f" {duration(span / n)}.</p></div>")


DETAIL_TEXT_LIMIT = 4000  # characters of one prompt, message or answer shown in a call's detail row


def _clip(text: str | None) -> str:
    text = text or ""
    return text if len(text) <= DETAIL_TEXT_LIMIT else text[:DETAIL_TEXT_LIMIT] + f"… ({len(text):,} characters)"


def call_detail(view: dict) -> str:
    """A call's request and answer (what `agentprobe show` prints), for its row's expansion."""
    req, answer = view["request"], view["answer"]
    parts = []
    settings = ", ".join(f"{k}={v}" for k, v in view["settings"].items()) or "none sent (provider defaults)"
    t, c = view["timing"], view["call"]
    place = [f"sent #{t.get('seq')}, finished #{t.get('completion_seq')}", f"started {t.get('started_at') or '–'}"]
    if t.get("ttft_ms") is not None:
        place.append(f"first byte {number(round(t['ttft_ms']))} ms")
    for key, what in (("conversation_id", "conversation"), ("turn", "turn"), ("attempt", "attempt")):
        if c.get(key) is not None:
            place.append(f"{what} {c[key]}")
    parts.append(f"<p><b>call</b> {esc(' · '.join(place))}</p>")
    parts.append(f"<p><b>settings</b> {esc(settings)}</p>")
    if req.get("system"):
        parts.append(f"<h4>system prompt</h4><pre>{esc(_clip(req['system']))}</pre>")
    for m in req.get("messages") or ():
        calls = "".join(f"\n→ {tc.get('name')}({tc.get('arguments')})" for tc in m.get("tool_calls") or ())
        parts.append(f'<h4>{esc(m.get("role"))}</h4><pre>{esc(_clip(str(m.get("content") or "")) + calls)}</pre>')
    if req.get("tools"):
        names = [((t.get("function") or {}).get("name") or t.get("name") or "?") if isinstance(t, dict) else "?"
                 for t in req["tools"]]
        parts.append(f"<p><b>tools</b> {esc(', '.join(names))}</p>")
    calls = "".join(f"\n→ {tc.get('name')}({tc.get('arguments')})" for tc in answer.get("tool_calls") or ())
    parts.append(f"<h4>answer</h4><pre>{esc(_clip(answer.get('text')) + calls) or '(no answer recorded)'}</pre>")
    outcome = view["outcome"]
    if outcome.get("error_message"):
        parts.append(f"<p><b>error</b> {esc(outcome.get('error_type'))}: {esc(outcome['error_message'])}</p>")
    u = view["usage"]
    parts.append(f"<p><b>usage</b> in {esc(number(u.get('input_tokens')))} / out {esc(number(u.get('output_tokens')))}"
                 f" ({esc(u.get('usage_source') or 'not reported')}); counted {esc(number(u.get('counted_input_tokens')))}"
                 f" with {esc(u.get('tokenizer') or '–')}</p>")
    for f in view["findings"]:
        parts.append(f'<p class="sev-{esc(f["severity"])}"><b>{esc(f["rule"])}</b> {esc(f["title"])}</p>')
    return "".join(parts)


def calls_section(view: RunView, name: str) -> str:
    inverted = {c["seq"] for pair in view.inversions for c in pair}
    rows = []
    columns = 13
    for c in view.calls[:MAX_TABLE_CALLS]:
        start = epoch(c["started_at"])
        offset = start - view.t0 if start is not None and view.t0 is not None else None
        cls = " ".join(filter(None, ["error" if is_error(c) else "", "inverted" if c["seq"] in inverted else ""]))
        conv = f"…{c['conversation_id'][-6:]} / {c['turn']}" if c["conversation_id"] else ""
        detail = view.details.get(c["seq"])
        anchor = _call_anchor(view.run_id, c["seq"])
        toggle = (f'<button class="expand" aria-expanded="false" aria-controls="{esc(anchor)}-detail"'
                  f' title="request and answer">▸</button>' if detail else "")
        rows.append(
            f'<tr id="{esc(anchor)}" class="{cls}">'
            f"<td>{toggle}{esc(c['seq'])}</td><td class=\"opt\">{esc(c['completion_seq'])}</td>"
            f"<td class=\"opt\">{esc(duration(offset))}</td>"
            f"<td>{esc(number(round(c['latency_ms'])) if c['latency_ms'] is not None else '–')}</td>"
            f'<td class="id">{esc(c["model"] or c["api"] or c.get("mcp_server") or "")}</td>'
            f"<td>{esc(c['status'] if c['status'] is not None else 'none')}</td><td>{esc(c['finish_reason'])}</td>"
            f"<td>{esc(number(c['input_tokens']))}</td><td>{esc(number(c['output_tokens']))}</td>"
            f'<td class="id opt">{esc(conv)}</td><td class="opt">{esc(c["attempt"] if (c["attempt"] or 1) > 1 else "")}</td>'
            f'<td class="tools">{esc(c.get("tools") or "")}</td>'
            # The error's type in the row; its message, like the request and answer, in the expansion.
            f'<td class="id err" title="{esc(c["error_message"] or "")}">{esc(c["error_type"] or "")}</td></tr>')
        if detail:
            rows.append(f'<tr class="detail" id="{esc(anchor)}-detail" hidden><td colspan="{columns}">'
                        f"{call_detail(detail)}</td></tr>")
    more = (f'<p class="note">Only the first {MAX_TABLE_CALLS:,} of {len(view.calls):,} calls are listed;'
            " `agentprobe calls --run RUN --json` lists them all.</p>" if len(view.calls) > MAX_TABLE_CALLS else "")
    return (f'<div class="run-block"><h3>{esc(name)}</h3>'
            '<label class="filter"><input type="checkbox" class="only-errors"> only failed or out-of-order calls</label>'
            # Columns marked opt give way in a narrow window; the row's expansion still has them.
            '<div class="wide"><table class="calls"><thead><tr><th>seq</th><th class="opt">done</th>'
            '<th class="opt">start</th><th>latency ms</th><th>model</th><th>status</th><th>finish</th><th>in</th>'
            '<th>out</th><th class="opt">conversation / turn</th><th class="opt">attempt</th>'
            '<th class="tools" title="MCP tool calls: asked by call, run as call, result returned by call">tools</th>'
            "<th>error</th></tr>"
            f"</thead><tbody>{''.join(rows)}"
            f"</tbody></table></div>{more}</div>")


def _diff_block(old: str, new: str, old_name: str, new_name: str) -> str:
    lines = diff_lines(old, new, old_name, new_name)
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
        a, b = prompt_sets(db, run_a, column), prompt_sets(db, run_b, column)
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
                text = prompt_text(db, h)
                # Against the most similar prompt run A used, as prompt_drift does, so an edit reads as an edit.
                base = max(removed or old, key=lambda o: difflib.SequenceMatcher(
                    None, prompt_text(db, o), text).quick_ratio(), default=None)
                base_text = prompt_text(db, base) if base else ""
                blocks.append(_diff_block(base_text, text, f"A {run_a} {base[:12] if base else '(none)'}",
                                          f"B {run_b} {h[:12]}"))
            if not added:
                for h in removed:
                    blocks.append(_diff_block(prompt_text(db, h), "", f"A {run_a} {h[:12]}", f"B {run_b} (not sent)"))
            sections.append(f'<div class="prompt-changed" data-kind="{esc(column)}"><h4>{esc(title)}</h4>'
                            f'{"".join(blocks)}</div>')
    if not sections:
        sections.append('<p class="none">Neither run sent a system prompt or tools.</p>')
    return (f'<section id="prompt-diff"><h2>Prompt diff <small>A {esc(run_a)} → B {esc(run_b)}</small></h2>'
            f'{"".join(sections)}</section>')
