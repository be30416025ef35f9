"""`ca`: the proxy's CA, its trust bundle, and shell exports that route a shell through the proxy."""

from __future__ import annotations

import os

import click

from ..proxy.ca import bundle_path, default_confdir, ensure_ca
from ..proxy.child_env import child_env, shell_exports
from ..proxy.running import running_state
from ..proxy.upstream_proxy import from_env
from .common import confdir_option


@click.command()
@confdir_option
@click.option("--env", "show_env", is_flag=True, help="Print shell exports that send a shell's traffic through the proxy.")
@click.option("--bundle", "show_bundle", is_flag=True, help="Print the path of the trust bundle (public roots + proxy CA).")
@click.option("--proxy", "proxy_url", help="Proxy URL for --env (default: the running `record`, else http://127.0.0.1:8080).")
def ca(confdir, show_env, show_bundle, proxy_url):
    """Show the proxy's CA certificate, trust bundle, or shell exports."""
    confdir = confdir or default_confdir()
    if show_env:
        state = running_state(confdir)
        url = proxy_url or (state or {}).get("url") or "http://127.0.0.1:8080"
        mine = from_env(os.environ, ours={url})
        if mine is not None:
            # The exports replace this shell's proxy: say whether the recorder forwards through it.
            via = (state or {}).get("upstream_proxy")
            click.echo(f"agentprobe: note: this shell's HTTPS_PROXY ({mine.display}) is replaced by {url};"
                       + (f" the running record forwards through {via}" if via else
                          " start `agentprobe record` in a shell where it is set (or with --upstream-proxy) so the"
                          " recorder forwards through it"), err=True)
        env = child_env(url, bundle_path(confdir), base={})
        click.echo(shell_exports(env))
    elif show_bundle:
        click.echo(str(bundle_path(confdir)))
    else:
        click.echo(str(ensure_ca(confdir)))


COMMANDS = [ca]
