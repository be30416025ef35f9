"""`agentprobe demo`: start the fake provider over HTTPS, trace the demo agent, show the run."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from ..capture.session import Recording
from ..fakeprovider import FakeProvider
from ..proxy.ca import default_confdir
from ..proxy.runner import ProxyConfig


def _tls(workdir: Path):
    """A throwaway CA and a 127.0.0.1 certificate for the fake provider."""
    import trustme

    ca = trustme.CA()
    ca_path = workdir / "fake-provider-ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    server = ca.issue_cert("127.0.0.1", "localhost")
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.configure_cert(ctx)
    return ctx, ca_path


def run_demo(db: str | Path | None, confdir: Path | None) -> tuple[str, int]:
    """Returns (run id, the agent's exit code)."""
    import subprocess

    with tempfile.TemporaryDirectory(prefix="agentprobe-demo-") as tmp:
        ssl_ctx, ca_path = _tls(Path(tmp))
        with FakeProvider(ssl_context=ssl_ctx) as provider:
            config = ProxyConfig(confdir=confdir or default_confdir(), upstream_ca=ca_path)
            recording = Recording(db, config, label="demo", command="agentprobe demo").start()
            code = 1
            try:
                env = recording.env()
                env["OPENAI_BASE_URL"] = f"{provider.url}/v1"
                env.setdefault("OPENAI_API_KEY", "sk-demo-not-a-real-key-000000")
                env.pop("NO_PROXY", None)
                env.pop("no_proxy", None)
                code = subprocess.call([sys.executable, "-m", "agentprobe.demo.agent"], env=env)
            finally:
                recording.stop(exit_code=code)
            return recording.run_id, code
