"""OpenAI embeddings: `POST .../embeddings`, as OpenAI and the servers that copy it answer.

`input` is a string, a list of strings, a token array or a list of token arrays; each
gets one vector, in order. The openai SDK asks for base64 unless told otherwise and
decodes it back to floats, so both encodings must carry the same float32 values.
"""

from __future__ import annotations

from typing import Any

from ..reply import Ask, Reply
from ..vectors import as_base64, dimensions_of, tokens_of, vector
from .base import Route
from .openai_shared import OpenAIFamily

ENCODINGS = ("float", "base64")
EMBEDDING_WINDOW = 8192  # input tokens, per input, of OpenAI's embedding models


def _token_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)


def inputs_of(raw: Any) -> list[str | list[int]]:
    """The inputs of a request, one per vector; ValueError for what OpenAI rejects."""
    if isinstance(raw, str):
        items: list[Any] = [raw]
    elif _token_array(raw):
        items = [raw]
    elif isinstance(raw, list) and raw:
        items = raw
    else:
        raise ValueError("'input' must be a non-empty string, array of strings or array of token arrays")
    for item in items:
        if not (isinstance(item, str) and item) and not _token_array(item):
            raise ValueError(f"'input' holds {item!r}, which is neither a non-empty string nor a token array")
    return items


def _request(body: dict[str, Any]) -> tuple[list[str | list[int]], int, str]:
    encoding = body.get("encoding_format") or "float"
    if encoding not in ENCODINGS:
        raise ValueError(f"'encoding_format' must be one of {', '.join(ENCODINGS)}, not {encoding!r}")
    return inputs_of(body.get("input")), dimensions_of(body.get("dimensions")), encoding


class OpenAIEmbeddings(OpenAIFamily):
    name = "openai.embeddings"

    def read(self, body: dict[str, Any], route: Route) -> Ask:
        inputs, _, _ = _request(body)  # a bad request is answered 400 before any directive applies
        texts = [item for item in inputs if isinstance(item, str)]
        return Ask(
            model=body.get("model") or "text-embedding-fake",
            texts=texts,
            last_user_text="\n".join(texts),  # a [fake ...] directive may sit in any input
            body=body,
        )

    def render(self, reply: Reply) -> dict[str, Any]:
        inputs, dimensions, encoding = _request(reply.ask.body)
        data = []
        for index, item in enumerate(inputs):
            values = vector(reply.model, item, dimensions)
            data.append({"object": "embedding", "index": index,
                         "embedding": as_base64(values) if encoding == "base64" else values})
        tokens = sum(tokens_of(item) for item in inputs)
        body: dict[str, Any] = {"object": "list", "data": data, "model": reply.model,
                                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        if not reply.usage:  # some compatible servers send none
            del body["usage"]
        return body

    def error(self, status: int, code: str | None, ask: Ask | None, message: str | None = None) -> dict[str, Any]:
        body = super().error(status, code, ask, message)
        if code == "context_length_exceeded":
            used = max(ask.input_tokens if ask else 0, EMBEDDING_WINDOW + 1)
            body["error"]["param"] = "input"
            body["error"]["message"] = message or (
                f"This model's maximum context length is {EMBEDDING_WINDOW} tokens, however you requested {used}"
                " tokens. Please reduce your prompt.")
        return body

