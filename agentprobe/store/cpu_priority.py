"""Lower the CPU priority of one thread, so the agent's traffic runs first when cores are short.

On Linux a nice value belongs to a thread, and a thread inherits its creator's. An unprivileged
process can lower a priority but never raise it again, so a writer that must catch up starts a
new thread from one that kept normal priority (see Writer). Elsewhere nice values are per
process: there the whole writer process is lowered once, and it cannot catch up faster.
"""

from __future__ import annotations

import os
import sys
import threading

LOW_NICE = 19
PER_THREAD = sys.platform.startswith("linux")


def lower_this_thread() -> bool:
    """Run the calling thread at the lowest priority; False if the platform would not."""
    if not PER_THREAD:
        return False
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOW_NICE)
        return True
    except (OSError, AttributeError):
        return False


def lower_this_process() -> None:
    try:
        os.nice(LOW_NICE)
    except (OSError, AttributeError):
        pass


def nice_of_this_thread() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id() if PER_THREAD else 0)
