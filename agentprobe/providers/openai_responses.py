"""OpenAI Responses API (`POST /v1/responses`)."""

from __future__ import annotations

from typing import Any

from .base import ParsedRequest, ParsedResponse
from .common import (
    TextParts, as_dict, as_list, finished_tool_calls, flag, integer, json_text, num, parts_text, read_usage,
    require_dict, string, trailing_tool_results
)
from .openai_chat import error_fields
from .sse import JSONEventStream

name = "responses"
APIS = (name,)
FAMILY = "openai"
GENERATES = True

INCOMPLETE = {"max_output_tokens": "length", "content_filter": "content_filter"}


def parse_request(body: Any, path: str, host: str) -> ParsedRequest:
    from . import provider_for

    body = require_dict(body)
    system = [parts_text(body["instructions"])] if body.get("instructions") is not None else []
    messages: list[dict] = []
    raw_input = body.get("input")
    items = [{"role": "user", "content": raw_input}] if isinstance(raw_input, str) else as_list(raw_input)
    for item in items:
        item = as_dict(item)
        kind = item.get("type") or "message"
        if kind == "message":
            role = string(item.get("role")) or "user"
            text = parts_text(item.get("content"))
            if role in ("system", "developer"):
                system.append(text)
            else:
                messages.append({"role": role, "content": text})
        elif kind == "function_call":
            call = {"id": string(item.get("call_id")), "name": string(item.get("name")) or "",
                    "arguments": json_text(item.get("arguments", ""))}
            if messages and messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
                messages[-1].setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "content": json_text(item.get("output", "")),
                             "tool_call_id": string(item.get("call_id"))})
        else:
            messages.append({"role": "item", "content": f"[{kind}]"})
    previous = string(body.get("previous_response_id"))
    # `conversation` is a conversation object's id, or an object holding it.
    raw_conversation = body.get("conversation")
    conversation = string(raw_conversation) or string(as_dict(raw_conversation).get("id"))
    return ParsedRequest(
        provider=provider_for(host, name),
        api=name,
        model=string(body.get("model")),
        stream=flag(body.get("stream")) is True,
        temperature=num(body.get("temperature")),
        top_p=num(body.get("top_p")),
        max_tokens=integer(body.get("max_output_tokens")),
        parallel_tool_calls=flag(body.get("parallel_tool_calls")),
        system_prompt="\n\n".join(system) if system else None,
        messages=messages,
        tools=as_list(body.get("tools")) or None,
        tool_result_ids=trailing_tool_results(messages),
        previous_response_id=previous,
        conversation_ref=conversation,
        server_context="previous_response_id" if previous else ("conversation" if conversation else None),
    )


def _fill(resp: ParsedResponse, body: dict) -> None:
    """Fields of a full response object (the JSON answer or a stream's final event)."""
    if isinstance(body.get("error"), dict) and body["error"]:
        error_fields(resp, body)
        return
    resp.response_model = string(body.get("model")) or resp.response_model
    resp.response_id = string(body.get("id")) or resp.response_id
    text, calls = [], []
    for item in as_list(body.get("output")):
        item = as_dict(item)
        if item.get("type") == "message":
            for part in as_list(item.get("content")):
                part = as_dict(part)
                if part.get("type") == "output_text":
                    text.append(string(part.get("text")) or "")
        elif item.get("type") == "function_call":
            calls.append({"id": string(item.get("call_id")), "name": string(item.get("name")) or "",
                          "arguments": json_text(item.get("arguments", ""))})
    if text or calls or "output" in body:
        resp.output_text = "".join(text)
        resp.tool_calls = calls
    status = string(body.get("status"))
    if status == "incomplete":
        reason = string(as_dict(body.get("incomplete_details")).get("reason"))
        resp.raw_finish_reason = reason or "incomplete"
        resp.finish_reason = INCOMPLETE.get(reason or "", "length")
    elif status == "failed":
        resp.raw_finish_reason = "failed"
        resp.finish_reason = "error"
    elif status == "completed":
        resp.raw_finish_reason = "completed"
        resp.finish_reason = "tool_calls" if calls else "stop"
    read_usage(resp, body.get("usage"), "input_tokens", "output_tokens",
               ("input_tokens_details", "output_tokens_details"))


def parse_response(status: int, body: Any) -> ParsedResponse:
    resp = ParsedResponse()
    _fill(resp, as_dict(body))
    return resp


class StreamParser(JSONEventStream):
    FINAL = ("response.completed", "response.incomplete", "response.failed")

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[str, dict] = {}
        self.final = False

    def event(self, kind: str | None, ev: dict) -> None:
        if kind == "response.created":
            _fill(self.resp, as_dict(ev.get("response")))
        elif kind == "response.output_text.delta":
            self.text.append(string(ev.get("delta")) or "")
        elif kind in ("response.output_item.added", "response.output_item.done"):
            item = as_dict(ev.get("item"))
            if item.get("type") == "function_call":
                key = string(item.get("id")) or string(item.get("call_id")) or str(len(self.calls))
                slot = self.calls.setdefault(key, {"id": None, "name": "", "arguments": TextParts()})
                slot["id"] = string(item.get("call_id")) or slot["id"]
                slot["name"] = string(item.get("name")) or slot["name"]
                if kind.endswith("done") and isinstance(item.get("arguments"), str):
                    slot["arguments"] = TextParts(item["arguments"])
        elif kind == "response.function_call_arguments.delta":
            slot = self.calls.get(string(ev.get("item_id")) or "")
            if slot is not None:
                slot["arguments"].append(string(ev.get("delta")) or "")
        elif kind in self.FINAL:
            self.final = True
            self.resp.complete = True
            _fill(self.resp, as_dict(ev.get("response")))
        elif kind == "error":
            error_fields(self.resp, {"error": ev})

    def result(self) -> ParsedResponse:
        if not self.final:
            self.resp.output_text = str(self.text)
            self.resp.tool_calls = finished_tool_calls(self.calls.values())
        return self.resp


def stream_parser() -> StreamParser:
    return StreamParser()
