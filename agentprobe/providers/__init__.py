"""API dialects: which one a request speaks, and the parser for it.

Recognised by path and body shape, never by host alone: a vLLM server on
localhost, a corporate gateway with a path prefix or a plain-HTTP base URL must
be recorded as fully as api.openai.com.
"""

from __future__ import annotations

import re

from . import anthropic, gemini, openai_chat, openai_responses
from .base import Dialect, ParsedRequest, ParsedResponse, ParseError
from .common import load_json

__all__ = ["detect", "provider_for", "load_json", "Dialect", "ParseError", "ParsedRequest", "ParsedResponse"]

_CHAT = re.compile(r"/chat/completions/?$")
_RESPONSES = re.compile(r"/responses/?$")
_MESSAGES = re.compile(r"/messages/?$")
_GEMINI = re.compile(r"/models/[^/:]+:(stream)?[gG]enerateContent$")


def detect(method: str, host: str, path: str, body: bytes | None = None):
    """The dialect module for an LLM API request, or None for any other traffic."""
    if method.upper() != "POST":
        return None
    route = path.split("?", 1)[0]
    if _CHAT.search(route):
        return openai_chat
    if _GEMINI.search(route):
        return gemini
    if _RESPONSES.search(route):
        return openai_responses
    if _MESSAGES.search(route):
        # OpenAI's Assistants API also has .../messages (threads); Anthropic's body has max_tokens.
        if "/threads/" in route:
            return None
        return anthropic
    return None


def provider_for(host: str, dialect) -> str:
    name = getattr(dialect, "name", dialect)
    host = (host or "").lower()
    if name == anthropic.name:
        return "anthropic"
    if name in (gemini.name, "streamGenerateContent"):
        return "gemini"
    if name in (openai_chat.name, openai_responses.name):
        return "openai" if host == "api.openai.com" else "openai_compatible"
    return "unknown"
