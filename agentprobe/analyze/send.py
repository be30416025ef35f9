"""Send the prompt through the provider's own SDK and bring back the answer text.

The SDKs are used rather than raw HTTP so that retries, backoff and retry-after handling are the
ones users already rely on, and so that `agentprobe trace -- agentprobe analyze ...` records a
call exactly like any other agent's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..credentials import KEY_VARIABLES

PROVIDERS = ("openai", "anthropic")
ANTHROPIC_MAX_TOKENS = 8192  # the Messages API requires a limit; a full analysis is a few thousand tokens
# Local OpenAI-compatible servers (vLLM, Ollama) accept any key, but the SDK refuses to start without one.
PLACEHOLDER_KEY = "not-needed"


class SendError(Exception):
    """The call could not be made or the provider refused it; the message is one line."""


@dataclass
class Answer:
    text: str
    finish_reason: str | None  # stop | length | other, normalised across providers
    model: str | None
    input_tokens: int | None
    output_tokens: int | None


def api_key(provider: str, base_url: str | None, env: Mapping[str, str] = os.environ) -> str:
    key = env.get(KEY_VARIABLES[provider])
    if key:
        return key
    if base_url:
        return PLACEHOLDER_KEY
    raise SendError(f"{KEY_VARIABLES[provider]} is not set: export it, or pass --base-url for a server that needs no key")


def _sdk(provider: str):
    try:
        if provider == "anthropic":
            import anthropic as module
        else:
            import openai as module
    except ImportError:
        raise SendError(f"sending to {provider} needs its SDK: pip install {provider}") from None
    return module


def _one_line(text: str, limit: int = 240) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(error: Exception, module, who: str, attempts: int, key_var: str | None = None) -> str:
    tried = f"after {attempts} attempt(s)"
    if isinstance(error, module.APIStatusError):
        # The SDKs retry only these; saying "after 3 attempts" of a 401 would be false.
        retried = error.status_code in (408, 409, 429) or error.status_code >= 500
        body = error.body if isinstance(error.body, dict) else {}
        detail = body.get("error", body) if isinstance(body.get("error", body), dict) else {}
        message = detail.get("message") or error.message
        status = error.status_code
        hint = {429: " (rate limited: wait, lower concurrency, or raise the limit)",
                401: f" (no key was sent: set {key_var})" if key_var else " (the API key was refused)",
                404: " (unknown model or path: check --model and --base-url)",
                529: " (overloaded: try again later)"}.get(status, "")
        return f"{who} answered HTTP {status}{hint}{' ' + tried if retried else ''}: {_one_line(message)}"
    if isinstance(error, module.APITimeoutError):
        return f"{who} did not answer in time {tried}: raise --timeout or try again"
    if isinstance(error, module.APIConnectionError):
        cause = error.__cause__ or error
        return f"could not reach {who} {tried}: {_one_line(cause)}"
    return f"{who} call failed: {_one_line(error)}"


def send(prompt: str, *, provider: str, model: str, base_url: str | None = None, max_retries: int = 2,
         timeout: float = 300.0, max_tokens: int | None = None, temperature: float | None = None,
         env: Mapping[str, str] = os.environ) -> Answer:
    module = _sdk(provider)
    key = api_key(provider, base_url, env)
    messages = [{"role": "user", "content": prompt}]
    try:
        if provider == "anthropic":
            client = module.Anthropic(api_key=key, base_url=base_url, max_retries=max_retries, timeout=timeout)
            extra: dict[str, Any] = {}
            if temperature is not None:
                # anthropic 2.x dropped the parameter from messages.create; the API still takes it.
                extra["extra_body"] = {"temperature": temperature}
            resp = client.messages.create(model=model, messages=messages,
                                          max_tokens=max_tokens or ANTHROPIC_MAX_TOKENS, **extra)
            text = "".join(block.text for block in resp.content if getattr(block, "type", None) == "text")
            finish = {"max_tokens": "length", "end_turn": "stop", "stop_sequence": "stop"}.get(
                resp.stop_reason, resp.stop_reason)
            usage = resp.usage
            return Answer(text, finish, resp.model, getattr(usage, "input_tokens", None),
                          getattr(usage, "output_tokens", None))
        client = module.OpenAI(api_key=key, base_url=base_url, max_retries=max_retries, timeout=timeout)
        kwargs: dict[str, Any] = {}
        if temperature is not None:
            kwargs["temperature"] = temperature
        if max_tokens is not None:
            # OpenAI's own API wants the newer name (reasoning models reject max_tokens); compatible
            # servers such as Ollama only know the older one.
            kwargs["max_tokens" if base_url else "max_completion_tokens"] = max_tokens
        resp = client.chat.completions.create(model=model, messages=messages, **kwargs)
    except module.APIError as e:
        raise SendError(_describe(e, module, base_url or provider, max_retries + 1,
                                  KEY_VARIABLES[provider] if key == PLACEHOLDER_KEY else None)) from None
    if not resp.choices:
        return Answer("", None, resp.model, None, None)
    choice = resp.choices[0]
    usage = resp.usage
    return Answer(choice.message.content or "", choice.finish_reason, resp.model,
                  getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None))
