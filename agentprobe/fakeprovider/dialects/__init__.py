"""Which wire format a request speaks, decided by the end of its path.

Matching only the end lets any prefix through (`/v1`, `/openai/v1`,
`/anthropic/v1`, `/v1beta`), the way gateways and proxies mount providers.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs

from .anthropic_messages import AnthropicMessages
from .base import Dialect, Route
from .gemini import Gemini
from .openai_chat import OpenAIChat
from .openai_responses import OpenAIResponses

__all__ = ["Dialect", "Route", "route"]

_CHAT, _RESPONSES, _MESSAGES, _GEMINI = OpenAIChat(), OpenAIResponses(), AnthropicMessages(), Gemini()
_GEMINI_PATH = re.compile(r"/models/([^/:]+):(generateContent|streamGenerateContent)$")


def route(path: str, query: str = "") -> Route | None:
    path = path.rstrip("/")
    if path.endswith("/chat/completions"):
        return Route(_CHAT)
    if path.endswith("/responses"):
        return Route(_RESPONSES)
    if path.endswith("/messages"):
        return Route(_MESSAGES)
    match = _GEMINI_PATH.search(path)
    if match:
        streaming = match.group(2) == "streamGenerateContent"
        alt = parse_qs(query).get("alt", [""])[-1]
        return Route(_GEMINI, model=match.group(1), stream=streaming, sse=streaming and alt == "sse")
    return None
