"""Anthropic token counting: `POST /v1/messages/count_tokens`, behind any gateway prefix.

The body is a messages request without max_tokens; `input_tokens` in the answer is the
provider's count of it (system, messages and tools), recorded as the call's input tokens.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from . import anthropic
from .base import ParsedRequest, ParsedResponse
from .common import WholeBody, as_dict, integer

name = "messages.count_tokens"
APIS = (name,)
FAMILY = "anthropic"
GENERATES = False


def parse_request(body: Any, path: str, host: str) -> ParsedRequest:
    parsed = anthropic.parse_request(body, path, host)
    return dataclasses.replace(parsed, api=name, stream=False, generates=False)


def parse_response(status: int, body: Any) -> ParsedResponse:
    resp = ParsedResponse()
    body = as_dict(body)
    if anthropic.error_fields(resp, body):
        return resp
    resp.input_tokens = integer(body.get("input_tokens"))
    if resp.input_tokens is not None:
        resp.usage_source = "provider"
    return resp


def stream_parser() -> WholeBody:
    return WholeBody(parse_response)
