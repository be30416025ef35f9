"""A proxy the user's traffic must already go through (a company's egress proxy), to chain behind.

When HTTPS_PROXY is set where `trace` or `record` starts, replacing it for the agent and then
connecting upstream directly fails in a corporate network, or slips past its egress controls.
So the proxy forwards through it instead, honouring the user's own NO_PROXY for the upstream
leg (while the agent's NO_PROXY is emptied, so that everything reaches agentprobe first).

The password in a proxy URL is kept out of everything agentprobe prints or stores: `display`
is the URL without it, and it travels only in the Proxy-Authorization header of the CONNECT.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit


class UpstreamProxyError(ValueError):
    """A proxy URL agentprobe cannot use; the message never holds the password."""


@dataclass(frozen=True)
class UpstreamProxy:
    scheme: str  # http or https, how we speak to the proxy itself
    host: str
    port: int
    authorization: str | None = field(default=None, repr=False)  # "Basic ...", never printed
    no_proxy: tuple[str, ...] = ()  # the user's NO_PROXY entries: these hosts go direct

    @property
    def display(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def bypasses(self, host: str, port: int | None = None) -> bool:
        return no_proxy_matches(self.no_proxy, host, port)


def parse(url: str, no_proxy: str = "") -> UpstreamProxy:
    try:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        port = parts.port
    except ValueError:
        raise UpstreamProxyError("the upstream proxy is not a valid URL (expected http://host:port)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        shown = f"{parts.scheme}://{parts.hostname or ''}"
        raise UpstreamProxyError(f"the upstream proxy must be an http:// or https:// URL with a host, not {shown}")
    authorization = None
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(credentials.encode()).decode()
    entries = tuple(e.strip().lower() for e in no_proxy.split(",") if e.strip())
    return UpstreamProxy(parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80),
                         authorization, entries)


def from_env(env: Mapping[str, str], *, ours: set[str] = frozenset()) -> UpstreamProxy | None:
    """The proxy this environment already sends HTTPS through, unless it is one of `ours`
    (an agentprobe `record` this shell was pointed at with `ca --env`)."""
    url = next((env[n] for n in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY") if env.get(n)), None)
    if not url or _origin(url) in {_origin(o) for o in ours}:
        return None
    no_proxy = env.get("no_proxy") or env.get("NO_PROXY") or ""
    return parse(url, no_proxy)


def _origin(url: str) -> str:
    try:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        return f"{(parts.hostname or '').lower()}:{parts.port}"
    except ValueError:
        return url


def no_proxy_matches(entries: tuple[str, ...], host: str, port: int | None = None) -> bool:
    """NO_PROXY as curl and requests read it: `*`, host names (and their subdomains), IPs, CIDRs, host:port."""
    host = host.lower().strip("[]")
    for entry in entries:
        if entry == "*":
            return True
        name, _, entry_port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if entry_port and port is not None and entry_port.isdigit() and int(entry_port) != port:
            continue
        name = (name or entry).strip("[]").lstrip(".")
        try:
            if ipaddress.ip_address(host) in ipaddress.ip_network(name, strict=False):
                return True
            continue
        except ValueError:
            pass
        if host == name or host.endswith("." + name):
            return True
    return False
