"""The proxy's end of the stdio wrapper: calls of a wrapped MCP server join the run being recorded.

The wrapper (stdio/sinks.py, under `trace`) sends its notices through this proxy to a path
the proxy answers itself, named with the run's id. Each request it saw going out takes the
next dispatch number and each answer the next completion number, from the recorder's own
counters: the wrapped server's calls sit in the same `seq`/`completion_seq` space as the
LLM calls. Only a small JSON header is read here; the lines themselves go to the writer
as they are, like any other capture. Notices are never recorded as calls.
"""

from __future__ import annotations

import logging

from mitmproxy import http

from ..stdio.sinks import RUN_HEADER, SINK_PATH, capture, decode
from ..util.lru import LRU
from .recorder import Recorder, RunState

log = logging.getLogger("agentprobe.stdio")

IN_FLIGHT_REMEMBERED = 10_000


class StdioSink:
    def __init__(self, recorder: Recorder, run_id: str) -> None:
        self.recorder = recorder
        self.run_id = run_id
        # (wrapper, token) -> (run, seq)
        self.seqs: LRU[tuple[str, int], tuple[RunState, int]] = LRU(IN_FLIGHT_REMEMBERED)
        # A notice the wrapper sent again after its connection broke may have been taken already.
        self.completed: LRU[tuple[str, int], bool] = LRU(IN_FLIGHT_REMEMBERED)

    def _ours(self, flow: http.HTTPFlow) -> bool:
        req = flow.request
        return req.path.split("?", 1)[0] == SINK_PATH and req.headers.get(RUN_HEADER) == self.run_id

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if self._ours(flow):
            flow.metadata["agentprobe.internal"] = True  # the recorder neither numbers nor records it

    def request(self, flow: http.HTTPFlow) -> None:
        if not flow.metadata.get("agentprobe.internal"):
            return
        try:
            self._take(flow.request.raw_content or b"")
            flow.response = http.Response.make(204)
        except Exception as e:  # noqa: BLE001 - a bad notice costs its calls, said to the wrapper
            log.warning("agentprobe: a stdio wrapper notice could not be read: %s", e)
            self.recorder.errors += 1
            flow.response = http.Response.make(400, f"agentprobe: unreadable notice: {e}\n".encode())

    def _take(self, body: bytes) -> None:
        header, events = decode(body)
        wrapper, command = str(header.get("wrapper")), str(header.get("command") or "")
        rec = self.recorder
        for event, request, answer in events:
            key = (wrapper, int(event["token"]))
            if event["k"] == "d":
                if self.seqs.get(key) is not None or self.completed.get(key):
                    continue
                run = rec.current  # the run being recorded now (a test's, under the pytest plugin)
                rec.dispatched += 1
                run.dispatched += 1
                self.seqs[key] = (run, run.dispatched)
            elif event["k"] == "c":
                if self.completed.get(key):
                    continue
                self.completed[key] = True
                run, seq = self.seqs.get(key) or (rec.current, None)
                if seq is None:  # its dispatch was forgotten (or never sent): numbered now
                    rec.dispatched += 1
                    run.dispatched += 1
                    seq = run.dispatched
                rec.completed += 1
                run.completed += 1
                cap = capture(seq, run.completed, command, request or b"", float(event["started"]), answer,
                              float(event["ended"]), event.get("error"))
                cap.run_id = run.run_id
                rec.sink(cap)
