"""`trace --config --prompt`: the request an agent config describes, for one prompt.

The call itself goes out through `send.send`, through the proxy, so what is recorded is
exactly what the agent would send. Repeating it (`--times`) is the quickest way to see whether
a step is deterministic at its configured settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from .credentials import BASE_URL_VARIABLES, api_key
from .send import Request


class OneShotError(Exception):
    """Bad input for a one-shot trace: a missing key, an unknown environment."""


def provider_of(config: dict) -> str:
    if config.get("provider"):
        return config["provider"]
    model = config["model"].lower()
    if model.startswith("claude"):
        return "anthropic"
    if model.startswith("gemini"):
        return "gemini"
    return "openai"


def environment(config: dict, env: str | None) -> str | None:
    """The environment whose settings apply: the one asked for, else dev, else the first."""
    envs = config.get("environments") or {}
    if env is None and envs:
        env = "dev" if "dev" in envs else next(iter(envs))
    if env is not None and env not in envs:
        known = ", ".join(envs) or "none"
        raise OneShotError(f"environment {env!r} is not in the config (it defines: {known})")
    return env


def plan(config: dict, env: str | None, prompt: str, base_url: str | None = None,
         environ: Mapping[str, str] | None = None) -> tuple[Request, str | None]:
    """(the request, the environment it used); raises OneShotError before anything is sent."""
    from .credentials import MissingKey

    environ = os.environ if environ is None else environ
    env = environment(config, env)
    provider = provider_of(config)
    base_url = base_url or environ.get(BASE_URL_VARIABLES[provider])
    try:
        api_key(provider, base_url, environ)  # fail before the proxy starts, not after
    except MissingKey as e:
        raise OneShotError(str(e)) from None
    settings = dict(((config.get("environments") or {}).get(env) or {}))
    return Request(provider=provider, model=config["model"], prompt=prompt, system=config.get("_system_prompt_text"),
                   tools=config.get("tools") or None, settings=settings, base_url=base_url), env


def load_cases(path) -> list[dict]:
    """A benchmark suite: one JSON object a line, {"id": "...", "prompt": "..."}; OneShotError names the line."""
    import json
    from pathlib import Path

    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise OneShotError(f"cases file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise OneShotError(f"cannot read cases file {path}: {e}") from None
    cases, seen = [], set()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            case = json.loads(line)
        except ValueError as e:
            raise OneShotError(f"{path}:{number}: not JSON ({e.msg}); each line holds one"
                               ' {"id": "...", "prompt": "..."}') from None
        if not isinstance(case, dict):
            raise OneShotError(f"{path}:{number}: expected a JSON object with id and prompt")
        for key in ("id", "prompt"):
            if not isinstance(case.get(key), str) or not case[key].strip():
                raise OneShotError(f"{path}:{number}: {key!r} must be a non-empty string")
        if case["id"] in seen:
            raise OneShotError(f"{path}:{number}: id {case['id']!r} appears twice")
        seen.add(case["id"])
        cases.append(case)
    if not cases:
        raise OneShotError(f"cases file {path} holds no cases")
    return cases
