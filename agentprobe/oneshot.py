"""`trace --config --prompt`: send one prompt the way an agent config describes, through the proxy.

The call goes out through the provider's real SDK (openai, anthropic) or, for
Gemini, its plain REST API, with the key from the environment, so what is
recorded is exactly what the agent would send. Repeating it (`--times`) is the
quickest way to see whether a step is deterministic at its configured settings.
"""

from __future__ import annotations

import json
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from .credentials import KEY_VARIABLES

BASE_URL_VARIABLES = {"openai": "OPENAI_BASE_URL", "openai_compatible": "OPENAI_BASE_URL",
                      "anthropic": "ANTHROPIC_BASE_URL", "gemini": "GEMINI_BASE_URL"}
GEMINI_DEFAULT = "https://generativelanguage.googleapis.com"
ANTHROPIC_DEFAULT_MAX_TOKENS = 1024  # the Messages API requires one; used only when the config pins none


class OneShotError(Exception):
    """Bad input for a one-shot trace: a missing key, an unknown environment."""


@dataclass
class Answer:
    text: str | None = None
    finish_reason: str | None = None
    error: str | None = None


@dataclass
class Plan:
    provider: str
    model: str
    env: str | None
    settings: dict = field(default_factory=dict)
    system: str | None = None
    tools: list | None = None
    base_url: str | None = None
    key: str = ""


def provider_of(config: dict) -> str:
    if config.get("provider"):
        return config["provider"]
    model = config["model"].lower()
    if model.startswith("claude"):
        return "anthropic"
    if model.startswith("gemini"):
        return "gemini"
    return "openai"


def plan(config: dict, env: str | None, base_url: str | None = None, environ: dict | None = None) -> Plan:
    environ = os.environ if environ is None else environ
    envs = config.get("environments") or {}
    if env is None and envs:
        env = "dev" if "dev" in envs else next(iter(envs))
    if env is not None and env not in envs:
        known = ", ".join(envs) or "none"
        raise OneShotError(f"environment {env!r} is not in the config (it defines: {known})")
    provider = provider_of(config)
    variable = KEY_VARIABLES[provider]
    key = environ.get(variable)
    if not key:
        raise OneShotError(f"set {variable} to send the prompt to {provider}")
    return Plan(provider=provider, model=config["model"], env=env, settings=dict(envs.get(env) or {}),
                system=config.get("_system_prompt_text"), tools=config.get("tools") or None,
                base_url=base_url or environ.get(BASE_URL_VARIABLES[provider]), key=key)


def _verify(bundle: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(bundle))


def send(p: Plan, prompt: str, proxy_url: str, bundle: Path) -> Answer:
    """One request through the proxy; a provider error becomes the answer's error, not an exception."""
    try:
        if p.provider == "anthropic":
            return _anthropic(p, prompt, proxy_url, bundle)
        if p.provider == "gemini":
            return _gemini(p, prompt, proxy_url, bundle)
        return _openai(p, prompt, proxy_url, bundle)
    except Exception as e:  # noqa: BLE001 - SDK errors are what the user came to see
        status = getattr(e, "status_code", None)
        return Answer(error=f"{status} {type(e).__name__}: {e}" if status else f"{type(e).__name__}: {e}")


def _openai(p: Plan, prompt: str, proxy_url: str, bundle: Path) -> Answer:
    import openai

    client = openai.OpenAI(api_key=p.key, base_url=p.base_url, max_retries=0,
                           http_client=openai.DefaultHttpxClient(proxy=proxy_url, verify=_verify(bundle),
                                                                 trust_env=False))
    messages = ([{"role": "system", "content": p.system}] if p.system else []) + [{"role": "user", "content": prompt}]
    kwargs = {k: p.settings[k] for k in ("temperature", "top_p", "max_tokens", "seed") if k in p.settings}
    if p.tools:
        kwargs["tools"] = p.tools
    reply = client.chat.completions.create(model=p.model, messages=messages, **kwargs)
    choice = reply.choices[0]
    text = choice.message.content
    if choice.message.tool_calls:
        calls = [{"name": c.function.name, "arguments": c.function.arguments} for c in choice.message.tool_calls]
        text = (text or "") + json.dumps(calls)
    return Answer(text=text, finish_reason=choice.finish_reason)


def _anthropic(p: Plan, prompt: str, proxy_url: str, bundle: Path) -> Answer:
    import anthropic

    client = anthropic.Anthropic(api_key=p.key, base_url=p.base_url, max_retries=0,
                                 http_client=anthropic.DefaultHttpxClient(proxy=proxy_url, verify=_verify(bundle),
                                                                          trust_env=False))
    # Sent as body fields: recent SDKs dropped the keyword arguments for sampling settings.
    sampling = {k: p.settings[k] for k in ("temperature", "top_p") if k in p.settings}
    kwargs: dict = {"extra_body": sampling} if sampling else {}
    if p.system:
        kwargs["system"] = p.system
    if p.tools:
        kwargs["tools"] = p.tools
    reply = client.messages.create(model=p.model, max_tokens=p.settings.get("max_tokens", ANTHROPIC_DEFAULT_MAX_TOKENS),
                                   messages=[{"role": "user", "content": prompt}], **kwargs)
    text = "".join(getattr(block, "text", "") for block in reply.content)
    return Answer(text=text, finish_reason=reply.stop_reason)


def _gemini(p: Plan, prompt: str, proxy_url: str, bundle: Path) -> Answer:
    import httpx2 as httpx

    generation = {}
    for ours, theirs in (("temperature", "temperature"), ("top_p", "topP"), ("max_tokens", "maxOutputTokens"),
                         ("seed", "seed")):
        if ours in p.settings:
            generation[theirs] = p.settings[ours]
    body: dict = {"contents": [{"role": "user", "parts": [{"text": prompt}]}]}
    if p.system:
        body["systemInstruction"] = {"parts": [{"text": p.system}]}
    if generation:
        body["generationConfig"] = generation
    url = f"{(p.base_url or GEMINI_DEFAULT).rstrip('/')}/v1beta/models/{p.model}:generateContent"
    with httpx.Client(proxy=proxy_url, verify=_verify(bundle), trust_env=False, timeout=120) as client:
        r = client.post(url, json=body, headers={"x-goog-api-key": p.key})
    if r.status_code >= 400:
        return Answer(error=f"{r.status_code} {r.text[:300]}")
    candidate = (r.json().get("candidates") or [{}])[0]
    text = "".join(part.get("text", "") for part in (candidate.get("content") or {}).get("parts", []))
    return Answer(text=text, finish_reason=candidate.get("finishReason"))
