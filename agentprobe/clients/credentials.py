"""Where each provider's key comes from and how it travels.

Keys are read from the environment only, never from a recording: a trace file or a database
never holds one, so anything that re-sends a call must be given it again.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

KEY_VARIABLES = {
    "openai": "OPENAI_API_KEY",
    "openai_compatible": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "gemini": "GEMINI_API_KEY",
}
# google-genai reads GOOGLE_API_KEY too; so do we, after the provider's own variable.
FALLBACK_KEY_VARIABLES = {"gemini": ("GOOGLE_API_KEY",)}
BASE_URL_VARIABLES = {"openai": "OPENAI_BASE_URL", "openai_compatible": "OPENAI_BASE_URL",
                      "anthropic": "ANTHROPIC_BASE_URL", "gemini": "GEMINI_BASE_URL"}
# The header each provider reads its key from, and how the key is written there.
KEY_HEADERS = {
    "openai": ("authorization", "Bearer {}"),
    "openai_compatible": ("authorization", "Bearer {}"),
    "anthropic": ("x-api-key", "{}"),
    "gemini": ("x-goog-api-key", "{}"),
}
OFFICIAL_HOSTS = {"openai": "api.openai.com", "anthropic": "api.anthropic.com",
                  "gemini": "generativelanguage.googleapis.com"}
# Local OpenAI-compatible servers (vLLM, Ollama) accept any key, but the SDKs refuse to start without one.
PLACEHOLDER_KEY = "not-needed"


class MissingKey(Exception):
    """No key in the environment for a provider that needs one; the message says which variable."""


def key_from_env(provider: str, env: Mapping[str, str] = os.environ) -> str | None:
    variable = KEY_VARIABLES.get(provider)
    if variable is None:
        return None
    for name in (variable, *FALLBACK_KEY_VARIABLES.get(provider, ())):
        if env.get(name):
            return env[name]
    return None


def needs_key(host: str | None) -> bool:
    """Whether a host is a provider's own endpoint (which refuses calls without a real key)."""
    host = (host or "").lower()
    return host in OFFICIAL_HOSTS.values() or host.endswith(".openai.azure.com")


def api_key(provider: str, base_url: str | None, env: Mapping[str, str] = os.environ) -> str:
    """The key to send: the environment's, else a placeholder for a server of the user's own."""
    key = key_from_env(provider, env)
    if key:
        return key
    if base_url:
        return PLACEHOLDER_KEY
    raise MissingKey(f"set {KEY_VARIABLES[provider]} to send to {provider}, or pass --base-url for a server"
                     " that needs no key")


def auth_header(provider: str, key: str) -> dict[str, str]:
    header, form = KEY_HEADERS[provider]
    return {header: form.format(key)}
