"""The proxy's CA and the trust bundle the agent's clients are given.

SSL_CERT_FILE and REQUESTS_CA_BUNDLE replace a client's trust store rather than adding to it,
so the bundle is certifi's public roots, plus the roots the user already trusted, plus our CA:
the agent can still reach hosts we do not intercept, including a company's own.
"""

from __future__ import annotations

import os
from pathlib import Path

import certifi

from ..util.say import warn

CA_CERT = "mitmproxy-ca-cert.pem"
BUNDLE = "agentprobe-ca-bundle.pem"


def default_confdir() -> Path:
    return Path(os.environ.get("AGENTPROBE_CONFDIR") or Path.home() / ".agentprobe")


def ensure_ca(confdir: Path) -> Path:
    """Create the CA if this confdir has none yet; return the CA cert path."""
    from mitmproxy.certs import CertStore

    if not confdir.exists():
        confdir.mkdir(parents=True)
        os.chmod(confdir, 0o700)  # the CA key lives here
    elif confdir.stat().st_mode & 0o077 and str(confdir) not in _warned:
        # The user's own directory: theirs to change, not ours. But they should know.
        _warned.add(str(confdir))
        warn(f"{confdir} is readable by other users (mode {confdir.stat().st_mode & 0o777:o}) and will hold the"
             f" proxy CA's private key: chmod 700 {confdir}, or use another --confdir")
    CertStore.from_store(str(confdir), "mitmproxy", 2048)
    return confdir / CA_CERT


_warned: set[str] = set()


def bundle_path(confdir: Path, env: dict[str, str] | None = None) -> Path:
    """Write (if changed) and return the bundle clients trust: public roots, the roots the user
    already trusts (see trust.user_roots) and the proxy CA."""
    from .trust import user_roots, write_bundle

    ca = ensure_ca(confdir)
    return write_bundle(confdir / BUNDLE, [Path(certifi.where()), *user_roots(env, exclude=confdir), ca])
