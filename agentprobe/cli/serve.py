"""`serve`: be the provider, answering from a recorded run."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import click

from ..capture.session import Recording
from ..playback.serve import ServeServer, load_recorded
from ..proxy.ca import default_confdir
from ..proxy.runner import ProxyConfig
from ..report.console import print_serve_summary
from ..store.db import open_db
from ..store.queries import resolve_run
from .common import confdir_option, db_option, label_option
from .errors import UserError


def start_serve_backend(db, run_ref: str, realtime: bool) -> tuple[ServeServer, str]:
    """The offline backend for a recorded run: (started server, run id)."""
    database = open_db(db)
    run_id = resolve_run(database, run_ref)
    recorded = load_recorded(database, run_id)
    if not recorded:
        raise UserError(f"run {run_id} has no recorded LLM calls to serve")
    return ServeServer(recorded, realtime=realtime).start(), run_id


@click.command()
@click.argument("run_ref", required=False, default="latest")
@db_option
@confdir_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option("--realtime", is_flag=True, help="Reproduce the recorded time to first token and stream pacing.")
@label_option("Label of the run that records this session.", default=["serve"], show_default=True)
@click.option("--trace", "trace_file", type=click.Path(dir_okay=False),
              help="Serve the run in this trace file (from `agentprobe export`) instead of one in the database.")
@click.option("--live-from", type=click.IntRange(1), metavar="N",
              help="Fork the run: answer recorded calls 1..N-1 from the recording, send call N and every later one"
                   " to the live provider (recorded as a new run linked to RUN_REF).")
@click.option("--model", help="With --live-from: send the live calls to this model instead.")
@click.option("--set", "settings", multiple=True, metavar="NAME=VALUE",
              help="With --live-from: set a request field on the live calls, e.g. temperature=0 (VALUE is JSON,"
                   " else a string).")
@click.option("--base-url", help="With --live-from: where the live calls go (default: the upstream the recording"
                                 " names, e.g. https://api.openai.com).")
@click.option("--upstream-ca", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="With --live-from: also trust this CA for the live provider.")
def serve(run_ref, db, confdir, host, port, realtime, label, trace_file, live_from, model, settings, base_url,
          upstream_ca):
    """Answer LLM calls from recorded run RUN_REF (default: latest), with no network.

    \b
    agentprobe serve RUN --port 8080
    OPENAI_BASE_URL=http://127.0.0.1:8080/v1 python my_agent.py
    agentprobe serve RUN --live-from 3 --model gpt-4.1 --set temperature=0   # fork at call 3
    """
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise UserError("serve listens on loopback only")
    if live_from is None and (model or settings or base_url):
        raise UserError("--model, --set and --base-url apply to live calls: give --live-from N as well")
    overrides = parse_settings(settings)
    if trace_file:
        from .traces_bridge import import_trace_for_replay

        db, run_ref = import_trace_for_replay(trace_file, db)
    backend, run_id = start_serve_backend(db, run_ref, realtime)
    addons = []
    if live_from is not None:
        from ..addons.playback import Playback, Target, recorded_targets

        try:
            live = Target.from_url(base_url) if base_url else recorded_targets(backend.recorded)
        except ValueError as e:
            backend.stop()
            raise UserError(f"--base-url: {e}") from None
        if not live:
            backend.stop()
            raise UserError(f"run {run_id} names no upstream to send live calls to: give --base-url")
        addons.append(Playback(("127.0.0.1", backend.port), backend.matcher, live_from=live_from, live=live,
                               model=model, settings=overrides))
        if label == "serve":
            label = "fork"
    config = ProxyConfig(host=host, port=port, confdir=confdir or default_confdir(), upstream=backend.url,
                         upstream_ca=upstream_ca)
    command = f"agentprobe serve {run_id}" + (f" --live-from {live_from}" if live_from else "") \
        + (f" --model {model}" if model else "") + "".join(f" --set {s}" for s in settings)
    try:
        recording = Recording(db, config, label=label, command=command, parent_run_id=run_id,
                              addons=addons).start()
    except BaseException:
        backend.stop()
        raise
    stop = threading.Event()
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda *_: stop.set())
    fork = f", live from call {live_from}" if live_from else ""
    click.echo(f"agentprobe: serving run {run_id}{fork} on {recording.url} (OPENAI_BASE_URL={recording.url}/v1,"
               f" ANTHROPIC_BASE_URL={recording.url}); recording as run {recording.run_id}; Ctrl-C to stop", err=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        recording.stop()
        backend.stop()
    print_serve_summary(backend.summary())


def parse_settings(values) -> dict:
    """--set NAME=VALUE pairs; VALUE as JSON when it parses (0, 0.2, true, null, [..]), else a string."""
    import json

    out = {}
    for value in values:
        name, sep, raw = value.partition("=")
        if not sep or not name.strip():
            raise UserError(f"bad --set {value!r}: expected NAME=VALUE, e.g. temperature=0")
        try:
            out[name.strip()] = json.loads(raw)
        except ValueError:
            out[name.strip()] = raw
    return out


COMMANDS = [serve]
