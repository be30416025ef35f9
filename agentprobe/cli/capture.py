"""`trace`, `record` and `ca`: put the proxy in front of an agent."""

from __future__ import annotations

import ipaddress
import json
import os
import shlex
import signal
import subprocess
import threading
from pathlib import Path

import click

from ..capture.session import Recording
from ..proxy.ca import bundle_path, child_env, default_confdir, ensure_ca, shell_exports
from ..proxy.runner import ProxyConfig
from ..store.db import open_db
from ..store.queries import summarize
from .common import confdir_option, db_option
from .errors import UserError

STATE_FILE = "record.json"


def proxy_options(fn):
    fn = click.option("--upstream-ca", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                      help="Also trust this CA for upstream servers (a corporate gateway, a local test server).")(fn)
    fn = click.option("--ssl-insecure", is_flag=True, help="Do not verify upstream certificates.")(fn)
    fn = click.option("--label", help="Tag the run, e.g. dev or prod (cross-run checks compare labels).")(fn)
    fn = click.option("--otlp", "otlp_endpoint", metavar="URL",
                      help="Also stream each call as an OpenTelemetry span to this OTLP/HTTP endpoint.")(fn)
    fn = click.option("--no-fastpath", "fastpath", flag_value="off", default=None,
                      help="Run plain mitmproxy, without agentprobe's patches of its internals (as AGENTPROBE_FASTPATH=0).")(fn)
    fn = confdir_option(fn)
    fn = db_option(fn)
    return fn


def fastpath_wanted(flag: str | None) -> frozenset[str]:
    from ..proxy import fastpath

    try:
        return fastpath.wanted(flag)
    except fastpath.SwitchError as e:
        raise UserError(str(e)) from None


def _check_host(host: str, allow_remote: bool) -> None:
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and not allow_remote:
        raise UserError(
            f"refusing to listen on {host}: the proxied traffic carries API keys; pass --allow-remote to do it anyway"
        )
    if not loopback:
        click.echo(f"agentprobe: warning: listening on {host}; anyone who can reach it can use your API keys", err=True)


def print_summary(db: Path | None, run_id: str, as_json: bool = False) -> dict:
    summary = summarize(open_db(db), run_id)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return summary
    errors = ", ".join(f"{n}x {s}" for s, n in summary["errors_by_status"].items()) or "none"
    lines = [f"agentprobe: run {summary['run_id']}" + (f" [{summary['label']}]" if summary["label"] else "")]
    lines.append(
        f"  calls {summary['calls']} (LLM {summary['llm_calls']}, conversations {summary['conversations']},"
        f" retries {summary['retries']}, streams cut {summary['streams_cut']})"
    )
    lines.append(f"  errors {summary['errors']} (by status: {errors})")
    lines.append(f"  tokens in {summary['input_tokens']:,} / out {summary['output_tokens']:,}")
    if summary["models"]:
        lines.append(f"  models {', '.join(summary['models'])}")
    if summary["wall_time_s"] is not None:
        lines.append(f"  wall time {summary['wall_time_s']:.2f}s")
    if summary["calls_lost"]:
        lines.append(f"  WARNING: {summary['calls_lost']} call(s) could not be recorded")
    click.echo("\n".join(lines), err=True)
    return summary


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@proxy_options
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON on stdout.")
@click.option("--serve", "serve_run", metavar="RUN", help="Answer the command's LLM calls from recorded RUN, offline.")
@click.option("--realtime", is_flag=True, help="With --serve: reproduce the recorded timing.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="With --prompt: the agent config that says provider, model, system prompt and settings.")
@click.option("--prompt", help="Send this one prompt as the config describes, instead of running a command.")
@click.option("--env", "env_name", help="With --prompt: the config environment whose settings to use (default dev).")
@click.option("--times", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="With --prompt: send it this many times (shows whether the answer is deterministic).")
@click.option("--base-url", help="With --prompt: the provider endpoint (default: the SDK's, or *_BASE_URL).")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def trace(db, confdir, label, otlp_endpoint, ssl_insecure, upstream_ca, fastpath, as_json, serve_run, realtime, config_path,
          prompt, env_name, times, base_url, command):
    """Run COMMAND behind the proxy and record every LLM call it makes.

    \b
    agentprobe trace -- python my_agent.py
    agentprobe trace --label prod -- npm run agent
    agentprobe trace --config agent_config.json --prompt "Summarize..." --env prod --times 5
    """
    config = ProxyConfig(confdir=confdir or default_confdir(), upstream_ca=upstream_ca, ssl_insecure=ssl_insecure,
                         fastpath=fastpath_wanted(fastpath))
    if prompt is not None or config_path is not None:
        if command or serve_run:
            raise UserError("--prompt sends one prompt itself: give either --config/--prompt or a command, not both")
        if prompt is None or config_path is None:
            raise UserError("a one-shot trace needs both --config FILE and --prompt TEXT")
        from .oneshot import trace_prompt

        return trace_prompt(db, config, config_path, prompt, env_name, times, base_url, label, otlp_endpoint,
                            as_json)
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
    try:
        recording = Recording(db, config, label=label, command=shlex.join(command), parent_run_id=parent,
                              addons=addons, otlp_endpoint=otlp_endpoint).start()
    except BaseException:
        if backend:
            backend.stop()
        raise
    exit_code = 127
    try:
        exit_code = _run_child(list(command), recording.env())
    except FileNotFoundError:
        click.echo(f"agentprobe: error: command not found: {command[0]}", err=True)
    finally:
        recording.stop(status="failed" if exit_code == 127 else "completed", exit_code=exit_code)
        if backend:
            backend.stop()
    print_summary(db, recording.run_id, as_json)
    if backend:
        from .serve import print_serve_summary

        print_serve_summary(backend)
    return exit_code


def _run_child(command: list[str], env: dict[str, str]) -> int:
    child = subprocess.Popen(command, env=env)

    def forward(signum, _frame):
        # Ctrl-C reaches the child through the terminal; SIGTERM sent to us is passed on.
        if signum != signal.SIGINT:
            child.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = child.wait()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    return 128 - code if code < 0 else code


@click.command()
@proxy_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="Port (0 = any free port).")
@click.option("--upstream", help="Reverse mode: forward everything to this URL (then point the SDK's base URL here).")
@click.option("--allow-remote", is_flag=True, help="Allow listening on a non-loopback address.")
def record(db, confdir, label, otlp_endpoint, ssl_insecure, upstream_ca, fastpath, host, port, upstream,
           allow_remote):
    """Run the proxy until Ctrl-C, recording one run.

    \b
    agentprobe record --port 8080        # then: eval "$(agentprobe ca --env)"
    agentprobe record --upstream https://api.openai.com
                                         # then: OPENAI_BASE_URL=http://127.0.0.1:8080/v1
    """
    _check_host(host, allow_remote)
    if upstream and not upstream.startswith(("http://", "https://")):
        raise UserError(f"--upstream must be an http:// or https:// URL, not {upstream!r}")
    confdir = confdir or default_confdir()
    config = ProxyConfig(host=host, port=port, confdir=confdir, upstream=upstream,
                         upstream_ca=upstream_ca, ssl_insecure=ssl_insecure, fastpath=fastpath_wanted(fastpath))
    recording = Recording(db, config, label=label, command="agentprobe record",
                          otlp_endpoint=otlp_endpoint).start()
    state = confdir / STATE_FILE
    state.write_text(json.dumps({"url": recording.url, "pid": os.getpid(), "run_id": recording.run_id}))
    stop = threading.Event()
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda *_: stop.set())
    if upstream:
        hint = f"point your SDK's base URL at {recording.url} (e.g. OPENAI_BASE_URL={recording.url}/v1)"
    else:
        hint = 'in another shell: eval "$(agentprobe ca --env)"'
    click.echo(f"agentprobe: recording run {recording.run_id} on {recording.url}; {hint}; Ctrl-C to stop", err=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        recording.stop()
        try:
            if json.loads(state.read_text()).get("pid") == os.getpid():
                state.unlink()
        except (OSError, ValueError):
            pass
    print_summary(db, recording.run_id)


@click.command()
@confdir_option
@click.option("--env", "show_env", is_flag=True, help="Print shell exports that send a shell's traffic through the proxy.")
@click.option("--bundle", "show_bundle", is_flag=True, help="Print the path of the trust bundle (public roots + proxy CA).")
@click.option("--proxy", "proxy_url", help="Proxy URL for --env (default: the running `record`, else http://127.0.0.1:8080).")
def ca(confdir, show_env, show_bundle, proxy_url):
    """Show the proxy's CA certificate, trust bundle, or shell exports."""
    confdir = confdir or default_confdir()
    if show_env:
        url = proxy_url or _running_proxy(confdir) or "http://127.0.0.1:8080"
        env = child_env(url, bundle_path(confdir), base={})
        click.echo(shell_exports(env))
    elif show_bundle:
        click.echo(str(bundle_path(confdir)))
    else:
        click.echo(str(ensure_ca(confdir)))


def _running_proxy(confdir: Path) -> str | None:
    try:
        state = json.loads((confdir / STATE_FILE).read_text())
        os.kill(int(state["pid"]), 0)
        return state["url"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


COMMANDS = [trace, record, ca]
