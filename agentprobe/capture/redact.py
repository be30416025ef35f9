"""Keep credentials out of everything agentprobe writes.

Headers are kept by allow-list, never by deny-list: a new auth header invented
by some gateway is dropped by default. Query values and JSON body fields that
carry keys are replaced, and any credential value seen in this request's auth
headers is scrubbed from the body text wherever it appears.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "[REDACTED]"

_ALLOWED_HEADERS = {
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "accept",
    "accept-encoding",
    "user-agent",
    "date",
    "server",
    "retry-after",
    "retry-after-ms",
    "request-id",
    "x-request-id",
    "openai-processing-ms",
    "openai-version",
    "openai-beta",
    "anthropic-version",
    "anthropic-beta",
    "x-goog-api-client",
    # MCP: the revision, the method and what it acts on. Not Mcp-Session-Id (a capability on stateful
    # servers) nor Mcp-Param-* (copies of tool arguments): those are dropped like any header not listed.
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
}
_ALLOWED_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-", "x-stainless-")

_SECRET_HEADERS = {
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "cookie",
    "set-cookie",
}
_SECRET_QUERY_KEYS = {"key", "api_key", "api-key", "apikey", "access_token", "token", "sig", "signature", "code",
                      "session_id", "sessionid"}  # a legacy MCP session's POST endpoint
_SECRET_FIELD = re.compile(
    r"^(api[-_]?key|apikey|x-api-key|key|secret|client[-_]?secret|password|passwd|"
    r"access[-_]?token|refresh[-_]?token|id[-_]?token|auth[-_]?token|token|authorization|bearer)$",
    re.IGNORECASE,
)
# Shapes of provider keys, for keys pasted where we do not expect them.
_KEY_SHAPES = re.compile(
    r"(sk-(?:ant-|proj-|svcacct-)?[A-Za-z0-9_\-]{16,}|AIza[0-9A-Za-z_\-]{30,}|"
    r"(?i:bearer)\s+[A-Za-z0-9._~+/\-]{16,}=*)"
)


def header_allowed(name: str) -> bool:
    name = name.lower()
    if name in _SECRET_HEADERS:
        return False
    return name in _ALLOWED_HEADERS or name.startswith(_ALLOWED_PREFIXES)


def safe_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    kept: dict[str, str] = {}
    for name, value in headers:
        if header_allowed(name):
            kept[name.lower()] = scrub_text(value)
    return kept


def secrets_in(headers: Iterable[tuple[str, str]], path: str) -> list[str]:
    """Credential values this request carries, to scrub from its body."""
    found = []
    for name, value in headers:
        lname = name.lower()
        if lname in _SECRET_HEADERS and value:
            found.append(value)
            parts = value.split(None, 1)
            if len(parts) == 2:  # "Bearer sk-..." -> also the bare token
                found.append(parts[1])
    for key, value in parse_qsl(urlsplit(path).query, keep_blank_values=True):
        if key.lower() in _SECRET_QUERY_KEYS and value:
            found.append(value)
    # Short values would scrub innocent text; real keys are long.
    return sorted({s for s in found if len(s) >= 8}, key=len, reverse=True)


def safe_path(path: str) -> str:
    parts = urlsplit(path)
    if not parts.query:
        return path
    query = [
        (k, REDACTED if k.lower() in _SECRET_QUERY_KEYS else v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(("", "", parts.path, urlencode(query, safe="[]"), parts.fragment))


def scrub_text(text: str, secrets: Iterable[str] = ()) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    # The regex costs a millisecond per 100 KB; most bodies hold none of the prefixes it needs, and a
    # lower-cased substring test (a superset of what the regex can match) rules them out far faster.
    low = text.lower()
    if "sk-" not in low and "aiza" not in low and "bearer" not in low:
        return text
    return _KEY_SHAPES.sub(REDACTED, text)


# In a command line: a credential header given to curl/httpie (-H "x-api-key: ..."), an option that
# takes a secret (--api-key VALUE, --token=VALUE), or an environment assignment (OPENAI_API_KEY=...).
_CLI_SECRETS = re.compile(
    r"(?i)((?:authorization|proxy-authorization|x-api-key|api-key|x-goog-api-key|cookie)\s*:\s*)([^'\"\n]+)"
    r"|(--?(?:api[-_]?key|key|token|auth[-_]?token|access[-_]?token|password|passwd|secret|client[-_]?secret)"
    r"(?:=|\s+))(\S+)"
    r"|(\b[A-Z0-9_]*(?:API_KEY|APIKEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)[A-Z0-9_]*=)(\S+)"
)


def scrub_command(command: str | None) -> str | None:
    """A command line as it may be stored: key shapes, credential headers, secret options and
    secret environment assignments replaced. The shell expands $OPENAI_API_KEY before we see it."""
    if not command:
        return command

    def keep_name(m: re.Match) -> str:
        for name, _value in ((1, 2), (3, 4), (5, 6)):
            if m.group(name) is not None:
                return m.group(name) + REDACTED
        return m.group(0)

    return scrub_text(_CLI_SECRETS.sub(keep_name, command))


def scrub_json(value, secrets: Iterable[str] = ()):
    """A copy of a JSON value with credential fields and key-shaped strings replaced."""
    secrets = tuple(secrets)
    if isinstance(value, dict):
        return {
            k: (REDACTED if isinstance(k, str) and _SECRET_FIELD.match(k) and isinstance(v, (str, int)) and v != ""
                else scrub_json(v, secrets))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [scrub_json(v, secrets) for v in value]
    if isinstance(value, str):
        return scrub_text(value, secrets)
    return value
