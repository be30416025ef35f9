"""`replay`: is this recorded run deterministic?"""

from __future__ import annotations

import json

import click

from ..capture.session import Recording
from ..playback.replay import Options, ReplayInputError, plan, summarize
from ..playback.replay import replay as run_replay
from ..proxy.ca import default_confdir
from ..proxy.runner import ProxyConfig
from ..store.db import open_db
from ..store.queries import resolve_run
from ..util.progress import progress
from .common import confdir_option, db_option, upstream_ca_option
from .errors import UserError
from .output import json_option


def _pairs(values, what: str) -> dict[str, str]:
    out = {}
    for value in values:
        if what == "header":
            name, sep, val = value.partition(":")
        else:
            name, sep, val = value.partition("=") if "=" in value.split("://")[0] else ("*", "=", value)
        if not sep or not name.strip() or not val.strip():
            raise UserError(f"bad --{what} {value!r}: expected {'NAME: VALUE' if what == 'header' else '[PROVIDER=]URL'}")
        out[name.strip() if what == "base-url" else name.strip().lower()] = val.strip()
    return out


@click.command()
@click.argument("run_ref", required=False)
@click.option("--trace", "trace_file", type=click.Path(dir_okay=False), help="Replay an exported trace file instead.")
@db_option
@confdir_option
@click.option("--times", type=click.IntRange(1, 100), default=3, show_default=True, help="Replays per call.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.99, show_default=True,
              help="Token match ratio at or above which a call counts as deterministic.")
@click.option("--base-url", "base_urls", multiple=True, metavar="[PROVIDER=]URL",
              help="Send a provider's calls (openai, anthropic, gemini, openai_compatible) elsewhere.")
@click.option("--header", "headers", multiple=True, metavar="'NAME: VALUE'", help="Extra request header.")
@click.option("--only-failed", is_flag=True, help="Only calls that failed, were cut or were truncated.")
@click.option("--concurrency", type=click.IntRange(1, 64), default=1, show_default=True)
@upstream_ca_option
@click.option("--model", help="Send every call to this model instead, and score its answers against the recording.")
@click.option("--set", "settings", multiple=True, metavar="NAME=VALUE",
              help="Set a request field on every call, e.g. temperature=0 (VALUE is JSON, else a string).")
@json_option("the result")
def replay(run_ref, trace_file, db, confdir, times, threshold, base_urls, headers, only_failed, concurrency,
           upstream_ca, model, settings, as_json):
    """Re-send RUN's requests --times times and score how deterministic the answers are.

    Credentials come from OPENAI_API_KEY, ANTHROPIC_API_KEY or GEMINI_API_KEY (or --header),
    never from the recording. The replays are recorded as a new run labelled `replay`.
    """
    from pathlib import Path

    from .serve import parse_settings

    opts = Options(times=times, threshold=threshold, base_urls=_pairs(base_urls, "base-url"),
                   headers=_pairs(headers, "header"), only_failed=only_failed, concurrency=concurrency,
                   model=model, settings=parse_settings(settings))
    if trace_file:
        from .traces_bridge import import_trace_for_replay

        db, run_ref = import_trace_for_replay(trace_file, db)
    database = open_db(db)
    run_id = resolve_run(database, run_ref)
    try:
        items = plan(database, run_id, opts)
    except ReplayInputError as e:
        raise UserError(str(e)) from None
    config = ProxyConfig(confdir=confdir or default_confdir(), upstream_ca=Path(upstream_ca) if upstream_ca else None)
    command = f"agentprobe replay {run_id}" + (f" --model {model}" if model else "") \
        + "".join(f" --set {s}" for s in settings)
    recording = Recording(db, config, label="replay", command=command, parent_run_id=run_id).start()
    try:
        with progress(f"replaying {len(items)} call(s) x{times}", len(items) * times) as advance:
            outcomes = run_replay(items, opts, proxy_url=recording.url, trust=recording.env()["SSL_CERT_FILE"],
                                  progress=advance)
    finally:
        recording.stop()
    summary = {"run_id": run_id, "replay_run_id": recording.run_id, "model": model, **summarize(outcomes, opts)}
    if summary["errors"] == summary["calls"]:
        first = next(o for o in outcomes if o.errors).errors[0]
        raise UserError(f"no replay of run {run_id} could be made ({first}); the replays are run"
                        f" {recording.run_id}")
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        _print(summary)
    return 1 if summary["deterministic"] + summary["errors"] < summary["calls"] else 0


def _print(summary: dict) -> None:
    from rich.table import Table

    on = f" on {summary['model']}" if summary.get("model") else ""
    table = Table(title=f"replay of run {summary['run_id']}{on} (x{summary['times']},"
                        f" threshold {summary['threshold']:.0%})")
    for col in ("seq", "model", "verdict", "match", "finish changed", "why"):
        table.add_column(col)
    for o in summary["outcomes"]:
        table.add_row(str(o["seq"]), o["model"] or "", o["verdict"], f"{o['score']:.1%}",
                      "yes" if o["finish_reason_changed"] else "", o["why"] or "")
    from rich.console import Console

    console = Console()
    console.print(table)
    share = summary["deterministic_share"] or 0
    console.print(f"{summary['deterministic']} of {summary['calls']} call(s) deterministic ({share:.0%});"
                  f" replays recorded as run {summary['replay_run_id']}")


COMMANDS = [replay]
