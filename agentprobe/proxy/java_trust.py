"""A Java truststore (PKCS12) holding the client bundle, for JVM agents under `trace`.

Java reads neither SSL_CERT_FILE nor the proxy variables: it needs a truststore of its own and
system properties (see child_env.java_options). The store is built with cryptography (which
mitmproxy already depends on) when it can write Java's trusted-certificate attribute, else with
keytool when a JDK is installed; without either, JVM agents are not steered, and `trace` says so.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import warnings
from pathlib import Path

from .trust import pem_blocks

STORE = "agentprobe-truststore.p12"
PASSWORD = "changeit"  # protects nothing (the roots are public); Java's tools expect one


class JavaTrustError(Exception):
    pass


def truststore(confdir: Path, bundle: Path) -> Path:
    """A PKCS12 truststore of the bundle's certificates, rebuilt when the bundle changes."""
    text = bundle.read_text(encoding="utf-8", errors="replace")
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = confdir / STORE
    stamp = confdir / (STORE + ".sha256")
    if path.exists() and stamp.exists() and stamp.read_text() == digest:
        return path
    tmp = path.with_suffix(".tmp")
    try:
        _with_cryptography(pem_blocks(text), tmp)
    except (ImportError, AttributeError):
        _with_keytool(bundle, tmp)
    tmp.replace(path)
    stamp.write_text(digest)
    return path


def _with_cryptography(blocks: list[str], out: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    serialize = pkcs12.serialize_java_truststore  # cryptography >= 45; AttributeError before
    bags, seen = [], set()
    for block in blocks:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cert = x509.load_pem_x509_certificate(block.encode())
        except ValueError:
            continue  # one root a newer cryptography refuses must not sink the rest
        fingerprint = cert.fingerprint(hashes.SHA256()).hex()
        if fingerprint not in seen:
            seen.add(fingerprint)
            bags.append(pkcs12.PKCS12Certificate(cert, f"agentprobe-{fingerprint[:16]}".encode()))
    out.write_bytes(serialize(bags, serialization.BestAvailableEncryption(PASSWORD.encode())))


def _with_keytool(bundle: Path, out: Path) -> None:
    keytool = shutil.which("keytool")
    if keytool is None:
        raise JavaTrustError("no cryptography >= 45 and no keytool to build a Java truststore")
    out.unlink(missing_ok=True)
    for i, block in enumerate(pem_blocks(bundle.read_text(encoding="utf-8", errors="replace"))):
        one = out.with_name(f"{out.name}.{i}.pem")
        one.write_text(block + "\n")
        try:
            subprocess.run([keytool, "-importcert", "-noprompt", "-alias", f"agentprobe-{i}", "-file", str(one),
                            "-keystore", str(out), "-storetype", "PKCS12", "-storepass", PASSWORD],
                           check=True, capture_output=True, timeout=60)
        finally:
            one.unlink(missing_ok=True)
