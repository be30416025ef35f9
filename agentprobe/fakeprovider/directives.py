"""Scripting the fake provider: `x-fake` header and `[fake ...]` prompt directives.

Both forms exist because an SDK can add a header while a bare agent can only
change its prompt. Unknown keys and bad values are rejected (the server answers
400) so that a typo in a test never silently turns into a normal reply.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, fields

HEADER = "x-fake"
# At least one key=value, so prose like "[fake news]" stays prose.
_IN_TEXT = re.compile(r"\[fake((?:[\s;]+[\w-]+=[^\s;\]]+)+)[\s;]*\]", re.IGNORECASE)
_SEPARATORS = re.compile(r"[;\s]+")
ENCODINGS = ("gzip", "br", "deflate", "zstd", "identity")


class DirectiveError(ValueError):
    pass


@dataclass
class Directives:
    status: int | None = None
    retry_after: float | None = None
    fail_times: int | None = None
    delay: float = 0.0
    chunk_delay: float = 0.0
    # Seconds between a stream's last event and the end of its body (the encoder's final bytes and
    # the terminating chunk), as gateways that flush late do: a client that stops at the final
    # event hangs up in between.
    end_delay: float = 0.0
    cut_after: int | None = None
    encoding: str | None = None
    words: int | None = None
    reply: str | None = None
    # The same, base64url-encoded: the only way to script a reply holding spaces, ';', ']' or
    # underscores (an XML answer, say), since `reply` turns "_" into spaces.
    reply_b64: str | None = None
    # Stream the reply's text in pieces of this many characters instead of a word a piece, the way
    # providers cut tokens: a word (a key the model repeats, say) then spans several events.
    delta_chars: int | None = None
    tool_calls: int = 0
    # Which offered tools the calls ask for, in order (cycling when there are more calls than names);
    # tool_calls defaults to their number. Each must be one of the request's tools.
    tool_names: list[str] | None = None
    # The calls' arguments, base64url JSON: one object for every call, or a list with one per call.
    # Without it call k gets {"i": k}.
    tool_args_b64: list[dict] | dict | None = None
    # The message of the error that `status` or `error_in_200` answers with, base64url-encoded.
    message_b64: str | None = None
    no_usage: bool = False
    error_in_200: bool = False
    code: str | None = None
    body_kb: float | None = None

    def __post_init__(self):
        if self.reply_b64 is not None:
            self.reply = self.reply_b64
        if self.tool_names and not self.tool_calls:
            self.tool_calls = len(self.tool_names)

    def tool_args(self, index: int) -> dict | None:
        """The scripted arguments of call `index` (1-based), or None for the default."""
        given = self.tool_args_b64
        if given is None:
            return None
        if isinstance(given, dict):
            return given
        return given[(index - 1) % len(given)]

    @property
    def faulty(self) -> bool:
        """Whether any directive that `fail_times` limits is present."""
        return self.status is not None or self.error_in_200 or self.cut_after is not None


def _flag(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


def _non_negative(kind):
    def convert(value: str):
        number = kind(value)
        if number < 0:
            raise ValueError(value)
        return number

    return convert


def _status(value: str) -> int:
    number = int(value)
    if not 400 <= number <= 599:
        raise ValueError(value)
    return number


def _b64(value: str) -> str:
    try:
        # validate=True: a typo must fail loudly, not decode to a shorter reply.
        return base64.b64decode(value + "=" * (-len(value) % 4), altchars=b"-_", validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError(value) from None


def _names(value: str) -> list[str]:
    names = [name for name in value.split(",") if name]
    if not names:
        raise ValueError(value)
    return names


def _json_args(value: str) -> list[dict] | dict:
    try:
        parsed = json.loads(_b64(value))
    except json.JSONDecodeError:
        raise ValueError(value) from None
    if isinstance(parsed, dict):
        return parsed
    if isinstance(parsed, list) and parsed and all(isinstance(item, dict) for item in parsed):
        return parsed
    raise ValueError(value)


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


def _encoding(value: str) -> str:
    if value.lower() not in ENCODINGS:
        raise ValueError(value)
    return value.lower()


_CONVERTERS = {
    "status": _status,
    "retry_after": _non_negative(float),
    "fail_times": _non_negative(int),
    "delay": _non_negative(float),
    "chunk_delay": _non_negative(float),
    "end_delay": _non_negative(float),
    "cut_after": _non_negative(int),
    "encoding": _encoding,
    "words": _non_negative(int),
    "reply": lambda value: value.replace("_", " "),
    "reply_b64": _b64,
    "delta_chars": _positive,
    "tool_calls": _non_negative(int),
    "tool_names": _names,
    "tool_args_b64": _json_args,
    "message_b64": _b64,
    "no_usage": _flag,
    "error_in_200": _flag,
    "code": str,
    "body_kb": _non_negative(float),
}
assert set(_CONVERTERS) == {f.name for f in fields(Directives)}


def _pairs(spec: str) -> dict[str, str]:
    pairs = {}
    for item in _SEPARATORS.split(spec.strip()):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not value:
            raise DirectiveError(f"fake directive {item!r} is not key=value")
        pairs[key.strip().lower().replace("-", "_")] = value.strip()
    return pairs


def strip(text: str) -> str:
    """The prompt as the "model" should read it: without `[fake ...]` blocks."""
    return _IN_TEXT.sub(" ", text)


def parse(header: str | None, prompt: str) -> Directives:
    """Directives from the last user text and the header; the header wins."""
    pairs: dict[str, str] = {}
    for match in _IN_TEXT.finditer(prompt or ""):
        pairs.update(_pairs(match.group(1)))
    if header:
        pairs.update(_pairs(header))
    values = {}
    for key, raw in pairs.items():
        convert = _CONVERTERS.get(key)
        if convert is None:
            raise DirectiveError(f"unknown fake directive {key!r}; known: {', '.join(_CONVERTERS)}")
        try:
            values[key] = convert(raw)
        except ValueError:
            raise DirectiveError(f"bad value for fake directive {key}={raw!r}") from None
    return Directives(**values)
