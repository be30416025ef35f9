"""The state file a long-running `record` leaves in its confdir, so `ca --env` can find it."""

from __future__ import annotations

import json
import os
from pathlib import Path

STATE_FILE = "record.json"


def announce(confdir: Path, url: str, run_id: str) -> Path:
    state = confdir / STATE_FILE
    state.write_text(json.dumps({"url": url, "pid": os.getpid(), "run_id": run_id}))
    return state


def withdraw(confdir: Path) -> None:
    """Remove the state file if this process wrote it (a newer `record` may have replaced it)."""
    state = confdir / STATE_FILE
    try:
        if json.loads(state.read_text()).get("pid") == os.getpid():
            state.unlink()
    except (OSError, ValueError):
        pass


def running_proxy(confdir: Path) -> str | None:
    """The URL of a live `record` using this confdir, if any."""
    try:
        state = json.loads((confdir / STATE_FILE).read_text())
        os.kill(int(state["pid"]), 0)
        return state["url"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
