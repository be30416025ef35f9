"""Anthropic messages: `POST .../messages`."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from ..directives import Directives
from ..reply import Ask, Reply, fragments, random_id, texts_of
from .base import Dialect, Route, sse

CONTEXT_WINDOW = 200000
FINISH = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}

# status -> (error.type, message) as Anthropic sends them
_ERRORS = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
    500: ("api_error", "Internal server error"),
    503: ("overloaded_error", "Overloaded"),
    529: ("overloaded_error", "Overloaded"),
}


def _user_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(block.get("text", "") for block in content or [] if block.get("type") == "text")


def _usage(reply: Reply, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": reply.input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def _request_id() -> str:
    return "req_011C" + random_id(20)


class AnthropicMessages(Dialect):
    name = "anthropic.messages"

    def read(self, body: dict[str, Any], route: Route) -> Ask:
        messages = body.get("messages") or []
        system = body.get("system")
        texts = texts_of(system)
        last_user = ""
        for message in messages:
            texts += texts_of(message.get("content"))
            if message.get("role") == "user" and _user_text(message.get("content")).strip():
                last_user = _user_text(message.get("content"))
        last = messages[-1] if messages else {}
        content = last.get("content")
        ends_with_result = last.get("role") == "user" and isinstance(content, list) and any(
            block.get("type") == "tool_result" for block in content
        )
        tools = body.get("tools") or []
        return Ask(
            model=body.get("model") or "claude-fake",
            stream=bool(body.get("stream")),
            texts=texts,
            messages=len(messages) + (1 if system else 0),
            last_user_text=last_user,
            ends_with_tool_result=ends_with_result,
            max_tokens=body.get("max_tokens"),
            temperature=body.get("temperature"),
            tool_name=tools[0].get("name") if tools else None,
            tool_names=[t.get("name") for t in tools if isinstance(t, dict) and t.get("name")],
            body=body,
        )

    def _message(self, reply: Reply, ident: str, done: bool) -> dict[str, Any]:
        if reply.tool_calls:
            content = [
                {"type": "tool_use", "id": f"toolu_{call.index}", "name": call.name, "input": call.args}
                for call in reply.tool_calls
            ]
        else:
            content = [{"type": "text", "text": reply.text}] if reply.words else []
        message = {
            "id": ident,
            "type": "message",
            "role": "assistant",
            "model": reply.model,
            "content": content if done else [],
            "stop_reason": FINISH[reply.finish] if done else None,
            "stop_sequence": None,
            # message_start reports the output tokens counted so far, which is 1.
            "usage": _usage(reply, reply.output_tokens if done else 1),
        }
        if not reply.usage:
            del message["usage"]
        return message

    def render(self, reply: Reply) -> dict[str, Any]:
        return self._message(reply, "msg_01" + random_id(22), done=True)

    def events(self, reply: Reply, route: Route) -> list[bytes]:
        out: list[bytes] = []

        def emit(kind: str, **fields: Any) -> None:
            out.append(sse({"type": kind, **fields}, event=kind))

        emit("message_start", message=self._message(reply, "msg_01" + random_id(22), done=False))
        if reply.tool_calls:
            for index, call in enumerate(reply.tool_calls):
                block = {"type": "tool_use", "id": f"toolu_{call.index}", "name": call.name, "input": {}}
                emit("content_block_start", index=index, content_block=block)
                for piece in fragments(call.arguments):
                    emit("content_block_delta", index=index, delta={"type": "input_json_delta", "partial_json": piece})
                emit("content_block_stop", index=index)
        else:
            emit("content_block_start", index=0, content_block={"type": "text", "text": ""})
            out.append(sse({"type": "ping"}, event="ping"))
            for piece in reply.deltas:
                emit("content_block_delta", index=0, delta={"type": "text_delta", "text": piece})
            emit("content_block_stop", index=0)
        delta: dict[str, Any] = {"delta": {"stop_reason": FINISH[reply.finish], "stop_sequence": None}}
        if reply.usage:
            delta["usage"] = {"output_tokens": reply.output_tokens}
        emit("message_delta", **delta)
        emit("message_stop")
        return out

    def error(self, status: int, code: str | None, ask: Ask | None, message: str | None = None) -> dict[str, Any]:
        kind, default_message = _ERRORS.get(status) or _ERRORS[500 if status >= 500 else 400]
        if code == "context_length_exceeded":
            used = max(ask.input_tokens if ask else 0, CONTEXT_WINDOW + 1)
            kind = "invalid_request_error"
            default_message = f"prompt is too long: {used} tokens > {CONTEXT_WINDOW} maximum"
        elif code:
            kind = code
        error = {"type": kind, "message": message or default_message}
        return {"type": "error", "error": error, "request_id": _request_id()}

    def error_events(self, error: dict[str, Any], route: Route) -> list[bytes]:
        return [sse({"type": "error", "error": error["error"]}, event="error")]

    def headers(self, status: int, directives: Directives) -> list[tuple[str, str]]:
        reset = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        limited = status == 429
        return [
            ("request-id", _request_id()),
            ("anthropic-organization-id", "00000000-0000-4000-8000-" + secrets.token_hex(6)),
            ("anthropic-ratelimit-requests-limit", "4000"),
            ("anthropic-ratelimit-requests-remaining", "0" if limited else "3999"),
            ("anthropic-ratelimit-requests-reset", reset),
            ("anthropic-ratelimit-tokens-limit", "400000"),
            ("anthropic-ratelimit-tokens-remaining", "399000"),
            ("anthropic-ratelimit-tokens-reset", reset),
        ]
