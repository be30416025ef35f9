"""Stable SHA-256 digests of texts and JSON values."""

from __future__ import annotations

import hashlib
import json
from typing import Any

try:
    import orjson as _orjson
except ImportError:  # a declared dependency, but the digest must not depend on it
    _orjson = None


def sha256_text(text: str | bytes | None) -> str | None:
    if text is None:
        return None
    if isinstance(text, str):
        text = text.encode("utf-8", "surrogatepass")
    return hashlib.sha256(text).hexdigest()


def canonical_json(value: Any) -> str:
    """Key order and whitespace do not change the digest; the values do.

    The text is json.dumps(sort_keys, compact, ensure_ascii=False), byte for byte: digests
    are compared across runs and agentprobe versions. orjson writes the same text ten times
    faster (the writer dumps a 100 KB prompt several times per call) for every value but a
    few: floats it writes in other exponent forms, NaN, non-string keys, ints past 64 bits
    and lone surrogates. Those take the standard library, as does anything unforeseen.
    """
    try:
        if _orjson is not None and _orjson_writes_it_alike(value):
            return _orjson.dumps(value, option=_orjson.OPT_SORT_KEYS).decode()
    except (TypeError, RecursionError):  # ints past 64 bits, lone surrogates, deep nesting
        pass
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _orjson_writes_it_alike(value: Any) -> bool:
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return True
    if kind is float:
        # Python and orjson agree on the shortest digits; between these bounds, on the notation too.
        return value == 0 or 1e-4 <= abs(value) < 1e16
    if kind is list:
        return all(_orjson_writes_it_alike(v) for v in value)
    if kind is dict:
        return all(type(k) is str and _orjson_writes_it_alike(v) for k, v in value.items())
    return False


def sha256_json(value: Any) -> str | None:
    if value is None:
        return None
    return sha256_text(canonical_json(value))
