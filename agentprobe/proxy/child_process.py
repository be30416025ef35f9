"""Run the traced command: its signals, its terminal, and what it leaves running when it ends.

- Ctrl-C at a terminal must reach the command once, and a SIGINT or SIGTERM sent to `trace`
  alone must reach it too. So at a terminal the command gets a process group of its own as the
  terminal's foreground group (as a shell does for a job): Ctrl-C goes to it, not to us, and
  whatever we are sent we pass on. Without any terminal it stays in our group and we pass on
  SIGINT, SIGTERM and SIGHUP (a SIGINT sent to that whole group then reaches it twice).
- A daemon the command forks outlives it and then finds the proxy gone. On Linux `trace` makes
  itself the subreaper of the command's descendants, so at the end it can still see them and
  say which ones are left.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass

_PR_SET_CHILD_SUBREAPER = 36


def _become_subreaper() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _terminal() -> int | None:
    """Our controlling terminal's fd when we are its foreground job, else None."""
    for fd in (0, 1, 2):
        try:
            if os.isatty(fd) and os.tcgetpgrp(fd) == os.getpgrp():
                return fd
        except OSError:
            continue
    return None


def _hand_terminal_to(fd: int, pgid: int) -> None:
    # A background process group that sets the terminal's foreground group gets SIGTTOU.
    old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        os.tcsetpgrp(fd, pgid)
    except OSError:
        pass
    finally:
        signal.signal(signal.SIGTTOU, old)


@dataclass
class Leftover:
    pid: int
    name: str


@dataclass
class ChildResult:
    exit_code: int
    leftovers: list[Leftover]  # descendants still running when the command itself ended


def run_child(command: list[str], env: dict[str, str], on_start: Callable[[int], None] = lambda pid: None, *,
              stdout: int | None = None) -> ChildResult:
    """Run `command` to its end; raises FileNotFoundError when it cannot be started.

    stdout: a file descriptor for the command's stdout (default: ours).
    """
    subreaper = _become_subreaper()
    terminal = _terminal()
    child = subprocess.Popen(command, env=env, stdout=stdout, process_group=0 if terminal is not None else None)
    if terminal is not None:
        _hand_terminal_to(terminal, child.pid)
    on_start(child.pid)

    def forward(signum, _frame):
        with suppress(ProcessLookupError):
            child.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        code = child.wait()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        if terminal is not None:
            _hand_terminal_to(terminal, os.getpgrp())
    leftovers = _still_running() if subreaper else []
    return ChildResult(128 - code if code < 0 else code, leftovers)


def _still_running() -> list[Leftover]:
    """Our descendants, reparented to us as subreaper, that are still alive (zombies reaped)."""
    try:
        import psutil
    except ImportError:
        return []
    out = []
    with suppress(psutil.Error):
        for proc in psutil.Process().children(recursive=True):
            with suppress(psutil.Error):
                if proc.status() == psutil.STATUS_ZOMBIE:
                    with suppress(ChildProcessError, OSError):
                        os.waitpid(proc.pid, os.WNOHANG)
                    continue
                if _is_ours(proc):
                    continue
                out.append(Leftover(proc.pid, proc.name()))
    return out


def _is_ours(proc) -> bool:
    """agentprobe's own helpers (the writer, the bypass watcher) are children of trace too."""
    try:
        cmdline = " ".join(proc.cmdline())
    except Exception:  # noqa: BLE001
        return False
    return "agentprobe.store.writer_process" in cmdline or "agentprobe.proxy.bypass_watch" in cmdline
