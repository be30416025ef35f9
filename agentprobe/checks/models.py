"""Context windows and prices of current models, matched by exact name then by prefix.

An unknown model is reported as unknown rather than guessed: a wrong window
would make the context check lie in either direction.
"""

from __future__ import annotations

CONTEXT_WINDOWS: dict[str, int] = {
    # OpenAI
    "gpt-5": 400_000, "gpt-5-mini": 400_000, "gpt-5-nano": 400_000, "gpt-5.1": 400_000,
    "gpt-4.1": 1_047_576, "gpt-4.1-mini": 1_047_576, "gpt-4.1-nano": 1_047_576,
    "gpt-4o": 128_000, "gpt-4o-mini": 128_000, "gpt-4-turbo": 128_000, "gpt-4": 8_192, "gpt-3.5-turbo": 16_385,
    "o1": 200_000, "o3": 200_000, "o3-mini": 200_000, "o4-mini": 200_000,
    # Anthropic
    "claude-opus-4": 200_000, "claude-sonnet-4": 200_000, "claude-haiku-4": 200_000,
    "claude-3-7-sonnet": 200_000, "claude-3-5-sonnet": 200_000, "claude-3-5-haiku": 200_000,
    "claude-3-opus": 200_000, "claude-3-haiku": 200_000,
    # Google
    "gemini-2.5-pro": 1_048_576, "gemini-2.5-flash": 1_048_576, "gemini-2.5-flash-lite": 1_048_576,
    "gemini-2.0-flash": 1_048_576, "gemini-1.5-pro": 2_097_152, "gemini-1.5-flash": 1_048_576,
    # Open models as commonly served (vLLM, Ollama, OpenRouter)
    "llama-3.1": 128_000, "llama-3.2": 128_000, "llama-3.3": 128_000, "llama3.1": 128_000, "llama3.2": 128_000,
    "llama3.3": 128_000, "meta-llama/llama-3.1": 128_000, "meta-llama/llama-3.3": 128_000,
    "mistral-large": 128_000, "mistral-small": 32_000, "mixtral-8x7b": 32_768,
    "qwen2.5": 32_768, "qwen3": 32_768, "deepseek-chat": 64_000, "deepseek-r1": 64_000, "deepseek-v3": 64_000,
}

# USD per million tokens (input, output); used only to put a price on wasted tokens.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00), "gpt-4o-mini": (0.15, 0.60), "gpt-4.1": (2.00, 8.00), "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40), "gpt-5": (1.25, 10.00), "gpt-5-mini": (0.25, 2.00), "o3": (2.00, 8.00),
    "o4-mini": (1.10, 4.40), "claude-opus-4": (15.00, 75.00), "claude-sonnet-4": (3.00, 15.00),
    "claude-haiku-4": (1.00, 5.00), "claude-3-5-haiku": (0.80, 4.00), "gemini-2.5-pro": (1.25, 10.00),
    "gemini-2.5-flash": (0.30, 2.50),
}


def _lookup(table: dict, model: str | None):
    if not model:
        return None
    name = model.lower().split("/")[-1] if model.lower() not in table else model.lower()
    if name in table:
        return table[name]
    # Dated snapshots and variants: gpt-4o-2024-08-06, claude-sonnet-4-6-20250929, llama3.1:8b.
    best = max((k for k in table if name.startswith(k)), key=len, default=None)
    return table[best] if best else None


def context_window(model: str | None, extra: dict[str, int] | None = None) -> int | None:
    if extra:
        found = _lookup({k.lower(): v for k, v in extra.items()}, model)
        if found:
            return found
    return _lookup(CONTEXT_WINDOWS, model)


def price(model: str | None) -> tuple[float, float] | None:
    return _lookup(PRICES, model)
