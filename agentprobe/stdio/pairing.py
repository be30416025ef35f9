"""Lines of an MCP stdio session -> calls: each client request with the server's answer to it.

stdio frames one compact JSON-RPC message per line, in both directions; one read can hold
several lines, and a line can span reads. Ids restart at 1 in every client and may be reused
once answered (2026-07-28), and the server numbers its own requests from 1 too: a request is
matched to its answer by direction and id while it is pending, and forgotten once answered.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from ..providers import mcp

# A line longer than this is not kept (its bytes still pass): nothing a tool returns should be this big.
MAX_LINE = 64 * 1024 * 1024


class LineSplitter:
    """Bytes in, complete lines out (without the newline); a runaway line is dropped up to its end."""

    def __init__(self, limit: int = MAX_LINE) -> None:
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0
        self.dropping = False

    def feed(self, data: bytes) -> list[bytes]:
        out = []
        while data:
            end = data.find(b"\n")
            if end < 0:
                if not self.dropping:
                    self.parts.append(data)
                    self.size += len(data)
                    if self.size > self.limit:
                        self.parts, self.size, self.dropping = [], 0, True
                return out
            piece, data = data[:end], data[end + 1:]
            if self.dropping:
                self.dropping = False
            else:
                line = b"".join(self.parts) + piece if self.parts else piece
                if len(line) <= self.limit:
                    out.append(line.rstrip(b"\r"))
            self.parts, self.size = [], 0
        return out

    def rest(self) -> bytes:
        """Bytes of an unterminated last line."""
        return b"".join(self.parts)


@dataclass
class Pending:
    ticket: object  # what on_dispatch returned (a sequence number, or the sink's token)
    line: bytes
    started: float


class Pairing:
    """Calls on_dispatch(started) when a client request goes out and on_complete(ticket, request line,
    started, answer line or None, ended, error or None) when it is answered, cancelled or left unanswered."""

    def __init__(self, on_dispatch: Callable[[float], object],
                 on_complete: Callable[[object, bytes, float, bytes | None, float, str | None], None]) -> None:
        self.on_dispatch = on_dispatch
        self.on_complete = on_complete
        self.pending: dict[str, Pending] = {}

    @staticmethod
    def _messages(line: bytes) -> list[mcp.Message]:
        if not line.lstrip()[:1] in (b"{", b"["):
            return []
        try:
            return mcp.messages(json.loads(line))
        except (ValueError, RecursionError):
            return []

    def client_line(self, line: bytes, at: float) -> None:
        for m in self._messages(line):
            if m.kind == "request" and m.id is not None:
                if m.id in self.pending:  # a reused id while still pending: the first never got its answer
                    self._finish(m.id, None, at, "the client sent another request with the same id")
                self.pending[m.id] = Pending(self.on_dispatch(at), line, at)
            elif m.kind == "notification" and m.method == "notifications/cancelled":
                target = m.params.get("requestId")
                if target is not None and mcp.id_key(target) in self.pending:
                    self._finish(mcp.id_key(target), None, at, "cancelled by the client (notifications/cancelled)")
            # The client's answers to the server's own requests, and its other notifications, are no calls.

    def server_line(self, line: bytes, at: float) -> None:
        for m in self._messages(line):
            if m.kind in ("result", "error") and m.id in self.pending:
                self._finish(m.id, line, at, None)

    def close(self, at: float, why: str = "no answer: the server closed its output") -> None:
        for ident in list(self.pending):
            self._finish(ident, None, at, why)

    def _finish(self, ident: str, answer: bytes | None, at: float, error: str | None) -> None:
        p = self.pending.pop(ident)
        self.on_complete(p.ticket, p.line, p.started, answer, at, error)
