"""Another model or other settings for a recorded request, written the way its provider spells them."""

from __future__ import annotations

import re
from typing import Any

# Our names for sampling settings -> Gemini's generationConfig names.
GEMINI_SETTINGS = {"temperature": "temperature", "top_p": "topP", "top_k": "topK", "max_tokens": "maxOutputTokens",
                   "seed": "seed"}
GEMINI_MODEL = re.compile(r"(/models/)([^/:]+)(:)")


def apply_overrides(body: Any, family: str, path: str, model: str | None, settings: dict[str, Any]) -> tuple[Any, str]:
    """(body, path) with the model and settings replaced, in the provider's own spelling."""
    if model:
        if family == "gemini" and GEMINI_MODEL.search(path):
            path = GEMINI_MODEL.sub(lambda m: m.group(1) + model + m.group(3), path, count=1)
        elif isinstance(body, dict):
            body["model"] = model
    if settings and isinstance(body, dict):
        if family == "gemini":
            config = body.setdefault("generationConfig", {})
            for k, v in settings.items():
                config[GEMINI_SETTINGS.get(k, k)] = v
        else:
            for k, v in settings.items():
                if family == "openai" and k == "max_tokens" and "max_completion_tokens" in body:
                    k = "max_completion_tokens"
                body[k] = v
    return body, path
