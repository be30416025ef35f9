"""Deterministic embedding vectors, the way the fake provider answers embedding requests.

The same model and input always give the same unit vector, so a test can compare what
the SDK decoded with what it expects. A shorter `dimensions` gives the longer vector's
first values renormalised, as OpenAI's text-embedding-3 models do.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
from typing import Any

DEFAULT_DIMENSIONS = 8  # small: tests read vectors, and a batch of them stays a few KB
MAX_DIMENSIONS = 4096


def vector(model: str, content: Any, dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    """A unit vector of float32 values (as providers compute them) for `content` under `model`."""
    key = json.dumps([model, content], ensure_ascii=False, separators=(",", ":")).encode()
    # SHAKE's output for n values starts with its output for fewer: truncation comes for free.
    raw = struct.unpack(f"<{dimensions}I", hashlib.shake_256(key).digest(4 * dimensions))
    values = [word / 2**31 - 1.0 for word in raw]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    packed = struct.pack(f"<{dimensions}f", *(v / norm for v in values))
    return list(struct.unpack(f"<{dimensions}f", packed))


def as_base64(values: list[float]) -> str:
    """OpenAI's `encoding_format: base64`: the float32 values, little-endian, base64-encoded."""
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode("ascii")


def from_base64(text: str) -> list[float]:
    data = base64.b64decode(text)
    return list(struct.unpack(f"<{len(data) // 4}f", data))


def tokens_of(content: str | list[int]) -> int:
    """What the fake reports as an input's tokens: a token array's length, else ~4 characters a token."""
    if isinstance(content, list):
        return len(content)
    return (len(content) + 3) // 4


def dimensions_of(value: Any, default: int = DEFAULT_DIMENSIONS) -> int:
    """A requested vector size, checked as the providers check it (a bad one is the client's error)."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DIMENSIONS:
        raise ValueError(f"dimensions must be an integer from 1 to {MAX_DIMENSIONS}, not {value!r}")
    return value
