"""`trace`: run a command behind the proxy and record every LLM call it makes."""

from __future__ import annotations

import shlex
import tempfile
import sys
from pathlib import Path

import click

from ..capture.session import Recording
from ..proxy.child_env import node_processes_not_steered
from ..proxy.child_process import run_child
from ..proxy.bypass_watch import DEFAULT_PORTS, PORTS_ENV, BypassWatch, parse_ports, run_columns
from ..report.console import print_serve_summary, print_summary
from ..store.db import open_db
from ..store.queries import summarize
from .common import proxy_config, proxy_options
from .errors import UserError
from .output import json_option


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@proxy_options
@json_option("the run summary (the command's own stdout then goes to stderr, so stdout holds only the JSON)")
@click.option("--serve", "serve_run", metavar="RUN", help="Answer the command's LLM calls from recorded RUN, offline.")
@click.option("--realtime", is_flag=True, help="With --serve: reproduce the recorded timing.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="With --prompt: the agent config that says provider, model, system prompt and settings.")
@click.option("--prompt", help="Send this one prompt as the config describes, instead of running a command.")
@click.option("--cases", "cases_path", type=click.Path(dir_okay=False, path_type=Path),
              help='With --config: send a benchmark suite, one {"id": ..., "prompt": ...} JSON object a line,'
                   " recorded as one run (diff two such runs with --max-changed).")
@click.option("--env", "env_name", help="With --prompt: the config environment whose settings to use (default dev).")
@click.option("--times", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="With --prompt: send it this many times (shows whether the answer is deterministic).")
@click.option("--base-url", help="With --prompt: the provider endpoint (default: the SDK's, or *_BASE_URL).")
@click.option("--bypass-ports", metavar="PORTS", envvar=PORTS_ENV,
              help="Report the command's connections to these ports that go around the proxy (Linux; default"
                   f" {','.join(map(str, DEFAULT_PORTS))}; +PORT,... adds to them; none: no check;"
                   f" or ${PORTS_ENV}).")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def trace(db, confdir, label, otlp_endpoint, ssl_insecure, upstream_ca, upstream_proxy, fastpath, as_json, serve_run,
          realtime, config_path, prompt, cases_path, env_name, times, base_url, bypass_ports, command):
    """Run COMMAND behind the proxy and record every LLM call it makes.

    \b
    agentprobe trace -- python my_agent.py
    agentprobe trace --label prod -- npm run agent
    agentprobe trace --config agent_config.json --prompt "Summarize..." --env prod --times 5
    """
    config = proxy_config(confdir=confdir, upstream_proxy=upstream_proxy, fastpath=fastpath, upstream_ca=upstream_ca,
                          ssl_insecure=ssl_insecure)
    try:
        ports = parse_ports(bypass_ports)
    except ValueError as e:
        raise UserError(f"--bypass-ports / ${PORTS_ENV}: {e}") from None
    if prompt is not None or config_path is not None or cases_path is not None:
        if command or serve_run:
            raise UserError("--prompt sends one prompt itself: give either --config/--prompt or a command, not both")
        if prompt is not None and cases_path is not None:
            raise UserError("give either --prompt TEXT or --cases FILE, not both")
        if (prompt is None and cases_path is None) or config_path is None:
            raise UserError("a one-shot trace needs both --config FILE and --prompt TEXT (or --cases FILE)")
        from .oneshot import trace_prompt

        return trace_prompt(db, config, config_path, prompt, env_name, times, base_url, label, otlp_endpoint,
                            as_json, cases_path)
    if not command:
        raise UserError("no command to run: put it after --, e.g. agentprobe trace -- python my_agent.py")
    backend = parent = None
    addons = []
    if serve_run:
        from ..addons.redirect import Redirect
        from .serve import start_serve_backend

        backend, parent = start_serve_backend(db, serve_run, realtime)
        addons.append(Redirect("127.0.0.1", backend.port))
        label = label or "serve"
    # The watcher starts first: its interpreter comes up while the proxy does.
    watch = BypassWatch(ports).start()
    try:
        recording = Recording(db, config, label=label, command=shlex.join(command), parent_run_id=parent,
                              addons=addons, otlp_endpoint=otlp_endpoint).start()
    except BaseException:
        watch.stop()
        if backend:
            backend.stop()
        raise
    exit_code = 127
    node_report = Path(tempfile.mkdtemp(prefix="agentprobe-node-")) / "report.jsonl"
    try:
        exit_code = _run_child(list(command), recording.env(node_report=node_report), watch,
                               recording.proxy.address, stdout_to_stderr=as_json)
        for entry in node_processes_not_steered(node_report):
            click.echo(f"agentprobe: warning: Node {entry.get('node')} (pid {entry.get('pid')}): fetch was not sent"
                       f" through the proxy ({'; '.join(entry['notes'])}); its calls are not recorded", err=True)
    except FileNotFoundError:
        click.echo(f"agentprobe: error: command not found: {command[0]}", err=True)
    finally:
        bypass = watch.stop()
        recording.stop(status="failed" if exit_code == 127 else "completed", exit_code=exit_code,
                       **run_columns(bypass))
        if backend:
            backend.stop()
    problem = recording.end_not_written()
    if problem:
        raise UserError(problem)
    print_summary(summarize(open_db(db), recording.run_id), as_json)
    if backend:
        print_serve_summary(backend.summary())
    return exit_code


def _run_child(command: list[str], env: dict[str, str], watch: BypassWatch, proxy: tuple[str, int], *,
               stdout_to_stderr: bool = False) -> int:
    watch.ready()  # so the command's first connections are seen
    result = run_child(command, env, on_start=lambda pid: watch.follow(pid, proxy),
                       stdout=sys.stderr.fileno() if stdout_to_stderr else None)
    for left in result.leftovers:
        click.echo(f"agentprobe: warning: {left.name} (pid {left.pid}), started by the command, is still running;"
                   " the proxy stops now, so its later calls fail and are not recorded", err=True)
    return result.exit_code


COMMANDS = [trace]
