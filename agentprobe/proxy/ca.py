"""The proxy's CA and a trust bundle the SDKs accept.

SSL_CERT_FILE and REQUESTS_CA_BUNDLE replace a client's trust store rather than
adding to it, so the bundle is certifi's public roots plus our CA: the agent can
still reach hosts we do not intercept.
"""

from __future__ import annotations

import os
from pathlib import Path

import certifi

CA_CERT = "mitmproxy-ca-cert.pem"
BUNDLE = "agentprobe-ca-bundle.pem"


def default_confdir() -> Path:
    return Path(os.environ.get("AGENTPROBE_CONFDIR") or Path.home() / ".agentprobe")


def ensure_ca(confdir: Path) -> Path:
    """Create the CA if this confdir has none yet; return the CA cert path."""
    from mitmproxy.certs import CertStore

    confdir.mkdir(parents=True, exist_ok=True)
    os.chmod(confdir, 0o700)  # the CA key lives here
    CertStore.from_store(str(confdir), "mitmproxy", 2048)
    return confdir / CA_CERT


def bundle_path(confdir: Path) -> Path:
    """Write (if changed) and return certifi's roots + the proxy CA."""
    ca = ensure_ca(confdir)
    parts = [Path(certifi.where()).read_text(), ca.read_text()]
    content = "\n".join(p.rstrip("\n") for p in parts) + "\n"
    path = confdir / BUNDLE
    if not path.exists() or path.read_text() != content:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(content)
        tmp.replace(path)
    return path


def child_env(proxy_url: str, bundle: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a process whose traffic should go through the proxy."""
    env = dict(os.environ if base is None else base)
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        env[name] = proxy_url
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"):
        env[name] = str(bundle)
    return env


def shell_exports(env: dict[str, str]) -> str:
    import shlex

    return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items())
