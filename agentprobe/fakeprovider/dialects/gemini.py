"""Gemini: `POST .../models/{model}:generateContent` and `:streamGenerateContent`.

A stream is SSE with `?alt=sse` and otherwise one JSON array whose elements
arrive as the model produces them; both are real and clients use both.
"""

from __future__ import annotations

import json
from typing import Any

from ..reply import Ask, Reply, random_id, texts_of
from .base import Dialect, Route, sse

CONTEXT_WINDOW = 1048576
FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP"}

# status -> (error.status, message) as Google APIs send them
_ERRORS = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "Request had invalid authentication credentials."),
    403: ("PERMISSION_DENIED", "The caller does not have permission"),
    404: ("NOT_FOUND", "Requested entity was not found."),
    429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    500: ("INTERNAL", "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting"),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}


def _either(mapping: dict[str, Any], camel: str, snake: str, default: Any = None) -> Any:
    """The REST API accepts both spellings, and clients use both."""
    return mapping.get(camel, mapping.get(snake, default))


def _parts_text(content: dict[str, Any]) -> str:
    return " ".join(part["text"] for part in content.get("parts") or [] if isinstance(part.get("text"), str))


class Gemini(Dialect):
    name = "gemini"

    def content_type(self, route: Route) -> str:
        return "text/event-stream" if route.sse else "application/json; charset=UTF-8"

    def read(self, body: dict[str, Any], route: Route) -> Ask:
        contents = body.get("contents") or []
        system = _either(body, "systemInstruction", "system_instruction")
        texts = texts_of((system or {}).get("parts")) if isinstance(system, dict) else texts_of(system)
        last_user = ""
        for content in contents:
            texts += texts_of(content.get("parts"))
            if content.get("role", "user") == "user" and _parts_text(content).strip():
                last_user = _parts_text(content)
        last_parts = (contents[-1].get("parts") or []) if contents else []
        declarations = [
            declaration
            for tool in body.get("tools") or []
            for declaration in _either(tool, "functionDeclarations", "function_declarations", [])
        ]
        config = _either(body, "generationConfig", "generation_config") or {}
        return Ask(
            model=route.model or "gemini-fake",
            stream=route.stream,
            texts=texts,
            messages=len(contents) + (1 if system else 0),
            last_user_text=last_user,
            ends_with_tool_result=any(_either(part, "functionResponse", "function_response") for part in last_parts),
            max_tokens=_either(config, "maxOutputTokens", "max_output_tokens"),
            temperature=config.get("temperature"),
            tool_name=declarations[0].get("name") if declarations else None,
            tool_names=[d.get("name") for d in declarations if isinstance(d, dict) and d.get("name")],
            body=body,
        )

    def _chunk(self, reply: Reply, ident: str, parts: list[dict[str, Any]], last: bool) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
        if last:
            candidate["finishReason"] = FINISH[reply.finish]
        candidate["index"] = 0
        chunk: dict[str, Any] = {"candidates": [candidate]}
        if reply.usage:
            # Every real chunk reports usage so far; only the last one counts the output.
            usage = {"promptTokenCount": reply.input_tokens, "totalTokenCount": reply.input_tokens}
            if last:
                usage = {
                    "promptTokenCount": reply.input_tokens,
                    "candidatesTokenCount": reply.output_tokens,
                    "totalTokenCount": reply.input_tokens + reply.output_tokens,
                    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": reply.input_tokens}],
                }
            chunk["usageMetadata"] = usage
        chunk["modelVersion"] = reply.model
        chunk["responseId"] = ident
        return chunk

    @staticmethod
    def _call_parts(reply: Reply) -> list[dict[str, Any]]:
        return [{"functionCall": {"name": call.name, "args": call.args}} for call in reply.tool_calls]

    def render(self, reply: Reply) -> dict[str, Any]:
        parts = self._call_parts(reply) if reply.tool_calls else [{"text": reply.text}]
        return self._chunk(reply, random_id(22), parts, last=True)

    def events(self, reply: Reply, route: Route) -> list[bytes]:
        ident = random_id(22)
        if reply.tool_calls:
            groups = [self._call_parts(reply)]  # Gemini sends function calls whole, in one chunk
        else:
            groups = [[{"text": piece}] for piece in reply.deltas] or [[{"text": ""}]]
        chunks = [self._chunk(reply, ident, parts, last=i == len(groups) - 1) for i, parts in enumerate(groups)]
        return self._frame(chunks, route)

    def _frame(self, chunks: list[dict[str, Any]], route: Route) -> list[bytes]:
        if route.sse:
            return [sse(chunk, newline="\r\n") for chunk in chunks]
        # Real array streams are pretty-printed, one element per network write.
        pieces = [json.dumps(chunk, indent=2).encode() for chunk in chunks]
        return [(b"[" if i == 0 else b",\r\n") + piece for i, piece in enumerate(pieces)] + [b"]"]

    def error(self, status: int, code: str | None, ask: Ask | None, message: str | None = None) -> dict[str, Any]:
        kind, default_message = _ERRORS.get(status, ("INTERNAL" if status >= 500 else "INVALID_ARGUMENT", "Error."))
        if code == "context_length_exceeded":
            used = max(ask.input_tokens if ask else 0, CONTEXT_WINDOW + 1)
            kind = "INVALID_ARGUMENT"
            default_message = (
                f"The input token count ({used}) exceeds the maximum number of tokens allowed ({CONTEXT_WINDOW})."
            )
        elif code:
            kind = code
        return {"error": {"code": status, "message": message or default_message, "status": kind}}

    def error_events(self, error: dict[str, Any], route: Route) -> list[bytes]:
        return self._frame([error], route)
