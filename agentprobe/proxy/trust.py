"""The roots a user already trusts, kept wherever agentprobe builds a trust store.

`trace` replaces the child's SSL_CERT_FILE and REQUESTS_CA_BUNDLE with a bundle of its own, and
the proxy verifies upstream servers itself. Both must keep what the user trusted before (a
company's private CA in SSL_CERT_FILE, the system store), or every corporate host breaks under
`trace` while it works without it.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterable, Mapping
from pathlib import Path

# Variables that name a CA file a client trusts; NODE_EXTRA_CA_CERTS adds to Node's own roots.
TRUST_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS")
# Debian/Ubuntu, Fedora/RHEL, Alpine, macOS (Homebrew OpenSSL) system stores.
SYSTEM_STORES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt",
                 "/etc/ssl/cert.pem", "/usr/local/etc/openssl/cert.pem")


def user_roots(env: Mapping[str, str] | None = None, *, exclude: Path | None = None) -> list[Path]:
    """CA files the user's clients trust now: the trust variables' files, then the system store.

    Files under `exclude` (agentprobe's confdir: a shell that already ran `eval "$(agentprobe ca
    --env)"` points at our own bundle) are left out, as are files that do not exist.
    """
    env = os.environ if env is None else env
    found: list[Path] = [Path(env[name]) for name in TRUST_VARIABLES if env.get(name)]
    default = ssl.get_default_verify_paths()
    found += [Path(p) for p in (default.cafile, default.openssl_cafile) if p]
    found += [Path(p) for p in SYSTEM_STORES]
    out, seen = [], set()
    for path in found:
        try:
            real = path.resolve()
        except OSError:
            continue
        if real in seen or not real.is_file():
            continue
        if exclude is not None and real.is_relative_to(exclude.resolve()):
            continue
        seen.add(real)
        out.append(real)
    return out


def pem_blocks(text: str) -> list[str]:
    blocks, current = [], []
    for line in text.splitlines():
        if line.startswith("-----BEGIN CERTIFICATE-----"):
            current = [line]
        elif current:
            current.append(line)
            if line.startswith("-----END CERTIFICATE-----"):
                blocks.append("\n".join(current))
                current = []
    return blocks


def write_bundle(path: Path, sources: Iterable[Path]) -> Path:
    """Every certificate of `sources`, once each, in order; rewritten only when it changed."""
    from ..util.userfile import read_user_file

    seen, blocks = set(), []
    for source in sources:
        try:
            # Capped and regular files only: SSL_CERT_FILE=/dev/zero must not hang the proxy's start.
            text = read_user_file(source, "CA file", OSError).decode("utf-8", "replace")
        except OSError:
            continue
        for block in pem_blocks(text):
            if block not in seen:
                seen.add(block)
                blocks.append(block)
    content = "\n".join(blocks) + "\n"
    if not path.exists() or path.read_text() != content:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(content)
        tmp.replace(path)
    return path


UPSTREAM_BUNDLE = "agentprobe-upstream-trust.pem"


def upstream_trust(confdir: Path, extra: Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    """What the proxy trusts for upstream servers: public roots, the user's roots, and --upstream-ca.

    mitmproxy's ssl_verify_upstream_trusted_ca replaces its default roots, so an --upstream-ca
    alone would make every other host fail verification.
    """
    import certifi

    confdir.mkdir(parents=True, exist_ok=True)
    sources = [Path(certifi.where()), *user_roots(env, exclude=confdir)]
    if extra is not None:
        sources.append(Path(extra))
    return write_bundle(confdir / UPSTREAM_BUNDLE, sources)
