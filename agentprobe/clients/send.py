"""Send one prompt to a provider and bring back the answer.

The SDKs are used rather than raw HTTP (openai, anthropic; Gemini through its REST API) so
that retries, backoff and retry-after handling are the ones users already rely on, and so that
a call made through agentprobe's proxy is recorded exactly like any agent's.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .credentials import KEY_VARIABLES, PLACEHOLDER_KEY, api_key

PROVIDERS = ("openai", "openai_compatible", "anthropic", "gemini")
GEMINI_DEFAULT = "https://generativelanguage.googleapis.com"
ANTHROPIC_DEFAULT_MAX_TOKENS = 8192  # the Messages API requires a limit; used only when none is given


class SendError(Exception):
    """The call could not be made or the provider refused it; the message is one line."""


@dataclass
class Request:
    provider: str
    model: str
    prompt: str
    system: str | None = None
    tools: list | None = None
    # Sampling settings by our names: temperature, top_p, max_tokens, seed. Only these are sent.
    settings: dict[str, Any] = field(default_factory=dict)
    base_url: str | None = None


@dataclass
class Route:
    """How the call leaves this process: through agentprobe's proxy, trusting its CA, or directly."""

    proxy_url: str | None = None
    ca_bundle: Path | None = None
    max_retries: int = 2
    timeout: float = 300.0


@dataclass
class Answer:
    text: str
    finish_reason: str | None  # stop | length | tool_calls | ..., normalised across providers
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None


_FINISH = {"max_tokens": "length", "end_turn": "stop", "stop_sequence": "stop", "tool_use": "tool_calls",
           "MAX_TOKENS": "length", "STOP": "stop"}


def send(req: Request, route: Route | None = None, env: Mapping[str, str] = os.environ) -> Answer:
    route = route or Route()
    key = api_key(req.provider, req.base_url, env)
    if req.provider == "gemini":
        return _gemini(req, route, key)
    module = _sdk(req.provider)
    who = req.base_url or req.provider
    try:
        if req.provider == "anthropic":
            return _anthropic(module, req, route, key)
        return _openai(module, req, route, key)
    except module.APIError as e:
        raise SendError(_describe(e, module, who, route.max_retries + 1,
                                  KEY_VARIABLES[req.provider] if key == PLACEHOLDER_KEY else None)) from None


def _sdk(provider: str):
    try:
        if provider == "anthropic":
            import anthropic as module
        else:
            import openai as module
    except ImportError:
        name = "anthropic" if provider == "anthropic" else "openai"
        raise SendError(f"sending to {provider} needs its SDK: pip install {name}") from None
    return module


def _http_client(module, route: Route):
    if route.proxy_url is None and route.ca_bundle is None:
        return None
    verify = ssl.create_default_context(cafile=str(route.ca_bundle)) if route.ca_bundle else True
    return module.DefaultHttpxClient(proxy=route.proxy_url, verify=verify, trust_env=False)


def _openai(module, req: Request, route: Route, key: str) -> Answer:
    client = module.OpenAI(api_key=key, base_url=req.base_url, max_retries=route.max_retries, timeout=route.timeout,
                           http_client=_http_client(module, route))
    messages = ([{"role": "system", "content": req.system}] if req.system else []) \
        + [{"role": "user", "content": req.prompt}]
    kwargs: dict[str, Any] = {k: req.settings[k] for k in ("temperature", "top_p", "seed")
                              if req.settings.get(k) is not None}
    if req.settings.get("max_tokens") is not None:
        # OpenAI's own API wants the newer name (reasoning models reject max_tokens); compatible
        # servers such as Ollama only know the older one.
        kwargs["max_tokens" if req.base_url else "max_completion_tokens"] = req.settings["max_tokens"]
    if req.tools:
        kwargs["tools"] = req.tools
    resp = client.chat.completions.create(model=req.model, messages=messages, **kwargs)
    if not resp.choices:
        return Answer("", None, resp.model)
    choice = resp.choices[0]
    text = choice.message.content or ""
    if choice.message.tool_calls:
        calls = [{"name": c.function.name, "arguments": c.function.arguments} for c in choice.message.tool_calls]
        text += json.dumps(calls)
    usage = resp.usage
    return Answer(text, choice.finish_reason, resp.model, getattr(usage, "prompt_tokens", None),
                  getattr(usage, "completion_tokens", None))


def _anthropic(module, req: Request, route: Route, key: str) -> Answer:
    client = module.Anthropic(api_key=key, base_url=req.base_url, max_retries=route.max_retries,
                              timeout=route.timeout, http_client=_http_client(module, route))
    # Sent as body fields: anthropic 2.x dropped the keyword arguments for sampling settings; the API takes them.
    sampling = {k: req.settings[k] for k in ("temperature", "top_p") if req.settings.get(k) is not None}
    kwargs: dict[str, Any] = {"extra_body": sampling} if sampling else {}
    if req.system:
        kwargs["system"] = req.system
    if req.tools:
        kwargs["tools"] = req.tools
    resp = client.messages.create(model=req.model, messages=[{"role": "user", "content": req.prompt}],
                                  max_tokens=req.settings.get("max_tokens") or ANTHROPIC_DEFAULT_MAX_TOKENS, **kwargs)
    text = "".join(block.text for block in resp.content if getattr(block, "type", None) == "text")
    usage = resp.usage
    return Answer(text, _FINISH.get(resp.stop_reason, resp.stop_reason), resp.model,
                  getattr(usage, "input_tokens", None), getattr(usage, "output_tokens", None))


def _gemini(req: Request, route: Route, key: str) -> Answer:
    import httpx2 as httpx

    generation = {}
    for ours, theirs in (("temperature", "temperature"), ("top_p", "topP"), ("max_tokens", "maxOutputTokens"),
                         ("seed", "seed")):
        if req.settings.get(ours) is not None:
            generation[theirs] = req.settings[ours]
    body: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": req.prompt}]}]}
    if req.system:
        body["systemInstruction"] = {"parts": [{"text": req.system}]}
    if generation:
        body["generationConfig"] = generation
    if req.tools:
        body["tools"] = req.tools
    base = (req.base_url or GEMINI_DEFAULT).rstrip("/")
    url = f"{base}/v1beta/models/{req.model}:generateContent"
    verify: Any = ssl.create_default_context(cafile=str(route.ca_bundle)) if route.ca_bundle else True
    try:
        with httpx.Client(proxy=route.proxy_url, verify=verify, trust_env=route.proxy_url is None,
                          timeout=route.timeout) as client:
            r = client.post(url, json=body, headers={"x-goog-api-key": key})
    except httpx.HTTPError as e:
        raise SendError(f"could not reach {req.base_url or 'gemini'}: {_one_line(e)}") from None
    if r.status_code >= 400:
        raise SendError(f"{req.base_url or 'gemini'} answered HTTP {r.status_code}: {_one_line(r.text)}")
    try:
        data = r.json()
    except ValueError:
        raise SendError(f"{req.base_url or 'gemini'} answered with something that is not JSON") from None
    candidate = (data.get("candidates") or [{}])[0]
    text = "".join(part.get("text", "") for part in (candidate.get("content") or {}).get("parts", []))
    usage = data.get("usageMetadata") or {}
    return Answer(text, _FINISH.get(candidate.get("finishReason"), candidate.get("finishReason")),
                  data.get("modelVersion"), usage.get("promptTokenCount"), usage.get("candidatesTokenCount"))


def _one_line(text: Any, limit: int = 240) -> str:
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
