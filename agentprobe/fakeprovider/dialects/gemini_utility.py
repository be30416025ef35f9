"""Gemini's calls that sample nothing: `:embedContent`, `:batchEmbedContents` and `:countTokens`.

They share generateContent's URL scheme (`.../models/{model}:{method}`), its content
objects and its errors. embedContent answers one vector, batchEmbedContents one per
request in order (the google-genai client always uses it), and neither reports usage.
countTokens answers the size of what it was given, bare or wrapped in a
generateContentRequest.
"""

from __future__ import annotations

from typing import Any

from ..reply import Ask, Reply, texts_of
from ..vectors import dimensions_of, vector
from .base import Route
from .gemini import Gemini, _either


def _content_texts(content: Any) -> list[str]:
    if not isinstance(content, dict) or not isinstance(content.get("parts"), list) or not content["parts"]:
        raise ValueError("each embedding request needs a content with at least one part")
    return texts_of(content["parts"])


def _embed_request(request: Any) -> tuple[list[str], int]:
    if not isinstance(request, dict):
        raise ValueError("each embedding request must be an object")
    texts = _content_texts(request.get("content"))
    return texts, dimensions_of(_either(request, "outputDimensionality", "output_dimensionality"))


def _vector(model: str, request: dict[str, Any]) -> dict[str, Any]:
    texts, dimensions = _embed_request(request)
    return {"values": vector(model, texts, dimensions)}


class GeminiEmbedContent(Gemini):
    name = "gemini.embedContent"

    def _requests(self, body: dict[str, Any]) -> list[Any]:
        return [body]

    def read(self, body: dict[str, Any], route: Route) -> Ask:
        texts = [text for request in self._requests(body) for text in _embed_request(request)[0]]
        return Ask(model=route.model or "embedding-fake", texts=texts, last_user_text="\n".join(texts), body=body)

    def render(self, reply: Reply) -> dict[str, Any]:
        return {"embedding": _vector(reply.model, reply.ask.body)}


class GeminiBatchEmbedContents(GeminiEmbedContent):
    name = "gemini.batchEmbedContents"

    def _requests(self, body: dict[str, Any]) -> list[Any]:
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            raise ValueError("'requests' must be a non-empty list")
        return requests

    def render(self, reply: Reply) -> dict[str, Any]:
        return {"embeddings": [_vector(reply.model, request) for request in self._requests(reply.ask.body)]}


class GeminiCountTokens(Gemini):
    name = "gemini.countTokens"

    def read(self, body: dict[str, Any], route: Route) -> Ask:
        wrapped = _either(body, "generateContentRequest", "generate_content_request")
        ask = super().read(wrapped if isinstance(wrapped, dict) else body, route)
        ask.stream = False
        return ask

    def render(self, reply: Reply) -> dict[str, Any]:
        tokens = reply.input_tokens
        return {"totalTokens": tokens, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": tokens}]}
