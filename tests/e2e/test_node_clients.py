"""Node agents, unchanged, under `agentprobe trace`: every call recorded on Node 20, 22 and 24.

Node's built-in fetch (the openai and anthropic SDKs use it) ignores HTTPS_PROXY before Node 24,
and its http/https modules ignore it everywhere; agentprobe's preload steers both. The clients and
the Node 22 and 24 runtimes come from tests/node (installed by .ci/run with `npm ci`).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import sqlite_utils

from proxy_fixtures import assert_same_calls, run_cli

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
RUNTIMES = {"20": shutil.which("node"), "22": NODE_DIR / "node_modules/node22/bin/node",
            "24": NODE_DIR / "node_modules/node24/bin/node"}
EXPECTED = ("openai:stop openai-stream:true anthropic:end_turn fetch:200 axios:200 https.request:200")


@pytest.mark.parametrize("major", sorted(RUNTIMES))
def test_a_node_agent_is_recorded_call_by_call(tmp_path, tls_ca_bundle, fake_provider_tls, major):
    node = RUNTIMES[major]
    assert node and Path(node).exists(), f"Node {major} is missing: run `npm ci --prefix tests/node` (.ci/run does)"
    version = subprocess.run([str(node), "--version"], capture_output=True, text=True).stdout.strip()
    assert version.startswith(f"v{major}."), version
    env = {"AGENTPROBE_DB": str(tmp_path / "ap.db"), "AGENTPROBE_CONFDIR": str(tmp_path / "conf"),
           "FAKE_URL": fake_provider_tls.url, "NO_PROXY": "localhost,127.0.0.1"}
    r = run_cli("trace", "--upstream-ca", tls_ca_bundle, "--", str(node), str(NODE_DIR / "agent.mjs"), env=env,
                cwd=NODE_DIR)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == EXPECTED
    assert "not sent through the proxy" not in r.stderr and "experimental" not in r.stderr
    db = sqlite_utils.Database(tmp_path / "ap.db")
    assert_same_calls(fake_provider_tls, db)
    rows = list(db.query("SELECT api, stream, status FROM calls ORDER BY seq"))
    assert [r["api"] for r in rows] == ["chat.completions", "chat.completions", "messages"] + ["chat.completions"] * 3
    assert rows[1]["stream"] == 1 and all(r["status"] == 200 for r in rows)
