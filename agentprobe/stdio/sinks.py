"""Where a wrapped stdio server's calls go: into a trace's run (through its proxy), or into a run of their own.

Under `agentprobe trace` the child environment names the run and the proxy
(AGENTPROBE_RUN_ID, AGENTPROBE_PROXY_URL). The wrapper then tells the proxy each request as it
goes out and each answer as it comes back, so the proxy's recorder numbers them in the same
`seq`/`completion_seq` space as the LLM calls, and the run's one writer records them (redaction,
linking, losses counted) like every other call. Standalone, the wrapper writes a run of its own.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import threading
import time
import urllib.parse
from typing import Any

from ..capture.exchange import Capture
from ..providers import mcp
from ..util.say import warn

RUN_ENV = "AGENTPROBE_RUN_ID"
PROXY_ENV = "AGENTPROBE_PROXY_URL"
# The proxy answers this path itself (addons/stdio_sink.py) for the run it records, whatever the host.
SINK_PATH = "/__agentprobe/stdio"
SINK_URL = "http://agentprobe.invalid" + SINK_PATH
RUN_HEADER = "x-agentprobe-run"


def capture(seq: int, completion: int, command: str, request: bytes, started: float, answer: bytes | None,
            ended: float, error: str | None) -> Capture:
    """One stdio call as the writer takes it: the request line and its answer line, no HTTP."""
    return Capture(seq=seq, completion_seq=completion, started_at=started, ended_at=ended, method=None,
                   scheme="stdio", host="stdio", port=None, path=command, request_headers=[],
                   request_body=request, dialect=mcp, response_body=answer, error=error)


def encode(wrapper: str, command: str, events: list[dict[str, Any]], blobs: list[bytes]) -> bytes:
    """A notice: one JSON header line, then the request and answer lines it names, back to back."""
    head = json.dumps({"wrapper": wrapper, "command": command, "events": events}, separators=(",", ":"))
    return head.encode() + b"\n" + b"".join(blobs)


def decode(body: bytes) -> tuple[dict, list[tuple[dict, bytes | None, bytes | None]]]:
    head, _, rest = body.partition(b"\n")
    header = json.loads(head)
    out, at = [], 0
    for event in header.get("events") or []:
        parts = []
        for key in ("req", "resp"):
            n = event.get(key)
            if isinstance(n, int) and n >= 0:
                parts.append(rest[at:at + n])
                at += n
            else:
                parts.append(None)
        out.append((event, parts[0], parts[1]))
    return header, out


class _Barrier:
    """Set once every notice queued before it has reached the proxy (or cannot)."""

    def __init__(self, done) -> None:
        self.done = done


class ProxySink:
    """Notices to a trace's proxy, sent in order from a thread.

    The proxy numbers a notice when it arrives, so a line that starts or ends a call must not
    reach the other side before its notice has: otherwise the agent's next LLM call, caused by
    that answer, could be numbered first (a completion order that never happened). The wrapper
    therefore waits on `barrier` for such lines; everything queued before it is sent at once.
    """

    def __init__(self, proxy_url: str, run_id: str, command: str) -> None:
        self.run_id = run_id
        self.command = command
        self.wrapper = f"{os.getpid()}-{time.time_ns()}"
        where = urllib.parse.urlsplit(proxy_url)
        self.proxy = (where.hostname or "127.0.0.1", where.port or 8080)
        self.connection: http.client.HTTPConnection | None = None  # one kept open: a notice costs a round trip
        self.queue: queue.Queue = queue.Queue()
        self.tokens = 0
        self.failed = False
        self.thread = threading.Thread(target=self._send_loop, name="agentprobe-stdio-sink", daemon=True)
        self.thread.start()

    def dispatch(self, started: float) -> int:
        self.tokens += 1
        self.queue.put(({"k": "d", "token": self.tokens, "t": started}, []))
        return self.tokens

    def complete(self, token: int, request: bytes, started: float, answer: bytes | None, ended: float,
                 error: str | None) -> None:
        event = {"k": "c", "token": token, "started": started, "ended": ended, "error": error,
                 "req": len(request), "resp": None if answer is None else len(answer)}
        self.queue.put((event, [request] + ([answer] if answer is not None else [])))

    def barrier(self, done) -> None:
        """Call done() once all the notices queued so far are at the proxy (or never will be)."""
        self.queue.put(_Barrier(done))

    def close(self, timeout: float = 10) -> None:
        self.queue.put(None)
        self.thread.join(timeout)

    def _send_loop(self) -> None:
        done = False
        while not done:
            items = [self.queue.get()]
            while True:
                try:
                    items.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            if None in items:
                done = True
                items = items[:items.index(None)]
            batch = [i for i in items if not isinstance(i, _Barrier)]
            try:
                if batch and not self.failed:
                    self._send(batch)
            finally:
                for item in items:
                    if isinstance(item, _Barrier):
                        item.done()

    def _send(self, batch: list) -> None:
        body = encode(self.wrapper, self.command, [e for e, _ in batch], [b for _, blobs in batch for b in blobs])
        headers = {RUN_HEADER: self.run_id, "content-type": "application/x-agentprobe"}
        for attempt in (1, 2):  # a kept connection the proxy has since closed gets one fresh retry
            try:
                if self.connection is None:
                    self.connection = http.client.HTTPConnection(*self.proxy, timeout=10)
                self.connection.request("POST", SINK_URL, body=body, headers=headers)
                response = self.connection.getresponse()
                response.read()
                if response.status >= 300:
                    warn(f"the trace's proxy refused a stdio notice (HTTP {response.status}); "
                         f"{len(batch)} event(s) of this server are not recorded")
                return
            except (OSError, http.client.HTTPException) as e:
                self.connection.close()
                self.connection = None
                if attempt == 2 or isinstance(e, ConnectionRefusedError):
                    # The server's traffic goes on; only the recording of it stops, and says so once.
                    self.failed = True
                    warn(f"the stdio wrapper cannot reach the trace's proxy ({e}); "
                         "this server's calls are not recorded")


class OwnRunSink:
    """A run of the wrapper's own, written by an in-process writer."""

    def __init__(self, db, command: str, label: str | None) -> None:
        from .. import __version__
        from ..capture import redact
        from ..capture.rows import RowBuilder
        from ..store.db import resolve_path
        from ..store.writer import Writer
        from ..util.clock import new_id, now_iso

        self.command = command
        self.run_id = new_id()
        run = {"id": self.run_id, "started_at": now_iso(), "label": redact.scrub_command(label),
               "command": redact.scrub_command(command), "mode": "stdio", "agentprobe_version": __version__}
        self.writer = Writer(resolve_path(db), run, RowBuilder(self.run_id).build)
        self.writer.start()  # raises StoreError
        self.lock = threading.Lock()
        self.dispatched = 0
        self.completed = 0

    def dispatch(self, started: float) -> int:
        with self.lock:
            self.dispatched += 1
            return self.dispatched

    def barrier(self, done) -> None:
        done()  # numbered here, in order, already: nothing to wait for

    def complete(self, seq: int, request: bytes, started: float, answer: bytes | None, ended: float,
                 error: str | None) -> None:
        with self.lock:
            self.completed += 1
            completion = self.completed
        self.writer.submit(capture(seq, completion, self.command, request, started, answer, ended, error))

    def close(self, exit_code: int | None = None) -> None:
        from ..util.clock import now_iso

        self.writer.close(status="completed", exit_code=exit_code, ended_at=now_iso())
