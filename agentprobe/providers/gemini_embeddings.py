"""Gemini embeddings: `.../models/{model}:embedContent` and `:batchEmbedContents`.

embedContent embeds one content, batchEmbedContents one per request (the google-genai
client always sends the batch form). The Gemini API reports no usage for them; a
`usageMetadata` (as Vertex AI sends) is read when present.
"""

from __future__ import annotations

import re
from typing import Any

from .base import ParsedRequest, ParsedResponse
from .common import WholeBody, as_dict, as_list, integer, require_dict
from .gemini import content_text, error_fields, model_name

name = "embedContent"
APIS = (name, "batchEmbedContents")
FAMILY = "gemini"
GENERATES = False

_PATH = re.compile(r"/models/([^/:?]+):(embedContent|batchEmbedContents)")


def parse_request(body: Any, path: str, host: str) -> ParsedRequest:
    body = require_dict(body)
    match = _PATH.search(path)
    api = match.group(2) if match else name
    if api == "batchEmbedContents":
        requests = [as_dict(r) for r in as_list(body.get("requests"))]
        named = requests[0].get("model") if requests else None
    else:
        requests, named = [body], body.get("model")
    return ParsedRequest(
        provider="gemini",
        api=api,
        model=match.group(1) if match else model_name(named),
        generates=False,
        inputs=[content_text(r["content"]) for r in requests if isinstance(r.get("content"), dict)],
    )


def parse_response(status: int, body: Any) -> ParsedResponse:
    resp = ParsedResponse()
    body = as_dict(body)
    if error_fields(resp, body):
        return resp
    resp.input_tokens = integer(as_dict(body.get("usageMetadata")).get("promptTokenCount"))
    if resp.input_tokens is not None:
        resp.usage_source = "provider"
    return resp


def stream_parser() -> WholeBody:
    return WholeBody(parse_response)
