"""What the proxy hands to the writer for one finished HTTP exchange.

The recorder fills a Capture on the event loop with only cheap work (copy
references, stamp times). Parsing, hashing, token counting and redaction happen
later, in the writer thread, in `rows.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .providers.base import ParsedResponse


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
    request_body: bytes | None
    dialect: object | None = None  # providers Dialect, when the path looked like an LLM API
    first_byte_at: float | None = None  # response headers arrived
    first_chunk_at: float | None = None  # first body bytes of a stream
    status: int | None = None
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    response_body: bytes | None = None  # decoded, possibly cut at the body limit
    response_truncated: bool = False
    streamed: bool = False  # SSE / streamed JSON parsed incrementally
    stream_result: ParsedResponse | None = None
    error: str | None = None  # mitmproxy's error message when the exchange failed
    client_disconnected: bool = False
    decode_error: str | None = None
