"""OpenAI Responses: `POST .../responses`."""

from __future__ import annotations

import secrets
from typing import Any

from ..reply import Ask, Reply, fragments, texts_of
from .base import Route, sse
from .openai_shared import OpenAIFamily


def _usage(reply: Reply) -> dict[str, Any]:
    return {
        "input_tokens": reply.input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": reply.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": reply.input_tokens + reply.output_tokens,
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


class OpenAIResponses(OpenAIFamily):
    name = "openai.responses"
    # Responses this server "stored" (store defaults to true): id -> the tokens of that context,
    # its input and its answer, which a call naming it as previous_response_id is billed for again.
    HELD_LIMIT = 10_000

    def __init__(self) -> None:
        self._held: dict[str, int] = {}

    def read(self, body: dict[str, Any], route: Route) -> Ask:
        items = body.get("input")
        if isinstance(items, str):
            items = [{"role": "user", "content": items}]
        items = items or []
        texts, last_user = [], ""
        if isinstance(body.get("instructions"), str):
            texts.append(body["instructions"])
        for item in items:
            texts += texts_of(item.get("content"))
            if item.get("type") == "function_call":
                texts.append(str(item.get("arguments", "")))
            elif item.get("type") == "function_call_output":
                texts += texts_of(item.get("output"))
            if item.get("role") == "user":
                last_user = " ".join(texts_of(item.get("content")))
        tools = body.get("tools") or []
        tool_name = next((tool.get("name") for tool in tools if tool.get("name")), None)
        if tool_name is None and tools:
            tool_name = tools[0].get("type")
        return Ask(
            model=body.get("model") or "gpt-fake",
            stream=bool(body.get("stream")),
            texts=texts,
            messages=len(items) + (1 if body.get("instructions") else 0),
            last_user_text=last_user,
            ends_with_tool_result=bool(items) and items[-1].get("type") == "function_call_output",
            max_tokens=body.get("max_output_tokens"),
            temperature=body.get("temperature"),
            tool_name=tool_name,
            tool_names=[t.get("name") or t.get("type") for t in tools if isinstance(t, dict)],
            body=body,
            held_tokens=self._held.get(body.get("previous_response_id"), 0)
            if isinstance(body.get("previous_response_id"), str) else 0,
        )

    def _items(self, reply: Reply, ids: list[str], done: bool) -> list[dict[str, Any]]:
        if reply.tool_calls:
            return [
                {
                    "id": ident,
                    "type": "function_call",
                    "status": "completed" if done else "in_progress",
                    "arguments": call.arguments if done else "",
                    "call_id": f"call_{call.index}",
                    "name": call.name,
                }
                for ident, call in zip(ids, reply.tool_calls)
            ]
        status = ("incomplete" if reply.finish == "length" else "completed") if done else "in_progress"
        content = [_text_part(reply.text)] if done else []
        return [{"id": ids[0], "type": "message", "status": status, "content": content, "role": "assistant"}]

    def _response(self, reply: Reply, ident: str, item_ids: list[str], done: bool) -> dict[str, Any]:
        body = reply.ask.body
        truncated = reply.finish == "length"
        status = ("incomplete" if truncated else "completed") if done else "in_progress"
        response = {
            "id": ident,
            "object": "response",
            "created_at": reply.created,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if done and truncated else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": reply.model,
            "output": self._items(reply, item_ids, done) if done else [],
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "default",
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools", []),
            "top_p": body.get("top_p", 1.0),
            "truncation": "disabled",
            "usage": _usage(reply) if done else None,
            "user": None,
            "metadata": body.get("metadata") or {},
        }
        if not reply.usage:
            del response["usage"]
        return response

    def _ids(self, reply: Reply) -> tuple[str, list[str]]:
        prefix = "fc_" if reply.tool_calls else "msg_"
        count = max(1, len(reply.tool_calls))
        ident = "resp_" + secrets.token_hex(24)
        if reply.ask.body.get("store", True) is not False:
            if len(self._held) >= self.HELD_LIMIT:
                self._held.pop(next(iter(self._held)))
            self._held[ident] = reply.input_tokens + reply.output_tokens
        return ident, [prefix + secrets.token_hex(24) for _ in range(count)]

    def render(self, reply: Reply) -> dict[str, Any]:
        ident, item_ids = self._ids(reply)
        return self._response(reply, ident, item_ids, done=True)

    def events(self, reply: Reply, route: Route) -> list[bytes]:
        ident, item_ids = self._ids(reply)
        out: list[bytes] = []

        def emit(kind: str, **fields: Any) -> None:
            out.append(sse({"type": kind, "sequence_number": len(out), **fields}, event=kind))

        emit("response.created", response=self._response(reply, ident, item_ids, done=False))
        emit("response.in_progress", response=self._response(reply, ident, item_ids, done=False))
        started, finished = self._items(reply, item_ids, False), self._items(reply, item_ids, True)
        for index, (item, final) in enumerate(zip(started, finished)):
            emit("response.output_item.added", output_index=index, item=item)
            where = {"item_id": item["id"], "output_index": index}
            if item["type"] == "function_call":
                for piece in fragments(final["arguments"]):
                    emit("response.function_call_arguments.delta", **where, delta=piece)
                emit("response.function_call_arguments.done", **where, name=final["name"], arguments=final["arguments"])
            else:
                where["content_index"] = 0
                emit("response.content_part.added", **where, part=_text_part(""))
                for piece in reply.deltas:
                    emit("response.output_text.delta", **where, delta=piece, logprobs=[])
                emit("response.output_text.done", **where, text=reply.text, logprobs=[])
                emit("response.content_part.done", **where, part=_text_part(reply.text))
            emit("response.output_item.done", output_index=index, item=final)
        # A truncated response really ends with response.incomplete, not response.completed.
        last = "response.incomplete" if reply.finish == "length" else "response.completed"
        emit(last, response=self._response(reply, ident, item_ids, done=True))
        return out

    def error_events(self, error: dict[str, Any], route: Route) -> list[bytes]:
        detail = error["error"]
        data = {"type": "error", "code": detail["code"] or detail["type"], "message": detail["message"],
                "param": detail["param"], "sequence_number": 0}
        return [sse(data, event="error")]
