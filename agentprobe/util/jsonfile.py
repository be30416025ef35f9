"""Read a JSON file a user named on the command line, failing in one line that names it.

The file must be a regular file under its size cap (util/userfile.py), and its nesting is
limited: Python's json module recurses once per level, so `[[[[...` 100,000 deep raised a
RecursionError traceback. The depth is measured before parsing, without recursion.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from .userfile import TEXT_LIMIT, read_user_text

# Configs nest a few levels (tools' JSON schemas a few more); trace and HAR files fewer.
MAX_JSON_DEPTH = 64

_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_ONE_KIND = bytes.maketrans(b"{}", b"[]")  # depth only counts openers and closers
_STEP = {ord("["): 1, ord("]"): -1}


def _structure(data: bytes) -> bytes:
    """The brackets of JSON text outside its strings, in order, braces turned into brackets."""
    # Escapes are a backslash and one character: drop escaped backslashes first, then escaped
    # quotes; every quote left opens or closes a string, so the even pieces are outside strings.
    outside = b"".join(data.replace(b"\\\\", b"").replace(b'\\"', b"").split(b'"')[::2])
    return outside.translate(_ONE_KIND, _NOT_BRACKETS)


def nesting_depth(text: str | bytes, limit: int = MAX_JSON_DEPTH) -> int:
    """How deeply arrays and objects nest in JSON text (strings skipped), exact up to `limit`
    and beyond it whenever the text is too deep; no recursion, and close to C speed."""
    brackets = _structure(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
    # Each round removes the innermost pairs, one level: balanced text of depth <= limit is gone
    # after `limit` rounds.
    rest = brackets
    for depth in range(limit + 1):
        if not rest:
            return depth
        shorter = rest.replace(b"[]", b"")
        if shorter == rest:
            break  # unbalanced: count it the slow way
        rest = shorter
    return max(itertools.accumulate(map(_STEP.__getitem__, brackets)), default=0)


def value_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """The nesting depth of a parsed value, without recursion; stops counting past `limit`."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict):
            children = v.values()
        elif isinstance(v, list):
            children = v
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return deepest


def parse_json_text(text: str, where: str, error: type[Exception], *, invalid_hint: str = "",
                    max_depth: int = MAX_JSON_DEPTH) -> Any:
    depth = nesting_depth(text)
    if depth > max_depth:
        raise error(f"{where} nests arrays and objects {depth:,} levels deep; agentprobe reads at most {max_depth}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{where} is not valid JSON{invalid_hint}: {e.msg} at line {e.lineno} column {e.colno}") \
            from None
    except ValueError as e:
        if "digits" in str(e):  # Python converts integers of at most 4,300 digits
            raise error(f"{where} holds an integer of more than 4,300 digits; no field agentprobe reads is"
                        " that long") from None
        raise error(f"{where} is not JSON agentprobe can read: {e}") from None


def read_json_file(path: Path, what: str, error: type[Exception], *, invalid_hint: str = "",
                   limit: int = TEXT_LIMIT) -> Any:
    text = read_user_text(path, what, error, limit=limit)
    return parse_json_text(text, str(path), error, invalid_hint=invalid_hint)
