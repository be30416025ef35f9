"""API dialects: which one a request speaks, and the parser for it.

Recognised by path and body shape, never by host alone: a vLLM server on
localhost, a corporate gateway with a path prefix or a plain-HTTP base URL must
be recorded as fully as api.openai.com.
"""

from __future__ import annotations

import re

from . import (
    anthropic,
    anthropic_count_tokens,
    gemini,
    gemini_count_tokens,
    gemini_embeddings,
    mcp,
    openai_chat,
    openai_embeddings,
    openai_responses,
)
from .base import Dialect, ParsedRequest, ParsedResponse, ParseError
from .common import load_json

__all__ = ["DIALECTS", "detect", "detect_llm", "provider_for", "load_json", "Dialect", "ParseError", "ParsedRequest",
           "ParsedResponse"]

DIALECTS = (openai_chat, openai_responses, openai_embeddings, anthropic, anthropic_count_tokens, gemini,
            gemini_embeddings, gemini_count_tokens)
_FAMILY = {api: dialect.FAMILY for dialect in DIALECTS for api in dialect.APIS}

_CHAT = re.compile(r"/chat/completions/?$")
_RESPONSES = re.compile(r"/responses/?$")
_MESSAGES = re.compile(r"/messages/?$")
_COUNT_TOKENS = re.compile(r"/messages/count_tokens/?$")
_EMBEDDINGS = re.compile(r"/embeddings/?$")
_GEMINI = re.compile(r"/models/[^/:]+:((?:stream)?[gG]enerateContent|embedContent|batchEmbedContents|countTokens)$")
_GEMINI_METHODS = {"embedContent": gemini_embeddings, "batchEmbedContents": gemini_embeddings,
                   "countTokens": gemini_count_tokens}


def detect(method: str, host: str, path: str, body: bytes | None = None):
    """The dialect module for an LLM API request, or None for any other traffic (MCP: see providers.mcp)."""
    if method.upper() != "POST":
        return None
    if mcp.looks_like_jsonrpc(body):
        # MCP's JSON-RPC, whatever the path: the legacy HTTP+SSE transport POSTs to /messages/.
        return None
    return detect_llm(path)


def detect_llm(path: str):
    """detect() for a POST whose body is known not to be JSON-RPC: by path alone."""
    route = path.split("?", 1)[0]
    if _CHAT.search(route):
        return openai_chat
    gemini_method = _GEMINI.search(route)
    if gemini_method:
        return _GEMINI_METHODS.get(gemini_method.group(1), gemini)
    if _RESPONSES.search(route):
        return openai_responses
    if _MESSAGES.search(route):
        # OpenAI's Assistants API also has .../messages (threads); Anthropic's body has max_tokens.
        if "/threads/" in route:
            return None
        return anthropic
    if _COUNT_TOKENS.search(route):
        return anthropic_count_tokens
    if _EMBEDDINGS.search(route):
        return openai_embeddings
    return None


def provider_for(host: str, dialect) -> str:
    """The provider column for a call: a dialect module, or an api name, and the host it went to."""
    family = _FAMILY.get(getattr(dialect, "name", dialect))
    if family == "openai":
        return "openai" if (host or "").lower() == "api.openai.com" else "openai_compatible"
    return family or "unknown"
