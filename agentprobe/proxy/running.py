"""The state file a long-running `record` leaves in its confdir, so `ca --env` can find it."""

from __future__ import annotations

import json
import os
from pathlib import Path

STATE_FILE = "record.json"


def announce(confdir: Path, url: str, run_id: str, upstream_proxy: str | None = None) -> Path:
    """upstream_proxy: the proxy it forwards through, as displayed (never with its password)."""
    state = confdir / STATE_FILE
    state.write_text(json.dumps({"url": url, "pid": os.getpid(), "run_id": run_id, "upstream_proxy": upstream_proxy}))
    return state


def withdraw(confdir: Path) -> None:
    """Remove the state file if this process wrote it (a newer `record` may have replaced it)."""
    state = confdir / STATE_FILE
    try:
        if json.loads(state.read_text()).get("pid") == os.getpid():
            state.unlink()
    except (OSError, ValueError):
        pass


def running_state(confdir: Path) -> dict | None:
    """What a live `record` using this confdir announced, if one runs."""
    try:
        state = json.loads((confdir / STATE_FILE).read_text())
        os.kill(int(state["pid"]), 0)
        return state if isinstance(state.get("url"), str) else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def running_proxy(confdir: Path) -> str | None:
    """The URL of a live `record` using this confdir, if any."""
    state = running_state(confdir)
    return state["url"] if state else None
