"""The recording addon: observe every HTTP exchange, alter none.

Each hook does constant, cheap work and never touches the disk. LLM responses
are always streamed through a tee (SSE or not), so the agent gets the
provider's bytes as they arrive and the proxy never holds a whole response
just to record it. Anything else passes through streamed and is recorded by
status and timing only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from mitmproxy import http

from ..capture.exchange import STORED_BODY_LIMIT, Capture
from ..providers import detect_llm, mcp
from ..providers.mcp import has_mcp_headers
from .stream_tee import StreamTee

log = logging.getLogger("agentprobe.recorder")

PARSE_LIMIT = 32 * 1024 * 1024  # decoded bytes of a non-SSE body kept for the writer to parse
# An MCP event stream on a GET (the legacy HTTP+SSE transport's answers, a session's server messages)
# lasts as long as the session: this much of it is kept for the writer to match answers to requests.
MCP_STREAM_LIMIT = 16 * 1024 * 1024


def _is_event_stream(flow: http.HTTPFlow) -> bool:
    ctype = flow.response.headers.get("content-type", "")
    if ctype.startswith("text/event-stream"):
        return True
    # Gemini's streamGenerateContent without alt=sse streams a JSON array.
    return ":streamGenerateContent" in flow.request.path


class RunState:
    """The counters of one run: seq and completion_seq count from 1 in each run."""

    __slots__ = ("run_id", "dispatched", "completed")

    def __init__(self, run_id: str | None) -> None:
        self.run_id = run_id  # None: the writer's own run
        self.dispatched = 0
        self.completed = 0

    @property
    def in_flight(self) -> int:
        return self.dispatched - self.completed


class Recorder:
    """Hands one Capture per finished exchange to `sink` (the writer's submit).

    A flow belongs to the run that was current when its request began (`switch_run`), even
    if it completes after the next run has begun; or, on a recorder split into sessions, to
    the run of its session.
    """

    def __init__(self, sink: Callable[[Capture], None], *, body_limit: int = STORED_BODY_LIMIT) -> None:
        self.sink = sink
        self.body_limit = body_limit
        self.dispatched = 0
        self.completed = 0
        self.errors = 0
        self.base = self.current = RunState(None)

    def switch_run(self, run_id: str | None) -> RunState:
        """Make run_id current (None: the writer's own run, whose counters carry on), from any thread:
        one reference assignment. Returns the run it replaces."""
        previous, self.current = self.current, (self.base if run_id is None else RunState(run_id))
        return previous

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.metadata.get("agentprobe.internal"):  # agentprobe's own messages (the stdio wrapper's)
            return
        self.dispatched += 1
        # A session's run, chosen by the session addon (addons/session_keys.py), else the current one.
        run = flow.metadata.get("agentprobe.session_run") or self.current
        run.dispatched += 1
        flow.metadata["agentprobe.run"] = run
        flow.metadata["agentprobe.seq"] = run.dispatched

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.metadata.get("agentprobe.internal"):
            return
        if "agentprobe.seq" not in flow.metadata:  # requestheaders skipped (e.g. replayed flows)
            self.requestheaders(flow)
        req = flow.request
        try:
            # MCP first, by its headers or a bounded look at the body: its legacy POSTs go to /messages/.
            body = req.raw_content
            if req.method != "POST":
                dialect = None
            elif has_mcp_headers(req.headers.fields) or mcp.looks_like_jsonrpc(body):
                dialect = mcp
            else:
                dialect = detect_llm(req.path)
        except Exception:
            dialect = None
        flow.metadata["agentprobe.dialect"] = dialect

    def completions_for(self, flow: http.HTTPFlow) -> Callable[[int], int]:
        """allocate(n): completion numbers, in the flow's run, for n answers that arrive inside its
        stream; returns the first."""
        run = flow.metadata.get("agentprobe.run") or self.current

        def allocate(n: int) -> int:
            self.completed += n
            first = run.completed + 1
            run.completed += n
            return first
        return allocate

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        flow.metadata["agentprobe.first_byte_at"] = time.time()
        dialect = flow.metadata.get("agentprobe.dialect")
        marks = None
        if dialect is None and flow.request.method == "GET" and \
                flow.response.headers.get("content-type", "").startswith("text/event-stream"):
            # Perhaps an MCP session's stream (the writer decides): kept, with the time and a completion
            # number for each event as it passes, since the answers it carries complete calls.
            dialect = flow.metadata["agentprobe.dialect"] = mcp
            marks = (self.completions_for(flow), [])
        if dialect is None:
            flow.response.stream = True  # not ours: pass through without buffering
            return
        factory = None
        if dialect is mcp:
            if marks is None and _is_event_stream(flow):
                # An answer streamed after its notifications: the answer's own event completes the call,
                # not the stream's end (a client may hang up later, or the server close late).
                marks = (self.completions_for(flow), [])
            keep = MCP_STREAM_LIMIT if flow.request.method == "GET" else PARSE_LIMIT  # read by the writer
        elif _is_event_stream(flow):
            factory = dialect.stream_parser
            keep = self.body_limit
        else:
            keep = PARSE_LIMIT
        tee = StreamTee(flow, factory, keep, marks)
        flow.metadata["agentprobe.tee"] = tee
        flow.response.stream = tee

    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        # mitmproxy keeps every message of a WebSocket flow; we record none of them.
        if flow.websocket is not None and len(flow.websocket.messages) > 1:
            del flow.websocket.messages[:-1]

    def _finish(self, flow: http.HTTPFlow) -> None:
        if flow.metadata.get("agentprobe.done") or "agentprobe.seq" not in flow.metadata:
            return
        flow.metadata["agentprobe.done"] = True
        try:
            self.completed += 1
            run = flow.metadata.get("agentprobe.run") or self.current
            run.completed += 1
            cap = self._capture(flow, run.completed)
            cap.run_id = run.run_id
            self.sink(cap)
        except Exception:
            self.errors += 1
            log.exception("agentprobe could not capture a flow")

    def _capture(self, flow: http.HTTPFlow, completion_seq: int) -> Capture:
        req = flow.request
        resp = flow.response
        tee: StreamTee | None = flow.metadata.pop("agentprobe.tee", None)
        err = flow.error.msg if flow.error else None
        cap = Capture(
            seq=flow.metadata["agentprobe.seq"],
            completion_seq=completion_seq,
            started_at=req.timestamp_start,
            ended_at=(resp.timestamp_end if resp and resp.timestamp_end and not err else None) or time.time(),
            method=req.method,
            scheme=req.scheme,
            # Under `trace --serve` the request was redirected; record where the agent sent it.
            host=flow.metadata.get("agentprobe.redirected_from") or req.pretty_host,
            port=req.port,
            path=req.path,
            request_headers=list(req.headers.items(multi=True)),
            request_body=req.raw_content if flow.metadata.get("agentprobe.dialect") else None,
            dialect=flow.metadata.get("agentprobe.dialect"),
            first_byte_at=flow.metadata.get("agentprobe.first_byte_at"),
            error=err,
            client_disconnected=bool(err and "client disconnected" in err.lower()),
        )
        if cap.request_body:
            # Decoded by the writer, with a cap: an 800-byte brotli request can expand to gigabytes.
            cap.request_encoding = req.headers.get("content-encoding")
        if resp is not None:
            cap.status = resp.status_code
            cap.response_headers = list(resp.headers.items(multi=True))
        if tee is not None:
            cap.first_chunk_at = tee.first_chunk_at
            cap.response_body = bytes(tee.kept)
            cap.response_truncated = tee.truncated
            cap.decode_error = tee.decode_error
            cap.marks = tee.marks
            if tee.parser_factory is not None:
                cap.streamed = True
                if tee.parser is not None:
                    cap.stream_result = tee.parser.result()
                else:
                    cap.stream_deferred = True
        return cap
