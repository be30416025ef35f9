"""OpenAI chat completions: `POST .../chat/completions`."""

from __future__ import annotations

import secrets
from typing import Any

from ..reply import Ask, Reply, fragments, random_id, texts_of
from .base import Route, sse
from .openai_shared import OpenAIFamily

FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls"}


def _usage(reply: Reply) -> dict[str, Any]:
    return {
        "prompt_tokens": reply.input_tokens,
        "completion_tokens": reply.output_tokens,
        "total_tokens": reply.input_tokens + reply.output_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _tool_call(call, full: bool = True) -> dict[str, Any]:
    return {
        "id": f"call_{call.index}",
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments if full else ""},
    }


class OpenAIChat(OpenAIFamily):
    name = "openai.chat"

    def read(self, body: dict[str, Any], route: Route) -> Ask:
        messages = body.get("messages") or []
        texts, last_user = [], ""
        for message in messages:
            texts += texts_of(message.get("content"))
            for call in message.get("tool_calls") or []:
                texts.append(str((call.get("function") or {}).get("arguments", "")))
            if message.get("role") == "user":
                last_user = " ".join(texts_of(message.get("content")))
        tools = body.get("tools") or []
        tool_name = None
        if tools:
            tool_name = (tools[0].get("function") or {}).get("name") or tools[0].get("type")
        limit = body.get("max_completion_tokens")
        if limit is None:
            limit = body.get("max_tokens")  # the older spelling, still sent by many clients
        return Ask(
            model=body.get("model") or "gpt-fake",
            stream=bool(body.get("stream")),
            texts=texts,
            messages=len(messages),
            last_user_text=last_user,
            ends_with_tool_result=bool(messages) and messages[-1].get("role") == "tool",
            max_tokens=limit,
            temperature=body.get("temperature"),
            tool_name=tool_name,
            tool_names=[(t.get("function") or {}).get("name") or t.get("type") for t in tools if isinstance(t, dict)],
            include_usage=bool((body.get("stream_options") or {}).get("include_usage")),
            body=body,
        )

    def render(self, reply: Reply) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": reply.text if not reply.tool_calls else None,
            "refusal": None,
            "annotations": [],
        }
        if reply.tool_calls:
            message["tool_calls"] = [_tool_call(call) for call in reply.tool_calls]
        body = {
            "id": "chatcmpl-" + random_id(29),
            "object": "chat.completion",
            "created": reply.created,
            "model": reply.model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": FINISH[reply.finish]}],
            "usage": _usage(reply),
            "service_tier": "default",
            "system_fingerprint": "fp_" + secrets.token_hex(5),
        }
        if not reply.usage:
            del body["usage"]
        return body

    def events(self, reply: Reply, route: Route) -> list[bytes]:
        ident, fingerprint = "chatcmpl-" + random_id(29), "fp_" + secrets.token_hex(5)
        with_usage = reply.ask.include_usage and reply.usage

        def chunk(delta: dict[str, Any], finish: str | None = None, choices: bool = True) -> bytes:
            data = _chunk_envelope(ident, fingerprint, reply)
            data["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}] if choices else []
            # With include_usage every chunk carries "usage": null until the last one.
            if with_usage:
                data["usage"] = None
            return sse(data)

        out = []
        if reply.tool_calls:
            for position, call in enumerate(reply.tool_calls):
                opening = {"index": position, **_tool_call(call, full=False)}
                if position == 0:
                    out.append(chunk({"role": "assistant", "content": None, "tool_calls": [opening], "refusal": None}))
                else:
                    out.append(chunk({"tool_calls": [opening]}))
                for piece in fragments(call.arguments):
                    out.append(chunk({"tool_calls": [{"index": position, "function": {"arguments": piece}}]}))
        else:
            out.append(chunk({"role": "assistant", "content": "", "refusal": None}))
            out += [chunk({"content": piece}) for piece in reply.deltas]
        out.append(chunk({}, FINISH[reply.finish]))
        if with_usage:
            out.append(sse(_usage_chunk(ident, fingerprint, reply)))
        out.append(sse("[DONE]"))
        return out

    def error_events(self, error: dict[str, Any], route: Route) -> list[bytes]:
        return [sse(error)]


def _chunk_envelope(ident: str, fingerprint: str, reply: Reply) -> dict[str, Any]:
    return {"id": ident, "object": "chat.completion.chunk", "created": reply.created, "model": reply.model,
            "service_tier": "default", "system_fingerprint": fingerprint}


def _usage_chunk(ident: str, fingerprint: str, reply: Reply) -> dict[str, Any]:
    return {**_chunk_envelope(ident, fingerprint, reply), "choices": [], "usage": _usage(reply)}
