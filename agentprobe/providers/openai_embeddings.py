"""OpenAI embeddings (`POST /v1/embeddings`), and the servers and gateways that copy it.

`input` is a string, a list of strings, a token array or a list of token arrays;
usage reports only `prompt_tokens`. Nothing is generated: no output, no finish reason.
"""

from __future__ import annotations

from typing import Any

from .base import ParsedRequest, ParsedResponse
from .common import WholeBody, as_dict, as_list, integer, require_dict, string
from .openai_chat import deployment, error_fields

name = "embeddings"
APIS = (name,)
FAMILY = "openai"
GENERATES = False


def _token_ids(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(integer(v) is not None for v in value)


def inputs(raw: Any) -> list[str | list[int]]:
    """Each input a vector is made for, in order; items of no known shape are left out."""
    if isinstance(raw, str):
        return [raw]
    if _token_ids(raw):
        return [[integer(v) for v in raw]]
    out: list[str | list[int]] = []
    for item in as_list(raw):
        if isinstance(item, str):
            out.append(item)
        elif _token_ids(item):
            out.append([integer(v) for v in item])
    return out


def parse_request(body: Any, path: str, host: str) -> ParsedRequest:
    from . import provider_for

    body = require_dict(body)
    return ParsedRequest(
        provider=provider_for(host, name),
        api=name,
        model=string(body.get("model")) or deployment(path),
        generates=False,
        inputs=inputs(body.get("input")),
    )


def parse_response(status: int, body: Any) -> ParsedResponse:
    resp = ParsedResponse()
    body = as_dict(body)
    if error_fields(resp, body):
        return resp
    resp.response_model = string(body.get("model"))
    resp.input_tokens = integer(as_dict(body.get("usage")).get("prompt_tokens"))
    if resp.input_tokens is not None:
        resp.usage_source = "provider"
    return resp


def stream_parser() -> WholeBody:
    return WholeBody(parse_response)
