"""Which thread does the writer's work, and at what CPU priority.

One worker thread at a time builds and commits, in queue order. With yield_cpu it runs at the
lowest priority while it keeps up: measured on 2 cores at concurrency 1, its bursts at normal
priority cost the agent's requests ~1.5 ms at p99. But a closed loop of agents can keep every
core busy for minutes, and a writer that only gets idle time then falls behind without bound
(rows 10-15 s late in the benchmark, and the queue's limit would drop calls). So once a call
has waited BEHIND_S, a watcher starts a normal-priority worker that takes over (on Linux a
nice value is per thread, and an unprivileged thread can lower its priority but never raise it
back) and lowers itself once it has caught up.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from . import cpu_priority

# A low-priority writer that has let a call wait this long gets normal priority until the
# queue is this fresh again. The durability goal is 1 s at p99; the watcher looks every WATCH_S.
BEHIND_S = 0.25
CAUGHT_UP_S = 0.05
WATCH_S = 0.05


class CatchUp:
    def __init__(self, spawn: Callable[[threading.Thread | None], threading.Thread],
                 oldest_wait: Callable[[], float | None], drained: threading.Event, *, yield_cpu: bool) -> None:
        self._spawn = spawn  # starts a worker that first waits for the given predecessor
        self._oldest_wait = oldest_wait  # seconds the queue's head has waited, or None when empty
        self._drained = drained  # set by the worker that saw the stop marker
        self.yield_cpu = yield_cpu
        self.boosts = 0  # times the writer fell BEHIND_S behind and took normal priority to catch up
        self.worker: threading.Thread | None = None  # the one doing the work, or about to
        self._watcher: threading.Thread | None = None
        self._closing = threading.Event()
        self._boosted = False
        self._handing_over = False
        self._handed: tuple[Any, list] = (None, [])

    def start(self) -> None:
        self.worker = self._spawn(None)
        if self.yield_cpu and cpu_priority.PER_THREAD:
            self._watcher = threading.Thread(target=self._watch, name="agentprobe-writer-watch", daemon=True)
            self._watcher.start()

    def stop(self) -> None:
        """After the queue is drained: no more take-overs, and every thread is done."""
        self._closing.set()
        if self._watcher is not None:
            self._watcher.join()
        self.worker.join()  # final: only the watcher replaces it

    # -- called by a worker ---------------------------------------------------------------
    def begin(self, predecessor: threading.Thread | None) -> bool:
        """At a worker's start; False when there is nothing left for it to do."""
        if predecessor is not None:
            predecessor.join()
            self._handing_over = False
            return not self._drained.is_set()
        if self.yield_cpu and not cpu_priority.lower_this_thread():
            cpu_priority.lower_this_process()
        return True

    def take_over(self) -> tuple[Any, list]:
        """(the item the predecessor had in hand, the rows it had built but not committed)."""
        handed, self._handed = self._handed, (None, [])
        return handed

    def must_hand_over(self) -> bool:
        return self._handing_over and threading.current_thread() is not self.worker

    def hand_over(self, item: Any, built: list) -> None:
        self._handed = (item, built)

    def committed(self) -> None:
        """After each commit: a boosted worker that has caught up lowers itself again."""
        if self._boosted and threading.current_thread() is self.worker and not self._handing_over:
            age = self._oldest_wait()
            if age is None or age < CAUGHT_UP_S:
                cpu_priority.lower_this_thread()
                self._boosted = False

    # -- the watcher ----------------------------------------------------------------------
    def _watch(self) -> None:
        while not self._closing.wait(WATCH_S):
            if self._boosted or self._drained.is_set():
                continue
            age = self._oldest_wait()
            if age is not None and age > BEHIND_S:
                # In this order: a worker that saw _boosted without _handing_over would take
                # itself for the caught-up booster and clear _boosted, leaving the new one unlowered.
                self._handing_over = True
                self._boosted = True
                self.boosts += 1
                self.worker = self._spawn(self.worker)
