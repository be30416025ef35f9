"""The MCP test server (tests/e2e/mcp_tools/server.py), started on a free port for a test."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent / "e2e" / "mcp_tools"
SERVER = str(HERE / "server.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(transport: str):
    port = free_port()
    proc = subprocess.Popen([sys.executable, SERVER, transport, "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"the MCP test server ({transport}) exited with {proc.returncode}")
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the MCP test server ({transport}) did not listen within 60 s")
