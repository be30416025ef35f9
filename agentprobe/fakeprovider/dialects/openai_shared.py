"""What OpenAI's chat completions and Responses APIs have in common: errors and headers."""

from __future__ import annotations

import secrets
from typing import Any

from ..directives import Directives
from ..reply import Ask
from .base import Dialect

CONTEXT_WINDOW = 128000

# status -> (type, code, message) as OpenAI sends them
_ERRORS = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided: sk-fake***. You can find your API key at https://platform.openai.com/account/api-keys."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Country, region, or territory not supported"),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access to it."),
    408: ("timeout", None, "Request timed out."),
    409: ("invalid_request_error", "conflict", "Conflict."),
    413: ("invalid_request_error", "request_too_large", "Request too large."),
    422: ("invalid_request_error", None, "Unprocessable entity."),
    429: ("rate_limit_exceeded", "rate_limit_exceeded", "Rate limit reached for requests. Please try again later."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The server is overloaded or not ready yet."),
    504: ("server_error", None, "Gateway timeout."),
}


class OpenAIFamily(Dialect):
    def error(self, status: int, code: str | None, ask: Ask | None, message: str | None = None) -> dict[str, Any]:
        kind, default_code, default_message = _ERRORS.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None, "Error.")
        )
        param = None
        if code == "context_length_exceeded":
            kind, param = "invalid_request_error", "messages"
            used = ask.input_tokens if ask else CONTEXT_WINDOW + 1
            default_message = (
                f"This model's maximum context length is {CONTEXT_WINDOW} tokens. However, your messages "
                f"resulted in {max(used, CONTEXT_WINDOW + 1)} tokens. Please reduce the length of the messages."
            )
        return {
            "error": {
                "message": message or default_message,
                "type": kind,
                "param": param,
                "code": code if code is not None else default_code,
            }
        }

    def headers(self, status: int, directives: Directives) -> list[tuple[str, str]]:
        limited = status == 429
        reset = f"{directives.retry_after:g}s" if directives.retry_after is not None else "6ms"
        return [
            ("x-request-id", "req_" + secrets.token_hex(16)),
            ("openai-processing-ms", "7"),
            ("openai-version", "2020-10-01"),
            ("openai-organization", "fake-org"),
            ("x-ratelimit-limit-requests", "10000"),
            ("x-ratelimit-remaining-requests", "0" if limited else "9999"),
            ("x-ratelimit-reset-requests", reset),
            ("x-ratelimit-limit-tokens", "30000000"),
            ("x-ratelimit-remaining-tokens", "29999000"),
            ("x-ratelimit-reset-tokens", "0s"),
        ]
