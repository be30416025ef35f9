"""Options several commands share."""

from __future__ import annotations

from pathlib import Path

import click

from .errors import UserError

def once(ctx, param, values):
    """Callback for an option declared multiple=True that may be given once: twice is a mistake, not
    "the last one wins" (`--label dev --label prod`)."""
    values = tuple(values or ())
    if len(values) > 1:
        raise click.BadParameter(f"given {len(values)} times ({', '.join(map(repr, values))}): give it once")
    return values[0] if values else param.default


def label_option(help_text: str, **kwargs):
    return click.option("--label", multiple=True, callback=once, help=help_text, **kwargs)


db_option = click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="AGENTPROBE_DB",
    help="SQLite database (default: $AGENTPROBE_DB, else .agentprobe/agentprobe.db).",
)
confdir_option = click.option(
    "--confdir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="AGENTPROBE_CONFDIR",
    help="Where the proxy CA lives (default: ~/.agentprobe).",
)


def load_config(path) -> dict | None:
    """The agent config at path (None when no path was given); a bad one is a one-line user error."""
    if not path:
        return None
    from ..checks import agent_config
    try:
        return agent_config.load(path)
    except agent_config.ConfigError as e:
        raise UserError(str(e)) from None


def check_environment(config: dict | None, env: str | None) -> None:
    """--env names an environment of the --config given; else one line, exit 2."""
    from ..checks import agent_config

    try:
        agent_config.check_environment(config, env)
    except agent_config.ConfigError as e:
        raise UserError(str(e)) from None


def check_ca_file(_ctx, _param, value):
    """--upstream-ca: a regular file under the cap, with at least one PEM certificate in it."""
    if value is None:
        return None
    from ..proxy.trust import pem_blocks
    from ..util.userfile import read_user_file

    text = read_user_file(value, "CA file", UserError).decode("utf-8", "replace")
    if not pem_blocks(text):
        raise UserError(f"CA file {value} holds no PEM certificate (-----BEGIN CERTIFICATE-----): give the CA's"
                        " certificate in PEM form (openssl x509 -inform der -in ca.der -out ca.pem)")
    return Path(value)


upstream_ca_option = click.option(
    "--upstream-ca", type=click.Path(dir_okay=False, path_type=Path), callback=check_ca_file,
    help="Also trust this CA for upstream servers (a corporate gateway, a local test server).")


def proxy_options(fn):
    fn = upstream_ca_option(fn)
    fn = click.option("--ssl-insecure", is_flag=True, help="Do not verify upstream certificates.")(fn)
    fn = label_option("Tag the run, e.g. dev or prod (cross-run checks compare labels).")(fn)
    fn = click.option("--otlp", "otlp_endpoint", metavar="URL",
                      help="Also stream each call as an OpenTelemetry span to this OTLP/HTTP endpoint.")(fn)
    fn = click.option("--upstream-proxy", metavar="URL|none",
                      help="Forward through this proxy (a company's egress proxy; user:pass@ allowed). Default:"
                           " HTTPS_PROXY as it was set, with its NO_PROXY; 'none' connects directly.")(fn)
    fn = click.option("--no-fastpath", "fastpath", flag_value="off", default=None,
                      help="Run plain mitmproxy, without agentprobe's patches of its internals"
                           " (as AGENTPROBE_FASTPATH=0).")(fn)
    fn = confdir_option(fn)
    fn = db_option(fn)
    return fn


def fastpath_wanted(flag: str | None) -> frozenset[str]:
    from ..proxy import fastpath

    try:
        return fastpath.wanted(flag)
    except fastpath.SwitchError as e:
        raise UserError(str(e)) from None


def proxy_config(*, confdir, upstream_proxy: str | None, fastpath: str | None, **settings):
    """The ProxyConfig the capture commands run with: their options, and the user's own proxy."""
    import os

    from ..proxy import upstream_proxy as chain
    from ..proxy.ca import default_confdir
    from ..proxy.running import running_proxy
    from ..proxy.runner import ProxyConfig

    confdir = confdir or default_confdir()
    try:
        if upstream_proxy is None:
            # A shell pointed at a running `record` with `ca --env` is not a proxy to chain behind.
            ours = {url for url in [running_proxy(confdir)] if url}
            upstream = chain.from_env(os.environ, ours=ours)
            if upstream is not None and settings.get("upstream"):
                click.echo(f"agentprobe: warning: reverse mode connects to {settings['upstream']} directly, not"
                           f" through HTTPS_PROXY ({upstream.display}); mitmproxy cannot chain reverse mode", err=True)
                upstream = None
        elif upstream_proxy.lower() == "none":
            upstream = None
        else:
            upstream = chain.parse(upstream_proxy, os.environ.get("no_proxy") or os.environ.get("NO_PROXY") or "")
    except chain.UpstreamProxyError as e:
        raise UserError(str(e)) from None
    return ProxyConfig(confdir=confdir, upstream_proxy=upstream, fastpath=fastpath_wanted(fastpath), **settings)
