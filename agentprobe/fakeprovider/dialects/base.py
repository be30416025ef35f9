"""The contract every wire format implements, plus SSE framing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..directives import Directives
from ..reply import Ask, Reply


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def sse(data: Any, event: str | None = None, newline: str = "\n") -> bytes:
    head = f"event: {event}{newline}" if event else ""
    payload = data if isinstance(data, str) else dumps(data).decode()
    return f"{head}data: {payload}{newline}{newline}".encode()


@dataclass
class Route:
    dialect: "Dialect"
    model: str | None = None  # from the URL (Gemini)
    stream: bool = False  # from the URL (Gemini)
    sse: bool = True  # Gemini streams are a JSON array unless ?alt=sse


class Dialect:
    name = ""
    stream_content_type = "text/event-stream; charset=utf-8"

    def read(self, body: dict[str, Any], route: Route) -> Ask:
        raise NotImplementedError

    def render(self, reply: Reply) -> dict[str, Any]:
        raise NotImplementedError

    def events(self, reply: Reply, route: Route) -> list[bytes]:
        """The whole stream, one element per event (the unit of cut_after)."""
        raise NotImplementedError

    def error(self, status: int, code: str | None, ask: Ask | None, message: str | None = None) -> dict[str, Any]:
        raise NotImplementedError

    def error_events(self, error: dict[str, Any], route: Route) -> list[bytes]:
        """A failure reported inside a 200 stream, as the provider does mid-stream."""
        raise NotImplementedError

    def headers(self, status: int, directives: Directives) -> list[tuple[str, str]]:
        return []

    def content_type(self, route: Route) -> str:
        return self.stream_content_type
