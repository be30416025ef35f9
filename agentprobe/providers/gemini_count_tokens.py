"""Gemini token counting: `.../models/{model}:countTokens`.

The body holds `contents`, or a whole generateContent request under
`generateContentRequest`; the answer's `totalTokens` is the size of that input, the
provider's own count, recorded as the call's input tokens.
"""

from __future__ import annotations

from typing import Any

from .base import ParsedRequest, ParsedResponse
from .common import WholeBody, as_dict, integer, require_dict
from .gemini import conversation, error_fields, model_in, model_name

name = "countTokens"
APIS = (name,)
FAMILY = "gemini"
GENERATES = False


def parse_request(body: Any, path: str, host: str) -> ParsedRequest:
    body = require_dict(body)
    wrapped = as_dict(body.get("generateContentRequest", body.get("generate_content_request")))
    return ParsedRequest(
        provider="gemini",
        api=name,
        model=model_in(path) or model_name(wrapped.get("model")),
        generates=False,
        **conversation(wrapped or body),
    )


def parse_response(status: int, body: Any) -> ParsedResponse:
    resp = ParsedResponse()
    body = as_dict(body)
    if error_fields(resp, body):
        return resp
    resp.input_tokens = integer(body.get("totalTokens"))
    resp.cached_input_tokens = integer(body.get("cachedContentTokenCount"))
    if resp.input_tokens is not None:
        resp.usage_source = "provider"
    return resp


def stream_parser() -> WholeBody:
    return WholeBody(parse_response)
