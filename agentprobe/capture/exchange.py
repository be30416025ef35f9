"""What the proxy hands to the writer for one finished HTTP exchange.

The recorder fills a Capture on the event loop with only cheap work (copy
references, stamp times). Parsing, hashing, token counting and redaction happen
later, in the writer process, in `rows.py`; `to_wire`/`from_wire` carry a
Capture across the process boundary.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field

from ..providers.base import ParsedResponse


# Bytes of a body kept for the database (and, for a stream, teed while it passes).
STORED_BODY_LIMIT = 2 * 1024 * 1024


@dataclass
class Capture:
    seq: int
    completion_seq: int
    started_at: float
    ended_at: float
    method: str
    scheme: str
    host: str
    port: int
    path: str
    request_headers: list[tuple[str, str]]
    request_body: bytes | None  # as sent, still content-encoded (decoded in the writer, bounded)
    dialect: object | None = None  # providers Dialect, when the path looked like an LLM API
    first_byte_at: float | None = None  # response headers arrived
    first_chunk_at: float | None = None  # first body bytes of a stream
    status: int | None = None
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    response_body: bytes | None = None  # decoded, possibly cut at the body limit
    response_truncated: bool = False
    streamed: bool = False  # SSE / streamed JSON parsed incrementally
    stream_result: ParsedResponse | None = None  # when the stream had to be parsed as it passed
    stream_deferred: bool = False  # the kept body is the whole stream: parse it when building the row
    error: str | None = None  # mitmproxy's error message when the exchange failed
    client_disconnected: bool = False
    decode_error: str | None = None  # why the response body could not be read (whole)
    request_encoding: str | None = None  # the request's content-encoding, when it had one
    run_id: str | None = None  # the run it belongs to, when the recorder switches runs; None: the writer's own
    # An MCP event stream: per chunk that ended events, (decoded offset past it, time, first completion
    # number, events ended), so answers on a session's stream get their own times and order.
    marks: list[tuple[int, float, int, int]] | None = None


def to_wire(cap: Capture) -> Capture:
    """A picklable copy: dialects are modules, so they travel by name."""
    d = cap.dialect
    return dataclasses.replace(cap, dialect=d.__name__) if d is not None and not isinstance(d, str) else cap


def from_wire(cap: Capture) -> Capture:
    if isinstance(cap.dialect, str):
        cap.dialect = importlib.import_module(cap.dialect)
    return cap
