"""One line for the person running agentprobe, on stderr, now.

A recording runs inside mitmproxy, whose logging handlers take over Python's: a warning logged
from the proxy's process can end up in mitmproxy's event log instead of on the terminal. What the
user must see at once (a writer that died, calls that could not be recorded) is written here.
"""

from __future__ import annotations

import sys


def warn(message: str) -> None:
    try:
        sys.stderr.write(f"agentprobe: WARNING: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed or broken stderr must not take the recording down
        pass
