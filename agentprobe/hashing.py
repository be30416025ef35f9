"""Stable SHA-256 digests of texts and JSON values."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def sha256_text(text: str | bytes | None) -> str | None:
    if text is None:
        return None
    if isinstance(text, str):
        text = text.encode("utf-8", "surrogatepass")
    return hashlib.sha256(text).hexdigest()


def canonical_json(value: Any) -> str:
    """Key order and whitespace do not change the digest; the values do."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_json(value: Any) -> str | None:
    if value is None:
        return None
    return sha256_text(canonical_json(value))
