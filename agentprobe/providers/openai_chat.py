"""OpenAI chat completions, and every server that copies its wire format."""

from __future__ import annotations

from typing import Any

from .base import ParsedRequest, ParsedResponse
from .common import (
    TextParts, as_dict, as_list, finished_tool_calls, flag, integer, json_text, num, parts_text, read_usage,
    require_dict, string, trailing_tool_results
)
from .sse import DONE, NOT_JSON, SSEReader, json_payloads

name = "chat.completions"
APIS = (name,)
FAMILY = "openai"
GENERATES = True

FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "function_call": "tool_calls",
          "content_filter": "content_filter"}


def _tool_calls(raw: Any) -> list[dict]:
    out = []
    for tc in as_list(raw):
        tc = as_dict(tc)
        fn = as_dict(tc.get("function"))
        out.append({"id": string(tc.get("id")), "name": string(fn.get("name")) or "",
                    "arguments": json_text(fn.get("arguments", ""))})
    return out


def parse_request(body: Any, path: str, host: str) -> ParsedRequest:
    from . import provider_for

    body = require_dict(body)
    system, messages = [], []
    for m in as_list(body.get("messages")):
        m = as_dict(m)
        role = string(m.get("role")) or "unknown"
        text = parts_text(m.get("content"))
        if role in ("system", "developer"):
            system.append(text)
            continue
        msg: dict[str, Any] = {"role": role, "content": text}
        if m.get("tool_calls"):
            msg["tool_calls"] = _tool_calls(m.get("tool_calls"))
        if role == "tool":
            msg["tool_call_id"] = string(m.get("tool_call_id"))
        messages.append(msg)
    stream_options = as_dict(body.get("stream_options"))
    return ParsedRequest(
        provider=provider_for(host, "chat.completions"),
        api=name,
        model=string(body.get("model")) or deployment(path),
        stream=flag(body.get("stream")) is True,
        temperature=num(body.get("temperature")),
        top_p=num(body.get("top_p")),
        max_tokens=integer(body.get("max_completion_tokens", body.get("max_tokens"))),
        seed=integer(body.get("seed")),
        parallel_tool_calls=flag(body.get("parallel_tool_calls")),
        include_usage=flag(stream_options.get("include_usage")),
        system_prompt="\n\n".join(system) if system else None,
        messages=messages,
        tools=as_list(body.get("tools")) or (as_list(body.get("functions")) or None),
        tool_result_ids=trailing_tool_results(messages),
    )


def deployment(path: str) -> str | None:
    """Azure names the deployment, not the model, in the path: `/openai/deployments/{name}/...`."""
    if "/deployments/" not in path:
        return None
    return path.split("/deployments/", 1)[1].split("/", 1)[0].split("?", 1)[0] or None


def error_fields(resp: ParsedResponse, body: dict) -> bool:
    err = body.get("error")
    if not isinstance(err, (dict, str)):
        return False
    if isinstance(err, str):
        resp.error_type, resp.error_message = "error", err
    else:
        resp.error_type = string(err.get("code")) or string(err.get("type")) or "error"
        resp.error_message = string(err.get("message"))
    resp.finish_reason = "error"
    return True


def _usage(resp: ParsedResponse, usage: Any) -> None:
    read_usage(resp, usage, "prompt_tokens", "completion_tokens",
               ("prompt_tokens_details", "completion_tokens_details"))


def parse_response(status: int, body: Any) -> ParsedResponse:
    resp = ParsedResponse()
    body = as_dict(body)
    if error_fields(resp, body):
        return resp
    resp.response_model = string(body.get("model"))
    resp.response_id = string(body.get("id"))
    choice = as_dict(as_list(body.get("choices"))[0]) if as_list(body.get("choices")) else {}
    message = as_dict(choice.get("message"))
    resp.output_text = parts_text(message.get("content")) if message.get("content") is not None else ""
    resp.tool_calls = _tool_calls(message.get("tool_calls"))
    raw = string(choice.get("finish_reason"))
    resp.raw_finish_reason = raw
    resp.finish_reason = FINISH.get(raw or "", raw and "stop")
    _usage(resp, body.get("usage"))
    return resp


class StreamParser:
    def __init__(self) -> None:
        self.sse = SSEReader()
        self.resp = ParsedResponse(complete=False)
        self.text = TextParts()
        self.calls: dict[int, dict] = {}

    def feed(self, data: bytes) -> None:
        for _event, payload, chunk in json_payloads(self.sse.feed(data)):
            self._event(payload, chunk)

    def _event(self, payload: str, chunk) -> None:
        if chunk is DONE or payload.strip() == "[DONE]":
            self.resp.complete = True
            return
        if chunk is NOT_JSON:
            self.sse.errors += 1
            return
        chunk = as_dict(chunk)
        # Hundreds of these per answer: the checks below skip helper calls for absent fields.
        if "error" in chunk and error_fields(self.resp, chunk):
            return
        resp = self.resp
        resp.response_model = string(chunk.get("model")) or resp.response_model
        resp.response_id = string(chunk.get("id")) or resp.response_id
        if chunk.get("usage"):
            _usage(resp, chunk.get("usage"))
        for choice in as_list(chunk.get("choices")):
            if not isinstance(choice, dict):
                continue
            if "index" in choice and integer(choice["index"]) not in (0, None):
                continue
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                delta = {}
            content = delta.get("content")
            if isinstance(content, str):
                self.text.append(content)
            if "tool_calls" in delta:
                self._tool_deltas(delta["tool_calls"])
            raw = choice.get("finish_reason")
            if raw and isinstance(raw, str):
                resp.raw_finish_reason = raw
                resp.finish_reason = FINISH.get(raw, "stop")

    def _tool_deltas(self, tool_calls) -> None:
        for tc in as_list(tool_calls):
            tc = as_dict(tc)
            slot = self.calls.setdefault(integer(tc.get("index")) or 0,
                                         {"id": None, "name": "", "arguments": TextParts()})
            slot["id"] = string(tc.get("id")) or slot["id"]
            fn = as_dict(tc.get("function"))
            slot["name"] += string(fn.get("name")) or ""
            slot["arguments"].append(string(fn.get("arguments")) or "")

    def result(self) -> ParsedResponse:
        self.resp.output_text = str(self.text)
        self.resp.tool_calls = finished_tool_calls(self.calls[i] for i in sorted(self.calls))
        return self.resp


def stream_parser() -> StreamParser:
    return StreamParser()
