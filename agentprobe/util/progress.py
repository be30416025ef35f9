"""Progress of a long operation: a bar at a terminal; off it (a CI log), a line every few seconds.

Off a terminal the line comes from a timer, not from finished work: a replay waiting out a
provider's backoff for a minute still says, every few seconds, that it is alive and where it is.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def progress(what: str, total: int, *, every_s: float = 5.0, stream=None) -> Iterator[Callable[[], None]]:
    """Yields `advance()`, to be called once per unit of work done (from any thread)."""
    stream = stream or sys.stderr
    if stream.isatty():
        from rich.console import Console
        from rich.progress import Progress

        with Progress(transient=True, console=Console(file=stream)) as bar:
            task = bar.add_task(what, total=total)
            yield lambda: bar.advance(task)
        return
    done = 0
    lock = threading.Lock()
    stop = threading.Event()

    def advance() -> None:
        nonlocal done
        with lock:
            done += 1

    def heartbeat() -> None:
        while not stop.wait(every_s):
            with lock:
                n = done
            stream.write(f"agentprobe: {what}: {n} of {total} done\n")
            stream.flush()

    timer = threading.Thread(target=heartbeat, name="agentprobe-progress", daemon=True)
    timer.start()
    try:
        yield advance
    finally:
        stop.set()
        timer.join()
