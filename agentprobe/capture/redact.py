"""Keep credentials out of everything agentprobe writes.

What is scrubbed (rows.py applies it to each call; session.py to the run's command line):
- headers: kept by allow-list, never by deny-list, so a new auth header some gateway invents is
  dropped by default; and a kept header keeps its value only if the value has the form that
  header's values take (a number, a version, a media type ...): anything else reads [REDACTED].
- the URL: query values under a name that says they hold a credential, key-shaped query values,
  key-shaped path segments.
- JSON: the values of fields whose name says they hold a credential (`api_key`, `password`,
  `aws_secret_access_key`, `github_token`, a whole `secret: {...}` object ...), in the body, in
  JSON held in a string (tool-call arguments), and in text that is not valid JSON at all.
- any text: the credential values this request carried (auth headers, key query values, the
  secret fields of its body) and strings shaped like a known kind of key (SHAPES, below).
- streams: a secret the model spells out over several events (a key echoed in 4-character
  deltas) is removed from the events that carry its pieces: `scrub_stream`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import orjson

REDACTED = "[REDACTED]"


# -- key shapes ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Shape:
    name: str
    regex: str
    example: str
    # Literals, one of which every match contains: the pre-filter looks for these before the regex.
    needles: tuple[str, ...]


SHAPES: tuple[Shape, ...] = (
    Shape("anthropic", r"sk-ant-[A-Za-z0-9_\-]{16,}",
          "sk-ant-api03-EXAMPLEexample0123456789EXAMPLE", ("sk-",)),
    Shape("openai_project", r"sk-proj-[A-Za-z0-9_\-]{16,}",
          "sk-proj-EXAMPLEexample0123456789EXAMPLE", ("sk-",)),
    # Also sk-svcacct-, sk-admin- and the sk- keys of DeepSeek, Moonshot, OpenRouter (sk-or-) ...
    Shape("openai", r"sk-[A-Za-z0-9_\-]{16,}", "sk-EXAMPLEexample0123456789EXAMPLE", ("sk-",)),
    Shape("google", r"AIza[0-9A-Za-z_\-]{30,}", "AIzaSyEXAMPLEexample0123456789EXAMPLE", ("AIza",)),
    Shape("github", r"gh[pousr]_[A-Za-z0-9]{30,}", "ghp_EXAMPLEexample0123456789EXAMPLEexa",
          ("ghp_", "gho_", "ghu_", "ghs_", "ghr_")),
    Shape("github_fine_grained", r"github_pat_[A-Za-z0-9_]{30,}",
          "github_pat_11EXAMPLE0123456789_EXAMPLEexample0123456789", ("github_pat_",)),
    Shape("groq", r"gsk_[A-Za-z0-9]{30,}", "gsk_EXAMPLEexample0123456789EXAMPLEexample01", ("gsk_",)),
    Shape("huggingface", r"hf_[A-Za-z0-9]{30,}", "hf_EXAMPLEexample0123456789EXAMPLE", ("hf_",)),
    # Exactly 20 characters, upper case: an AWS access key id (AKIA) or a temporary one (ASIA).
    Shape("aws_access_key_id", r"(?<![A-Z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![0-9A-Za-z])",
          "AKIAIOSFODNN7EXAMPLE", ("AKIA", "ASIA")),
    Shape("slack", r"xox[abeprs]-[A-Za-z0-9\-]{10,}", "xoxb-000000000000-0000000000000-EXAMPLEexample",
          ("xoxa-", "xoxb-", "xoxe-", "xoxp-", "xoxr-", "xoxs-")),
    # Three base64url parts; the first is a JSON object, so it starts with eyJ ('{"').
    Shape("jwt", r"eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{2,}\.[A-Za-z0-9_\-]*",
          "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJleGFtcGxlIn0.EXAMPLEexample0123456789", ("eyJ",)),
    # The whole block: base64 lines, PEM headers (Proc-Type, DEK-Info), real newlines or escaped ones
    # (\n in JSON, \\n in JSON held in a JSON string, such as tool-call arguments). A block cut before
    # its END line is taken to the last character a PEM body can hold.
    Shape("pem_private_key",
          r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----(?:[A-Za-z0-9+/=\s:,.\-]|\\+[nrt/])*?"
          r"(?:-----END[A-Z0-9 ]*PRIVATE KEY-----|(?!(?:[A-Za-z0-9+/=\s:,.\-]|\\+[nrt/])))",
          "-----BEGIN PRIVATE KEY-----\nMIIEvEXAMPLEexample0123456789+/EXAMPLE==\n-----END PRIVATE KEY-----",
          ("-----BEGIN",)),
    Shape("bearer", r"(?:[Bb]earer|BEARER)\s+[A-Za-z0-9._~+/\-]{16,}=*", "Bearer EXAMPLEexample0123456789",
          ("Bearer", "bearer", "BEARER")),
)

_SHAPES_RE = re.compile("|".join(f"(?:{s.regex})" for s in SHAPES))

# The pre-filter. The regex costs ~10 ns a character, so text that holds none of the needles must
# not reach it; but a substring search per needle costs ~1 ns a character each. So each needle is
# looked for from its rarest character (its "gate"): `gate in text` is a memchr, 50 times faster,
# and only a gate that is there costs one regex scan, starting with that literal character, that
# first checks the two characters before it (or the rest after it) against the needles' letters
# there, so that the many places a common gate ('-', '_') stands cost a class check each.
_RARE_FIRST = "JA_-Bb"


def _gates(needles: Iterable[str]) -> tuple[tuple[str, Any], ...]:
    groups: dict[str, list[tuple[str, int]]] = {}
    for needle in dict.fromkeys(needles):
        at = min(range(len(needle)), key=lambda i: _RARE_FIRST.find(needle[i]) % 100)
        groups.setdefault(needle[at], []).append((needle, at))
    out = []
    for gate, group in groups.items():
        g = re.escape(gate)
        behind = [(n, k) for n, k in group if k > 0]
        ahead = [n for n, k in group if k == 0]
        heads = []
        if behind:
            width = min(2, min(k for _n, k in behind))
            classes = ("".join(sorted({n[k - width + i] for n, k in behind})) for i in range(width))
            heads.append("(?<=" + "".join(f"[{re.escape(c)}]" for c in classes) + g + ")")
        if ahead:
            heads.append("(?=" + "|".join(re.escape(n[1:]) for n in ahead) + ")")
        alts = "|".join(f"(?<={re.escape(n[:k + 1])}){re.escape(n[k + 1:])}" for n, k in group)
        out.append((gate, re.compile(f"{g}(?:{'|'.join(heads)})(?:{alts})").search))
    return tuple(out)


_SHAPE_GATES = _gates(n for s in SHAPES for n in s.needles)


def could_hold_shape(text: str) -> bool:
    """False only when no shape can match anywhere in `text` (a superset test of _SHAPES_RE)."""
    for gate, search in _SHAPE_GATES:
        at = text.find(gate)
        if at >= 0 and search(text, at):
            return True
    return False


# -- names that say a value is a credential --------------------------------------------------

_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_SECRET_WORDS = frozenset({
    "password", "passwords", "passwd", "passphrase", "pwd", "secret", "secrets", "token", "credential",
    "credentials", "authorization", "auth", "bearer", "cookie", "apikey", "apikeys",
})
# What comes before "key" in the name of a field that holds one: api_key, secret_key,
# aws_secret_access_key, private_key. Not cache_key, idempotency_key, sort_key.
_KEY_KINDS = frozenset({
    "api", "secret", "private", "access", "signing", "encryption", "master", "session", "client", "auth",
    "account", "service", "subscription", "admin", "license", "app", "consumer", "shared", "x",
})
# A tokenizer's special tokens (bos_token, eos_token ...) are not credentials.
_TOKENIZER_TOKENS = frozenset({"bos", "eos", "pad", "unk", "sep", "cls", "mask", "stop", "start", "end"})


@functools.lru_cache(maxsize=8192)
def secret_name(name: str) -> bool:
    """Whether a field, query parameter or option called `name` holds a credential.

    `api_key`, `apiKey`, `x-api-key`, `OPENAI_API_KEY`, `aws_secret_access_key`, `github_token`,
    `client_secret`, `password`, `key`, `authorization` do; `max_tokens`, `prompt_cache_key`,
    `eos_token`, `token_count` do not.
    """
    words = [w.lower() for w in _WORDS.findall(name)]
    if not words:
        return False
    last, before = words[-1], words[-2] if len(words) > 1 else None
    if last == "key":
        return before is None or before in _KEY_KINDS
    if last == "keys":
        return before == "api"
    if last == "id":  # aws_access_key_id, a service account's private_key_id
        return len(words) >= 3 and before == "key" and words[-3] in ("access", "private")
    if last == "token":
        return before not in _TOKENIZER_TOKENS
    return last in _SECRET_WORDS


# -- values in text --------------------------------------------------------------------------

Span = tuple[int, int, str]  # start, end, replacement


def _literal_spans(text: str, secrets: Iterable[str], out: list[Span]) -> None:
    for secret in secrets:
        at = text.find(secret)
        while at >= 0:
            out.append((at, at + len(secret), REDACTED))
            at = text.find(secret, at + len(secret))


# JSON strings and numbers, at level 0 (JSON text) and level 1 (JSON text held in a JSON string,
# where every quote is \" and every backslash \\): tool-call arguments inside a body, say.
_STRING = (
    re.compile(r'((?:[^"\\]|\\.)*)"', re.S),
    re.compile(r'((?:[^"\\]|\\[^"\\]|\\\\(?:\\\\|\\"|[^"\\]))*)\\"', re.S),
)
_NUMBER = re.compile(r"-?\d[\d.eE+\-]*")
_TOKEN = (
    re.compile(r'"((?:[^"\\]|\\.)*)"(\s*:)?|(-?\d[\d.eE+\-]*)|([\[{])|([\]}])', re.S),
    re.compile(r'\\"((?:[^"\\]|\\[^"\\]|\\\\(?:\\\\|\\"|[^"\\]))*)\\"(\s*:)?|(-?\d[\d.eE+\-]*)|([\[{])|([\]}])|(")',
               re.S),
)
_QUOTE = ('"', '\\"')
_KEY_END = re.compile(r'"\s*:\s*')
_FIELD_NAME = re.compile(r"[A-Za-z0-9_\-.$@ ]{1,64}")


def _field_spans(text: str, out: list[Span], found: list[str] | None) -> None:
    """Values of secret-named fields in JSON-looking text, valid JSON or not."""
    for m in _KEY_END.finditer(text):
        end = m.start()
        slashes = 0
        while end - slashes > 0 and text[end - slashes - 1] == "\\":
            slashes += 1
        if slashes > 1:
            continue
        level, q = slashes, _QUOTE[slashes]
        name_end = end - slashes
        start = text.rfind(q, max(0, name_end - 70), name_end)
        if start < 0 or (level == 0 and start > 0 and text[start - 1] == "\\"):
            continue
        name = text[start + len(q):name_end]
        if not _FIELD_NAME.fullmatch(name) or not secret_name(name):
            continue
        _value_spans(text, m.end(), level, out, found)


def _value_spans(text: str, pos: int, level: int, out: list[Span], found: list[str] | None) -> None:
    q = _QUOTE[level]
    if text.startswith(q, pos):
        m = _STRING[level].match(text, pos + len(q))
        if m and m.end(1) > m.start(1):
            out.append((m.start(1), m.end(1), REDACTED))
            if found is not None:
                found.append(m.group(1))
        return
    m = _NUMBER.match(text, pos)
    if m:
        out.append((m.start(), m.end(), q + REDACTED + q))
        return
    if text[pos:pos + 1] not in ("{", "["):
        return
    depth = 0  # a whole object or list under a secret name: every value in it goes
    for t in _TOKEN[level].finditer(text, pos):
        if t.group(4):
            depth += 1
        elif t.group(5):
            depth -= 1
            if depth <= 0:
                return
        elif level == 1 and t.group(6):
            return  # the string holding this JSON ended
        elif t.group(3):
            out.append((t.start(3), t.end(3), q + REDACTED + q))
        elif t.group(2) is None and t.end(1) > t.start(1):
            out.append((t.start(1), t.end(1), REDACTED))
            if found is not None:
                found.append(t.group(1))


def _merged(spans: list[Span]) -> list[Span]:
    spans.sort()
    out: list[Span] = []
    for s, e, r in spans:
        if out and s < out[-1][1]:  # overlapping: one span, and a quoted replacement only if identical
            ps, pe, pr = out[-1]
            out[-1] = (ps, max(pe, e), pr if (s, e) == (ps, pe) else REDACTED)
        else:
            out.append((s, e, r))
    return out


def secret_spans(text: str, secrets: Iterable[str] = (), *, json_fields: bool = False,
                 found: list[str] | None = None, shapes: bool = True) -> list[Span]:
    """Where `text` holds a secret, as sorted, disjoint (start, end, replacement) spans."""
    spans: list[Span] = []
    _literal_spans(text, secrets, spans)
    if shapes and could_hold_shape(text):
        spans.extend((m.start(), m.end(), REDACTED) for m in _SHAPES_RE.finditer(text))
    if json_fields and '"' in text:
        _field_spans(text, spans, found)
    return _merged(spans) if len(spans) > 1 else spans


def _replaced(text: str, spans: list[Span]) -> str:
    pieces, at = [], 0
    for s, e, r in spans:
        pieces += (text[at:s], r)
        at = e
    pieces.append(text[at:])
    return "".join(pieces)


def scrub_text(text: str, secrets: Iterable[str] = (), *, json_fields: bool = False,
               found: list[str] | None = None, shapes: bool = True) -> str:
    """`text` with the given secret values and key-shaped strings replaced; with json_fields, also
    the values of secret-named fields in any JSON it holds (or looks like), whose string values are
    appended to `found`."""
    spans = secret_spans(text, secrets, json_fields=json_fields, found=found, shapes=shapes)
    return _replaced(text, spans) if spans else text


def merged_secrets(*groups: Iterable[str]) -> list[str]:
    """Secret values to scrub, longest first; short values would scrub innocent text."""
    return sorted({s for g in groups for s in g if len(s) >= 8}, key=len, reverse=True)


# -- headers ---------------------------------------------------------------------------------

_SECRET_HEADERS = {
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "cookie",
    "set-cookie",
}
_LIST = r"(?:\s*,\s*{0})*"
_MEDIA = r"[\w.+*\-]+/[\w.+*\-]+(?:\s*;\s*[\w.\-]+=(?:\"[^\"]{0,100}\"|[\w.+/:='()?\-]{0,100}))*"
_VERSION = r"v?\d+(?:\.\d+){0,3}(?:[\-+.]?[A-Za-z0-9.]{1,12})?"
_CODINGS = r"[a-z*\-]{1,16}(?:\s*;\s*q=[\d.]+)?" + _LIST.format(r"[a-z*\-]{1,16}(?:\s*;\s*q=[\d.]+)?")
_BETA = r"[a-z0-9]{1,16}(?:[\-=.][a-z0-9]{1,16}){0,8}"  # assistants=v2, prompt-caching-2024-07-31
_SDK_NAME = r"[a-z][a-z_.\-]{0,63}"  # an SDK helper's name: stream, beta.messages.stream, tool_runner
_NUMBER_VALUE = r"\d{1,15}(?:\.\d{1,9})?"
_DATE = r"[A-Za-z]{3}, \d{1,2} [A-Za-z]{3} \d{4} \d{2}:\d{2}:\d{2} GMT"
_DAY = r"\d{4}-\d{2}-\d{2}"
_FREE_TEXT = r"[\x20-\x7e]{0,512}"
# A user agent as SDKs and tools write one: product/version pairs, bare versions, lower-case words
# and (comments). A bare token like a password is none of these.
_AGENT_PART = (r"(?:[A-Za-z][\w.+\-]{0,40}/[\w.+\-]{1,40}|v?\d[\w.+\-]{0,30}|[a-z][a-z\-]{0,30}"
               r"|\([\x20-\x27\x2a-\x7e]{0,200}\))")
_USER_AGENT = rf"{_AGENT_PART}(?: +{_AGENT_PART}){{0,20}}"
# The headers kept, each with the form its values take; and no value may hold a run of 20 or more
# base64 characters, as every key does (but the ids a provider gives its responses are such runs).
_HEADER_VALUES: dict[str, str] = {
    "content-type": _MEDIA,
    "content-length": r"\d{1,15}",
    "content-encoding": _CODINGS,
    "transfer-encoding": _CODINGS,
    "accept": _MEDIA + _LIST.format(_MEDIA),
    "accept-encoding": _CODINGS,
    "user-agent": _USER_AGENT,
    "date": _DATE,
    "server": _FREE_TEXT,
    "retry-after": f"{_NUMBER_VALUE}|{_DATE}",
    "retry-after-ms": _NUMBER_VALUE,
    "request-id": r"[\w.:\-]{1,128}",  # in answers only: see RESPONSE_ONLY
    "x-request-id": r"[\w.:\-]{1,128}",
    "openai-processing-ms": _NUMBER_VALUE,
    "openai-version": _DAY,
    "openai-beta": _BETA + _LIST.format(_BETA),
    "anthropic-version": _DAY,
    "anthropic-beta": _BETA + _LIST.format(_BETA),
    "x-goog-api-client": _USER_AGENT,
    # What the Stainless SDKs (openai, anthropic, in Python and JS) send about themselves.
    "x-stainless-lang": r"[a-z]{1,12}",
    "x-stainless-package-version": _VERSION,
    "x-stainless-os": r"MacOS|Linux|Windows|FreeBSD|OpenBSD|iOS|Android|Unknown|[Oo]ther:[\w.\-]{1,16}",
    "x-stainless-arch": r"x32|x64|arm|arm64|aarch64|unknown|[Oo]ther:[\w.\-]{1,16}",
    "x-stainless-runtime": r"[A-Za-z]{1,16}(?::[a-z]{1,16})?",
    "x-stainless-runtime-version": _VERSION,
    "x-stainless-async": r"false|true|async:[a-z]{1,16}",
    "x-stainless-retry-count": r"\d{1,4}",
    "x-stainless-read-timeout": _NUMBER_VALUE,
    "x-stainless-timeout": _NUMBER_VALUE,
    "x-stainless-raw-response": r"true|false|stream",
    "x-stainless-helper": _SDK_NAME + _LIST.format(_SDK_NAME),
    "x-stainless-helper-method": _SDK_NAME,
    "x-stainless-stream-helper": _SDK_NAME,
    "x-stainless-poll-helper": r"true|false",
    "x-stainless-custom-poll-interval": r"\d{1,9}",
    "x-stainless-custom-event-handler": r"true|false",
    # MCP: the revision, the method and what it acts on. Not Mcp-Session-Id (a capability on stateful
    # servers) nor Mcp-Param-* (copies of tool arguments): those are dropped like any header not listed.
    "mcp-protocol-version": _DAY,
    "mcp-method": r"[a-z][A-Za-z/_]{0,63}",
    "mcp-name": r"[\w.:/\-]{1,128}",
}
# A request id in a request is whatever the agent put there; in an answer, the provider's own.
RESPONSE_ONLY = frozenset({"request-id", "x-request-id"})
# Rate-limit headers: counts, durations (6m0s, 20ms) and timestamps.
_RATELIMIT_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-")
_RATELIMIT_VALUE = re.compile(r"[0-9.:TZhmsu+\-]{1,40}")
_HEADER_RES = {name: re.compile(shape) for name, shape in _HEADER_VALUES.items()}
_KEY_LIKE_RUN = re.compile(r"[A-Za-z0-9+/=]{20,}")


def header_allowed(name: str, response: bool = True) -> bool:
    name = name.lower()
    if name in RESPONSE_ONLY:
        return response
    return name in _HEADER_RES or name.startswith(_RATELIMIT_PREFIXES)


def header_value(name: str, value: str, secrets: Iterable[str] = ()) -> str:
    """The value of an allowed header as stored: REDACTED unless it has the form the header's values take."""
    name = name.lower()
    shape = _RATELIMIT_VALUE if name.startswith(_RATELIMIT_PREFIXES) else _HEADER_RES.get(name)
    if shape is None or not shape.fullmatch(value):
        return REDACTED
    if name not in RESPONSE_ONLY and _KEY_LIKE_RUN.search(value):
        return REDACTED
    return scrub_text(value, secrets)


def safe_headers(headers: Iterable[tuple[str, str]], secrets: Iterable[str] = (), *,
                 response: bool = True) -> dict[str, str]:
    """The headers of a request (response=False) or an answer as stored."""
    kept: dict[str, str] = {}
    for name, value in headers:
        if header_allowed(name, response):
            kept[name.lower()] = header_value(name, value, secrets)
    return kept


# -- the URL ---------------------------------------------------------------------------------

_SECRET_QUERY_KEYS = {"key", "api_key", "api-key", "apikey", "access_token", "token", "sig", "signature", "code",
                      "x-goog-api-key", "x-amz-signature", "x-amz-credential", "x-amz-security-token",
                      "session_id", "sessionid"}  # a legacy MCP session's POST endpoint


def _secret_query_key(name: str) -> bool:
    return name.lower() in _SECRET_QUERY_KEYS or secret_name(name)


def _basic_password(value: str) -> str | None:
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[2] or None


def secrets_in(headers: Iterable[tuple[str, str]], path: str) -> list[str]:
    """Credential values this request carries, to scrub from its body and its answer."""
    found = []
    for name, value in headers:
        if name.lower() in _SECRET_HEADERS and value:
            found.append(value)
            parts = value.split(None, 1)
            if len(parts) == 2:  # "Bearer sk-..." -> also the bare token
                found.append(parts[1])
            password = _basic_password(value)
            if password:
                found.append(password)
    for key, value in parse_qsl(urlsplit(path).query, keep_blank_values=True):
        if value and _secret_query_key(key):
            found.append(value)
    return merged_secrets(found)


def safe_path(path: str, secrets: Iterable[str] = ()) -> str:
    """The request path as stored: key-shaped segments and credential query values replaced."""
    secrets = tuple(secrets)
    parts = urlsplit(path)
    route = parts.path
    plain = unquote(route)
    if could_hold_shape(plain) or any(s in plain for s in secrets):
        route = "/".join(_segment(seg, secrets) for seg in route.split("/"))
    if not parts.query:
        return route if route != parts.path else path
    query = [
        (k, REDACTED if _secret_query_key(k) else scrub_text(v, secrets))
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(("", "", route, urlencode(query, safe="[]"), parts.fragment))


def _segment(segment: str, secrets: tuple[str, ...]) -> str:
    plain = unquote(segment)
    scrubbed = scrub_text(plain, secrets)
    return segment if scrubbed == plain else scrubbed


def safe_url(url: str) -> str:
    """A URL as it may be printed: no user name or password, no credential query values."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return scrub_text(re.sub(r"//[^/?#]*@", "//***@", url))
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    tail = safe_path(urlunsplit(("", "", parts.path, parts.query, parts.fragment)))
    return scrub_text(urlunsplit((parts.scheme, netloc, "", "", "")) + tail)


# -- JSON ------------------------------------------------------------------------------------

def _blank(value: Any, found: list[str]) -> Any:
    """Every value inside a secret-named field, replaced."""
    if isinstance(value, str):
        if value:
            found.append(value)
            return REDACTED
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return REDACTED
    if isinstance(value, dict):
        return {k: _blank(v, found) for k, v in value.items()}
    if isinstance(value, list):
        return [_blank(v, found) for v in value]
    return value


# A JSON schema names parameters and definitions in these: `properties: {password: {type: string}}`.
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions"})


def _holds_secret(key: Any, value: Any, parent: dict, schema: bool) -> bool:
    if not isinstance(key, str) or not secret_name(key):
        return False
    if schema and isinstance(value, dict):
        return False  # a schema of the parameter (or the definition) of that name
    if key == "token" and "logprob" in parent:
        return False  # a token of a logprobs list is a piece of the answer
    return True


class _Walk:
    """One pass over a JSON value; copies only what it changes."""

    def __init__(self, secrets: tuple[str, ...] = (), strings: bool = False, shapes: bool = True,
                 json_fields: bool = True) -> None:
        self.secrets = secrets
        self.strings = strings  # look inside every string (else only at field names) for: these secrets,
        self.shapes = shapes  # key shapes,
        self.json_fields = json_fields  # and secret-named fields of JSON held in a string
        self.found: list[str] = []

    def value(self, v: Any, schema: bool = False) -> Any:
        if isinstance(v, dict):
            return self.object(v, schema)
        if isinstance(v, list):
            out = None
            for i, item in enumerate(v):
                new = self.value(item)
                if new is not item:
                    out = out or list(v)
                    out[i] = new
            return v if out is None else out
        if isinstance(v, str) and self.strings:
            fields = self.json_fields and looks_like_json(v)
            if not (fields or self.secrets or self.shapes):
                return v
            new = scrub_text(v, self.secrets, json_fields=fields, found=self.found, shapes=self.shapes)
            return v if new == v else new
        return v

    def object(self, d: dict, schema: bool) -> dict:
        out = None
        for k, v in d.items():
            if _holds_secret(k, v, d, schema):
                new = _blank(v, self.found)
            else:
                new = self.value(v, schema=k in _SCHEMA_MAPS and isinstance(v, dict))
            if new is not v:
                out = out or dict(d)
                out[k] = new
        return d if out is None else out


def looks_like_json(text: str) -> bool:
    """Text that is (or starts like) a JSON object or list: tool-call arguments, a JSON-mode answer.
    Only such text is read for secret-named fields, not prose that happens to quote some JSON."""
    head = text[:1]
    if head in ("{", "["):
        return True
    return head.isspace() and text.lstrip()[:1] in ("{", "[")


def _inside_strings(raw: str, secrets: tuple[str, ...]) -> _Walk | None:
    """What the strings of this JSON text may hold, judged from the text alone: the walk that
    reads them for that, or None when they hold nothing to scrub. The shapes' needles are
    letters, digits, '-', '_' and ' ', which JSON encoders write as they are; JSON held in a
    string shows as \\"; a secret with a '/' may be written '\\/'."""
    present = tuple(s for s in secrets if s in raw or "/" in s and s.replace("/", "\\/") in raw)
    shapes = could_hold_shape(raw)
    json_fields = "\\" in raw and '\\"' in raw  # the first test is a memchr, the second a slower search
    if not (present or shapes or json_fields):
        return None
    return _Walk(present, strings=True, shapes=shapes, json_fields=json_fields)


def scrub_json_value(value: Any, raw: str | None = None, secrets: Iterable[str] = ()) -> tuple[Any, list[str]]:
    """(a copy of a parsed JSON value with its secrets replaced, the secret values its fields held).

    `raw`, the text it was parsed from, lets the strings skip every check they cannot need
    (most bodies: all of them); field names are always looked at.
    """
    secrets = tuple(merged_secrets(secrets))
    walk = _Walk(secrets, strings=True) if raw is None else _inside_strings(raw, secrets) or _Walk()
    value = walk.value(value)
    found = merged_secrets(walk.found)
    if found:  # what a secret field held may show elsewhere in the body too
        value = _Walk(tuple(found), strings=True, shapes=False, json_fields=False).value(value)
    return value, found


def scrub_json(value, secrets: Iterable[str] = ()):
    """A copy of a JSON value with credential fields and key-shaped strings replaced."""
    return scrub_json_value(value, None, secrets)[0]


def _loads(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return _NOT_JSON


_NOT_JSON = object()


def _dumps(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def scrub_body(text: str, secrets: Iterable[str] = ()) -> str:
    """A JSON body (an answer) as stored: its own bytes when it holds nothing to scrub, else with
    its secrets replaced; text that is not JSON gets the same treatment as text."""
    value = _loads(text) if text[:1] in ("{", "[") or text.lstrip()[:1] in ("{", "[") else _NOT_JSON
    if value is _NOT_JSON:
        return scrub_text(text, secrets, json_fields=True)
    new, _found = scrub_json_value(value, text, secrets)
    return text if new is value else _dumps(new)


# -- event streams ---------------------------------------------------------------------------

_BLOCK_END = re.compile(r"(\r\n\r\n|\n\n|\r\r)")
_LINE_END = re.compile(r"\r\n|\r|\n")
# Text a stream carries beside the answer's text and tool calls (which the dialects' parsers
# join, so that rows.py sees when they hold a secret): reasoning and refusals. A stream that
# carries these is read for secrets split across its events too. Each pattern starts with a
# literal word, which the regex engine looks for about as fast as a substring search.
_SIDE_CHANNELS = (
    re.compile(r'reasoning(?:_content"\s*:\s*"|"\s*:\s*"|(?:_summary)?_text\.delta)'),  # chat, Responses
    re.compile(r"thinking_delta"),  # Anthropic
    re.compile(r'refusal(?:"\s*:\s*"|\.delta)'),  # chat, Responses
)


def has_side_channels(text: str) -> bool:
    return any(p.search(text) for p in _SIDE_CHANNELS)


@dataclass
class _Leaf:
    unit: int
    holder: Any  # the dict or list holding the string
    key: Any
    value: str


class _Events:
    """The JSON events of a stored stream, their strings grouped by where they sit."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self.changed: set[int] = set()
        self.channels: dict[tuple, list[_Leaf]] = {}
        self.found: list[str] = []

    def add(self, value: Any, name: str | None) -> None:
        unit = len(self.values)
        self.values.append(value)
        kind = value.get("type") if isinstance(value, dict) else None
        self._walk(unit, value, (kind if isinstance(kind, str) else name,), False)

    def _walk(self, unit: int, v: Any, path: tuple, schema: bool) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                if isinstance(x, str):
                    if _holds_secret(k, x, v, schema) and x:
                        self.found.append(x)
                        v[k] = REDACTED
                        self.changed.add(unit)
                    else:
                        self.channels.setdefault(path + (k,), []).append(_Leaf(unit, v, k, x))
                elif isinstance(x, (dict, list)):
                    if _holds_secret(k, x, v, schema):
                        v[k] = _blank(x, self.found)
                        self.changed.add(unit)
                    else:
                        self._walk(unit, x, path + (k,), k in _SCHEMA_MAPS and isinstance(x, dict))
        elif isinstance(v, list):
            for i, x in enumerate(v):
                if isinstance(x, str):
                    self.channels.setdefault(path + (i,), []).append(_Leaf(unit, v, i, x))
                elif isinstance(x, (dict, list)):
                    self._walk(unit, x, path + (i,), False)

    def scrub(self, secrets: tuple[str, ...]) -> None:
        for leaves in self.channels.values():
            values = [leaf.value for leaf in leaves]
            if len(set(values)) == 1:  # a field repeated unchanged (an id, a model name)
                new = scrub_text(values[0], secrets, json_fields=looks_like_json(values[0]))
                fragments = None if new == values[0] else [new] * len(values)
            else:
                joined = "".join(values)
                spans = secret_spans(joined, secrets, json_fields=looks_like_json(joined))
                fragments = _respanned(joined, values, spans) if spans else None
            if fragments is None:
                continue
            for leaf, new in zip(leaves, fragments):
                if new != leaf.value:
                    leaf.holder[leaf.key] = new
                    self.changed.add(leaf.unit)


def _respanned(joined: str, fragments: list[str], spans: list[Span]) -> list[str]:
    """The fragments again, cut from the joined text with its spans replaced: a span's replacement
    goes where the span starts, the rest of it leaves the fragments it covered."""
    out, at, si = [], 0, 0
    for fragment in fragments:
        start, end = at, at + len(fragment)
        at = end
        pieces, cur = [], start
        j = si
        while j < len(spans) and spans[j][0] < end:
            s, e, r = spans[j]
            if e <= start:
                j += 1
                continue
            pieces.append(joined[cur:max(s, start)])
            if s >= start:
                pieces.append(r)
            cur = min(e, end)
            if e > end:
                break
            j += 1
        pieces.append(joined[cur:end])
        while si < len(spans) and spans[si][1] <= end:
            si += 1
        out.append("".join(pieces))
    return out


def scrub_stream(text: str, secrets: Iterable[str] = ()) -> str:
    """A stored event stream (SSE, or Gemini's streamed JSON array) without the secrets its events
    spell out together: the strings at the same place of successive events (the deltas of the
    text, of a tool call's arguments, of the reasoning) are read joined, and each secret found in
    the joined text is cut out of the pieces that carry it. Events with nothing to remove keep
    their bytes; the others are written back as one `data:` line each, so the stream stays one
    that any SSE reader (and agentprobe's parsers, and `serve`) reads as before."""
    secrets = tuple(secrets)
    if text.lstrip()[:1] == "[":
        return _scrub_array(text, secrets)
    parts = _BLOCK_END.split(text)
    events = _Events()
    blocks: list[tuple[int, list[str]]] = []  # (index into parts, the block's lines)
    for i in range(0, len(parts), 2):
        lines = _LINE_END.split(parts[i])
        data = [line[5:].removeprefix(" ") for line in lines if line.startswith("data:")]
        payload = "\n".join(data)
        if not data or payload.strip() == "[DONE]":
            continue
        value = _loads(payload)
        if value is _NOT_JSON or not isinstance(value, (dict, list)):
            continue
        name = next((line[6:].strip() for line in lines if line.startswith("event:")), None)
        events.add(value, name)
        blocks.append((i, lines))
    events.scrub(merged_secrets(secrets))
    for unit in events.changed:
        i, lines = blocks[unit]
        eol = "\r\n" if "\r\n" in parts[i] else "\r" if "\r" in parts[i] else "\n"
        out, placed = [], False
        for line in lines:
            if line.startswith("data:"):
                if not placed:
                    out.append(("data: " if line.startswith("data: ") else "data:") + _dumps(events.values[unit]))
                    placed = True
                continue
            out.append(line)
        parts[i] = eol.join(out)
    return "".join(parts)


def _scrub_array(text: str, secrets: tuple[str, ...]) -> str:
    value = _loads(text)
    if not isinstance(value, list):
        return text  # cut short: the text scrub already took every secret that is whole in it
    events = _Events()
    for item in value:
        events.add(item, None)
    events.scrub(merged_secrets(secrets))
    return _dumps(value) if events.changed else text


# -- command lines ---------------------------------------------------------------------------

# In a command line: a credential header given to curl/httpie (-H "x-api-key: ..."), an option that
# takes a secret (--api-key VALUE, --token=VALUE), or an environment assignment (OPENAI_API_KEY=...).
_CLI_SECRETS = re.compile(
    r"(?i)((?:authorization|proxy-authorization|x-api-key|api-key|x-goog-api-key|cookie)\s*:\s*)([^'\"\n]+)"
    r"|(--?(?:api[-_]?key|key|token|auth[-_]?token|access[-_]?token|password|passwd|secret|client[-_]?secret)"
    r"(?:=|\s+))(\S+)"
    r"|(\b[A-Z0-9_]*(?:API_KEY|APIKEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)[A-Z0-9_]*=)(\S+)"
)
# Any other option, assignment or "name: value" whose name says it holds a credential
# (--github-token X, password=X, aws_secret_access_key=X, "api_key: X" in a prompt).
_CLI_NAMED = (
    re.compile(r"--?([A-Za-z][\w-]{0,63})(?:=|\s+)(?=[^\s-])([^\s'\"]+)"),
    re.compile(r"(?<![\w-])([A-Za-z_][\w-]{0,63})\s*[=:]\s*([^\s'\"]+)"),
)


def scrub_command(command: str | None, secrets: Iterable[str] = ()) -> str | None:
    """A command line as it may be stored: key shapes, credential headers, secret options and
    secret environment assignments replaced, and any of `secrets` (the shell expands
    $OPENAI_API_KEY before we see it)."""
    if not command:
        return command

    def keep_name(m: re.Match) -> str:
        for name, _value in ((1, 2), (3, 4), (5, 6)):
            if m.group(name) is not None:
                return m.group(name) + REDACTED
        return m.group(0)

    command = _CLI_SECRETS.sub(keep_name, command)
    spans = [(m.start(2), m.end(2), REDACTED) for pattern in _CLI_NAMED for m in pattern.finditer(command)
             if secret_name(m.group(1))]
    spans += secret_spans(command, merged_secrets(secrets), json_fields=True)
    return _replaced(command, _merged(spans)) if spans else command
