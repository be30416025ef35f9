"""Anthropic token counting: `POST .../messages/count_tokens`.

The body is a messages request without max_tokens; the answer is its size in tokens,
counted as the fake counts a messages call's input (system, messages and tools).
"""

from __future__ import annotations

from typing import Any

from ..reply import Ask, Reply
from .anthropic_messages import AnthropicMessages
from .base import Route


class AnthropicCountTokens(AnthropicMessages):
    name = "anthropic.count_tokens"

    def read(self, body: dict[str, Any], route: Route) -> Ask:
        ask = super().read(body, route)
        ask.stream = False  # counting has no stream form
        return ask

    def render(self, reply: Reply) -> dict[str, Any]:
        return {"input_tokens": reply.input_tokens}
