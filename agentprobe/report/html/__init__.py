"""One self-contained HTML page about one run, or two runs side by side.

Everything the page needs is inline (CSS, SVG, a little JS), so it opens from a mail
attachment or a CI artifact with no network. Recorded strings are untrusted (prompts,
error messages, model names all come from the agent or the provider): every one goes
through `esc`, and a CSP with a per-page nonce stops any script that is not ours even if
an escape were ever missed.
"""

from __future__ import annotations

import datetime as dt
import secrets
from importlib import resources

import sqlite_utils

from ... import __version__
from ...checks import Thresholds
from .data import load_details, load_run, run_findings
from .sections import (
    calls_section,
    context_section,
    findings_section,
    over_time_section,
    prompt_diff,
    run_name,
    summary_section,
    timeline_section,
)
from .svg import legend
from .text import esc


def _asset(name: str) -> str:
    return resources.files("agentprobe.report").joinpath("assets", name).read_text(encoding="utf-8")


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
    findings = run_findings(db, run_ids, thresholds, windows, config)
    for view in views:
        load_details(db, view, findings)
    names = [run_name(v, i, len(views)) for i, v in enumerate(views)]
    nonce = secrets.token_urlsafe(16)
    generated_at = generated_at or dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    title = "agentprobe report: " + " vs ".join(run_ids)
    # The timeline comes before the findings so the first screen shows what happened, not only a list.
    nav = [("summary", "Summary"), ("timeline", "Timeline"), ("findings", "Findings"), ("context", "Context growth"),
           ("usage", "Tokens & errors"), ("calls", "Calls")]
    if len(views) == 2:
        nav.append(("prompt-diff", "Prompt diff"))
    body = [
        summary_section(views),
        '<section id="timeline"><h2>Timeline</h2>'
        + legend([("bar ok", "call"), ("bar error", "failed call"), ("bar inverted", "finished after a later call"),
                   ("inversion-link", "inversion: later call → the earlier one it beat")])
        + "".join(timeline_section(v, n) for v, n in zip(views, names)) + "</section>",
        findings_section(findings, views),
        '<section id="context"><h2>Context growth <small>input tokens per turn, per conversation</small></h2>'
        + "".join(context_section(v, n, thresholds.context, windows) for v, n in zip(views, names)) + "</section>",
        '<section id="usage"><h2>Tokens and errors over time</h2>'
        + "".join(over_time_section(v, n) for v, n in zip(views, names)) + "</section>",
        '<section id="calls"><h2>Calls</h2>' + "".join(calls_section(v, n) for v, n in zip(views, names))
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
        f' · <span class="version">agentprobe {esc(__version__)}</span></p>'
        f"<nav>{links}</nav></header>"
        f'<main>{"".join(body)}</main>'
        f'<script nonce="{nonce}">{_asset("report.js")}</script></body></html>\n'
    )
