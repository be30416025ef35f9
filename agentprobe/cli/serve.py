"""`serve`: be the provider, answering from a recorded run."""

from __future__ import annotations

import signal
import threading

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
def serve(run_ref, db, confdir, host, port, realtime, label, trace_file):
    """Answer LLM calls from recorded run RUN_REF (default: latest), with no network.

    \b
    agentprobe serve RUN --port 8080
    OPENAI_BASE_URL=http://127.0.0.1:8080/v1 python my_agent.py
    """
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise UserError("serve listens on loopback only")
    if trace_file:
        from .traces_bridge import import_trace_for_replay

        db, run_ref = import_trace_for_replay(trace_file, db)
    backend, run_id = start_serve_backend(db, run_ref, realtime)
    config = ProxyConfig(host=host, port=port, confdir=confdir or default_confdir(), upstream=backend.url)
    try:
        recording = Recording(db, config, label=label, command=f"agentprobe serve {run_id}",
                              parent_run_id=run_id).start()
    except BaseException:
        backend.stop()
        raise
    stop = threading.Event()
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda *_: stop.set())
    click.echo(f"agentprobe: serving run {run_id} on {recording.url} (OPENAI_BASE_URL={recording.url}/v1,"
               f" ANTHROPIC_BASE_URL={recording.url}); recording as run {recording.run_id}; Ctrl-C to stop", err=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        recording.stop()
        backend.stop()
    print_serve_summary(backend.summary())


COMMANDS = [serve]
