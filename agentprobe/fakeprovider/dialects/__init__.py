"""Which wire format a request speaks, decided by the end of its path.

Matching only the end lets any prefix through (`/v1`, `/openai/v1`,
`/anthropic/v1`, `/v1beta`), the way gateways and proxies mount providers.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs

from .anthropic_count_tokens import AnthropicCountTokens
from .anthropic_messages import AnthropicMessages
from .base import Dialect, Route
from .gemini import Gemini
from .gemini_utility import GeminiBatchEmbedContents, GeminiCountTokens, GeminiEmbedContent
from .openai_chat import OpenAIChat
from .openai_embeddings import OpenAIEmbeddings
from .openai_responses import OpenAIResponses

__all__ = ["Dialect", "Route", "route"]

_CHAT, _RESPONSES, _MESSAGES, _GEMINI = OpenAIChat(), OpenAIResponses(), AnthropicMessages(), Gemini()
_EMBEDDINGS, _COUNT_TOKENS = OpenAIEmbeddings(), AnthropicCountTokens()
_GEMINI_METHODS = {"generateContent": _GEMINI, "streamGenerateContent": _GEMINI, "embedContent": GeminiEmbedContent(),
                   "batchEmbedContents": GeminiBatchEmbedContents(), "countTokens": GeminiCountTokens()}
_GEMINI_PATH = re.compile(r"/models/([^/:]+):(" + "|".join(_GEMINI_METHODS) + ")$")


def route(path: str, query: str = "") -> Route | None:
    path = path.rstrip("/")
    if path.endswith("/chat/completions"):
        return Route(_CHAT)
    if path.endswith("/responses"):
        return Route(_RESPONSES)
    if path.endswith("/messages"):
        return Route(_MESSAGES)
    if path.endswith("/messages/count_tokens"):
        return Route(_COUNT_TOKENS)
    if path.endswith("/embeddings"):
        return Route(_EMBEDDINGS)
    match = _GEMINI_PATH.search(path)
    if match:
        streaming = match.group(2) == "streamGenerateContent"
        alt = parse_qs(query).get("alt", [""])[-1]
        return Route(_GEMINI_METHODS[match.group(2)], model=match.group(1), stream=streaming,
                     sse=streaming and alt == "sse")
    return None
