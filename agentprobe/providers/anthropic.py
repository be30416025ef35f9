"""Anthropic messages, on api.anthropic.com or behind any gateway prefix."""

from __future__ import annotations

from typing import Any

from .base import ParsedRequest, ParsedResponse
from .common import (
    TextParts, as_dict, as_list, finished_tool_calls, flag, integer, json_text, num, parts_text, require_dict,
    string
)
from .sse import JSONEventStream

name = "messages"
APIS = (name,)
FAMILY = "anthropic"
GENERATES = True

FINISH = {"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "max_tokens": "length",
          "model_context_window_exceeded": "length", "tool_use": "tool_calls", "refusal": "content_filter"}


def _blocks(content: Any) -> tuple[str, list[dict], list[str]]:
    """(text, tool calls, tool result ids) of a message's content."""
    if isinstance(content, str):
        return content, [], []
    text, calls, results = [], [], []
    for block in as_list(content):
        block = as_dict(block)
        kind = block.get("type")
        if kind == "text":
            text.append(string(block.get("text")) or "")
        elif kind == "tool_use":
            calls.append({"id": string(block.get("id")), "name": string(block.get("name")) or "",
                          "arguments": json_text(block.get("input", {}))})
        elif kind == "tool_result":
            results.append(string(block.get("tool_use_id")) or "")
            text.append(parts_text(block.get("content")))
        elif isinstance(kind, str):
            text.append(f"[{kind}]")
    return "".join(text), calls, results


def parse_request(body: Any, path: str, host: str) -> ParsedRequest:
    body = require_dict(body)
    messages, last_results = [], []
    for m in as_list(body.get("messages")):
        m = as_dict(m)
        text, calls, results = _blocks(m.get("content"))
        msg: dict[str, Any] = {"role": string(m.get("role")) or "unknown", "content": text}
        if calls:
            msg["tool_calls"] = calls
        if results:
            msg["tool_result_ids"] = results
        messages.append(msg)
        last_results = results
    system = body.get("system")
    tool_choice = as_dict(body.get("tool_choice"))
    disable = flag(tool_choice.get("disable_parallel_tool_use"))
    return ParsedRequest(
        provider="anthropic",
        api=name,
        model=string(body.get("model")),
        stream=flag(body.get("stream")) is True,
        temperature=num(body.get("temperature")),
        top_p=num(body.get("top_p")),
        max_tokens=integer(body.get("max_tokens")),
        parallel_tool_calls=None if disable is None else not disable,
        system_prompt=parts_text(system) if system is not None else None,
        messages=messages,
        tools=as_list(body.get("tools")) or None,
        tool_result_ids=last_results,
    )


def error_fields(resp: ParsedResponse, body: dict) -> bool:
    if body.get("type") != "error" and not isinstance(body.get("error"), dict):
        return False
    err = as_dict(body.get("error"))
    resp.error_type = string(err.get("type")) or "error"
    resp.error_message = string(err.get("message"))
    resp.finish_reason = "error"
    return True


def _usage(resp: ParsedResponse, usage: Any) -> None:
    usage = as_dict(usage)
    if not usage:
        return
    if "input_tokens" in usage:
        resp.input_tokens = integer(usage.get("input_tokens"))
    if "output_tokens" in usage:
        resp.output_tokens = integer(usage.get("output_tokens"))
    if "cache_read_input_tokens" in usage:
        resp.cached_input_tokens = integer(usage.get("cache_read_input_tokens"))
    resp.usage_source = "provider"


def _finish(resp: ParsedResponse, raw: Any) -> None:
    raw = string(raw)
    if raw:
        resp.raw_finish_reason = raw
        resp.finish_reason = FINISH.get(raw, "stop")


def parse_response(status: int, body: Any) -> ParsedResponse:
    resp = ParsedResponse()
    body = as_dict(body)
    if error_fields(resp, body):
        return resp
    resp.response_model = string(body.get("model"))
    resp.response_id = string(body.get("id"))
    resp.output_text, resp.tool_calls, _ = _blocks(body.get("content"))
    _finish(resp, body.get("stop_reason"))
    _usage(resp, body.get("usage"))
    return resp


class StreamParser(JSONEventStream):
    def __init__(self) -> None:
        super().__init__()
        self.blocks: dict[int, dict] = {}

    def event(self, _kind: str | None, ev: dict) -> None:
        kind = ev.get("type")  # Anthropic's events always say their type in the body
        if kind == "message_start":
            msg = as_dict(ev.get("message"))
            self.resp.response_model = string(msg.get("model"))
            self.resp.response_id = string(msg.get("id"))
            _usage(self.resp, msg.get("usage"))
        elif kind == "content_block_start":
            block = as_dict(ev.get("content_block"))
            if block.get("type") == "tool_use":
                self.blocks[integer(ev.get("index")) or 0] = {
                    "id": string(block.get("id")), "name": string(block.get("name")) or "", "arguments": TextParts()}
            elif block.get("type") == "text" and isinstance(block.get("text"), str):
                self.text.append(block["text"])
        elif kind == "content_block_delta":
            delta = as_dict(ev.get("delta"))
            if delta.get("type") == "text_delta":
                self.text.append(string(delta.get("text")) or "")
            elif delta.get("type") == "input_json_delta":
                slot = self.blocks.get(integer(ev.get("index")) or 0)
                if slot is not None:
                    slot["arguments"].append(string(delta.get("partial_json")) or "")
        elif kind == "message_delta":
            _finish(self.resp, as_dict(ev.get("delta")).get("stop_reason"))
            _usage(self.resp, ev.get("usage"))
        elif kind == "message_stop":
            self.resp.complete = True
        elif kind == "error":
            error_fields(self.resp, ev)

    def result(self) -> ParsedResponse:
        self.resp.output_text = str(self.text)
        self.resp.tool_calls = finished_tool_calls(self.blocks[i] for i in sorted(self.blocks))
        return self.resp


def stream_parser() -> StreamParser:
    return StreamParser()
