"""`record`: a long-running proxy, recording until Ctrl-C."""

from __future__ import annotations

import ipaddress
import signal
import threading
from urllib.parse import urlsplit

import click

from ..capture import redact
from ..capture.session import Recording
from ..capture.sessions import RUNS_BY, SessionError, SessionPolicy, parse_duration
from ..proxy import running
from ..report.console import print_summary
from ..store.db import open_db
from ..store.queries import summarize
from .common import proxy_config, proxy_options
from .errors import UserError


DEFAULT_IDLE = "30m"


def _check_host(host: str, allow_remote: bool) -> bool:
    """Whether host is a loopback address (after refusing any other unless allowed)."""
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
    return loopback


def _check_upstream(upstream: str) -> None:
    """Refuse a reverse-mode target we cannot use, in a message that never repeats a password in it."""
    shown = redact.safe_url(upstream)
    if not upstream.startswith(("http://", "https://")):
        raise UserError(f"--upstream must be an http:// or https:// URL, not {shown!r}")
    try:
        userinfo = "@" in urlsplit(upstream).netloc
    except ValueError:
        raise UserError(f"--upstream {shown!r} is not a valid URL") from None
    if userinfo:
        raise UserError(f"--upstream {shown}: a user name or password in the URL is not used in reverse mode (the"
                        " agent's own credentials are forwarded); remove it")


@click.command()
@proxy_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="Port (0 = any free port).")
@click.option("--upstream", help="Reverse mode: forward everything to this URL (then point the SDK's base URL here).")
@click.option("--allow-remote", is_flag=True, help="Allow listening on a non-loopback address.")
@click.option("--runs-by", type=click.Choice(RUNS_BY), default="auto", show_default=True,
              help="Split the traffic into runs by: the X-Agentprobe-Run header, the W3C traceparent's trace id,"
                   " the client process (same host), the client address, or none (one run per recorder);"
                   " auto tries them in that order.")
@click.option("--run-idle", default=None, metavar="DURATION",
              help=f"End a session's run after this long without calls (e.g. 10m, 30s, off; default {DEFAULT_IDLE},"
                   " and off with --runs-by recorder); the next call starts a new run. A process's run also ends"
                   " when the process exits.")
@click.option("--trust-session-headers/--no-trust-session-headers", default=None,
              help="Obey X-Agentprobe-Run and X-Agentprobe-Label (default: only when listening on loopback)."
                   " They are removed before the request goes upstream either way.")
def record(db, confdir, label, otlp_endpoint, ssl_insecure, upstream_ca, upstream_proxy, fastpath, host, port, upstream,
           allow_remote, runs_by, run_idle, trust_session_headers):
    """Run the proxy until Ctrl-C, recording one run per agent session.

    \b
    agentprobe record --port 8080        # then: eval "$(agentprobe ca --env)"
    agentprobe record --upstream https://api.openai.com
                                         # then: OPENAI_BASE_URL=http://127.0.0.1:8080/v1
    agentprobe record --runs-by recorder # everything in one run, until Ctrl-C
    """
    loopback = _check_host(host, allow_remote)
    if upstream:
        _check_upstream(upstream)
    try:
        if run_idle is None:  # one run per recorder stays one run unless asked otherwise
            run_idle = "off" if runs_by == "recorder" else DEFAULT_IDLE
        policy = SessionPolicy(runs_by=runs_by, idle_s=parse_duration(run_idle),
                               trust_headers=loopback if trust_session_headers is None else trust_session_headers)
    except SessionError as e:
        raise UserError(str(e)) from None
    config = proxy_config(confdir=confdir, upstream_proxy=upstream_proxy, fastpath=fastpath, host=host, port=port,
                          upstream=upstream, upstream_ca=upstream_ca, ssl_insecure=ssl_insecure)
    confdir = config.confdir
    recording = Recording(db, config, label=label, command="agentprobe record",
                          otlp_endpoint=otlp_endpoint, sessions=policy).start()
    running.announce(confdir, recording.url, recording.run_id,
                     config.upstream_proxy.display if config.upstream_proxy else None)
    stop = threading.Event()
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda *_: stop.set())
    if upstream:
        hint = f"point your SDK's base URL at {recording.url} (e.g. OPENAI_BASE_URL={recording.url}/v1)"
    else:
        hint = 'in another shell: eval "$(agentprobe ca --env)"'
    via = f", forwarding through {config.upstream_proxy.display}" if config.upstream_proxy else ""
    what = f"run {recording.run_id}" if recording.sessions is None else f"a run per session ({_describe(policy)})"
    click.echo(f"agentprobe: recording {what} on {recording.url}{via}; {hint}; Ctrl-C to stop", err=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        recording.stop()
        running.withdraw(confdir)
    problem = recording.end_not_written()
    if problem:
        raise UserError(problem)
    database = open_db(db)
    runs = [recording.run_id] if recording.sessions is None else recording.session_run_ids
    if recording.sessions is not None and database.execute("SELECT count(*) FROM runs WHERE id = ?",
                                                            [recording.run_id]).fetchone()[0]:
        runs = [recording.run_id, *runs]  # calls no session claimed
    for run_id in runs[:SUMMARIES]:
        print_summary(summarize(database, run_id))
    if len(runs) > SUMMARIES:
        click.echo(f"agentprobe: and {len(runs) - SUMMARIES} more run(s): `agentprobe runs` lists them", err=True)
    if not runs:
        click.echo("agentprobe: no calls were recorded", err=True)


SUMMARIES = 20  # runs summarized when the recorder stops; `runs` lists the rest


def _describe(policy: SessionPolicy) -> str:
    keys = "auto: " + " > ".join(policy.order) if policy.runs_by == "auto" else f"by {policy.runs_by}"
    if policy.runs_by == "auto" and not policy.trust_headers:
        keys += "; X-Agentprobe-* headers ignored"
    if policy.idle_s is not None:
        idle = policy.idle_s
        shown = next((f"{idle / n:g}{unit}" for n, unit in ((3600, "h"), (60, "m")) if idle >= n and idle % n == 0),
                     f"{idle:g}s")
        keys += f"; ended after {shown} idle"
    return keys


COMMANDS = [record]
