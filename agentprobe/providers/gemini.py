"""Google Gemini generateContent and streamGenerateContent (SSE or a streamed JSON array)."""

from __future__ import annotations

import json
import re
from typing import Any

from .base import ParsedRequest, ParsedResponse
from .common import TextParts, as_dict, as_list, integer, json_text, num, require_dict, string
from .sse import SSEReader

name = "generateContent"
APIS = (name, "streamGenerateContent")
FAMILY = "gemini"
GENERATES = True

FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter", "RECITATION": "content_filter",
          "BLOCKLIST": "content_filter", "PROHIBITED_CONTENT": "content_filter", "SPII": "content_filter",
          "MALFORMED_FUNCTION_CALL": "error"}
_MODEL = re.compile(r"/models/([^/:?]+):(stream)?[gG]enerateContent")
_ANY_METHOD = re.compile(r"/models/([^/:?]+):\w+")


def _parts(content: Any) -> tuple[str, list[dict], list[str]]:
    text, calls, results = [], [], []
    for part in as_list(as_dict(content).get("parts")):
        part = as_dict(part)
        if isinstance(part.get("text"), str):
            text.append(part["text"])
        elif "functionCall" in part:
            fc = as_dict(part.get("functionCall"))
            calls.append({"id": string(fc.get("id")), "name": string(fc.get("name")) or "",
                          "arguments": json_text(fc.get("args", {}))})
        elif "functionResponse" in part:
            fr = as_dict(part.get("functionResponse"))
            results.append(string(fr.get("id")) or string(fr.get("name")) or "")
            text.append(json_text(fr.get("response", "")))
        elif part:
            text.append(f"[{next(iter(part))}]")
    return "".join(text), calls, results


def conversation(body: dict) -> dict[str, Any]:
    """The ParsedRequest fields of a generateContent body (countTokens wraps one too)."""
    messages, last_results = [], []
    for content in as_list(body.get("contents")):
        text, calls, results = _parts(content)
        msg: dict[str, Any] = {"role": string(as_dict(content).get("role")) or "user", "content": text}
        if calls:
            msg["tool_calls"] = calls
        messages.append(msg)
        last_results = results
    system = body.get("systemInstruction", body.get("system_instruction"))
    config = as_dict(body.get("generationConfig", body.get("generation_config")))
    return dict(
        temperature=num(config.get("temperature")),
        top_p=num(config.get("topP", config.get("top_p"))),
        max_tokens=integer(config.get("maxOutputTokens", config.get("max_output_tokens"))),
        seed=integer(config.get("seed")),
        system_prompt=_parts(system)[0] if system is not None else None,
        messages=messages,
        tools=as_list(body.get("tools")) or None,
        tool_result_ids=last_results,
        # A context cache holds part of the conversation: the request alone undercounts the input.
        server_context="cachedContent" if string(body.get("cachedContent", body.get("cached_content"))) else None,
    )


def model_in(path: str) -> str | None:
    """The model a Gemini URL names: `.../models/{model}:{method}`."""
    match = _ANY_METHOD.search(path)
    return match.group(1) if match else None


def model_name(value: Any) -> str | None:
    """A model as a body names it, `models/{model}`, without the prefix."""
    text = string(value)
    return (text.removeprefix("models/") or None) if text else None


def content_text(content: Any) -> str:
    """The text of one content object (`{"parts": [...]}`), other parts as placeholders."""
    return _parts(content)[0]


def parse_request(body: Any, path: str, host: str) -> ParsedRequest:
    body = require_dict(body)
    match = _MODEL.search(path)
    return ParsedRequest(
        provider="gemini",
        api="streamGenerateContent" if match and match.group(2) else name,
        model=match.group(1) if match else None,
        stream=bool(match and match.group(2)),
        **conversation(body),
    )


def error_fields(resp: ParsedResponse, body: dict) -> bool:
    err = body.get("error")
    if not isinstance(err, dict):
        return False
    resp.error_type = string(err.get("status")) or str(err.get("code") or "error")
    resp.error_message = string(err.get("message"))
    resp.finish_reason = "error"
    return True


def _chunk(resp: ParsedResponse, body: dict, text: list[str] | TextParts, calls: list[dict]) -> None:
    if error_fields(resp, body):
        return
    resp.response_model = string(body.get("modelVersion")) or resp.response_model
    resp.response_id = string(body.get("responseId")) or resp.response_id
    candidates = as_list(body.get("candidates"))
    if candidates:
        cand = as_dict(candidates[0])
        t, c, _ = _parts(cand.get("content"))
        text.append(t)
        calls.extend(c)
        raw = string(cand.get("finishReason"))
        if raw:
            resp.raw_finish_reason = raw
            resp.finish_reason = "tool_calls" if calls and raw == "STOP" else FINISH.get(raw, "stop")
            resp.complete = True
    usage = as_dict(body.get("usageMetadata"))
    if usage:
        resp.input_tokens = integer(usage.get("promptTokenCount"))
        resp.output_tokens = integer(usage.get("candidatesTokenCount"))
        resp.cached_input_tokens = integer(usage.get("cachedContentTokenCount"))
        resp.reasoning_tokens = integer(usage.get("thoughtsTokenCount"))
        resp.usage_source = "provider"
    if as_dict(body.get("promptFeedback")).get("blockReason"):
        resp.finish_reason = "content_filter"
        resp.raw_finish_reason = string(body["promptFeedback"]["blockReason"])
        resp.complete = True


def parse_response(status: int, body: Any) -> ParsedResponse:
    resp = ParsedResponse()
    text: list[str] = []
    calls: list[dict] = []
    for chunk in body if isinstance(body, list) else [body]:
        _chunk(resp, as_dict(chunk), text, calls)
    resp.output_text, resp.tool_calls = "".join(text), calls
    resp.complete = True
    return resp


class StreamParser:
    """SSE when the request said alt=sse; otherwise a JSON array that arrives in pieces."""

    def __init__(self) -> None:
        self.mode: str | None = None
        self.sse = SSEReader()
        self.array = _ArrayReader()
        self.resp = ParsedResponse(complete=False)
        self.text = TextParts()
        self.calls: list[dict] = []

    def feed(self, data: bytes) -> None:
        if self.mode is None:
            head = data.lstrip()
            if not head:
                return
            self.mode = "array" if head[:1] == b"[" else "sse"
        payloads = (p for _, p in self.sse.feed(data)) if self.mode == "sse" else self.array.feed(data)
        for payload in payloads:
            try:
                _chunk(self.resp, as_dict(json.loads(payload)), self.text, self.calls)
            except ValueError:
                self.sse.errors += 1

    def result(self) -> ParsedResponse:
        self.resp.output_text, self.resp.tool_calls = str(self.text), list(self.calls)
        return self.resp


_STRUCTURE = re.compile(rb'[{}"\\]')


class _ArrayReader:
    """Splits `[{...},{...}]` arriving in arbitrary chunks into the element texts.

    It jumps from one structural byte ({, }, ", backslash) to the next with a regex and copies
    the bytes between in slices: a byte-by-byte loop in Python took seconds for a large answer,
    on the proxy's event loop when the stream outgrew the kept body.
    """

    MAX = 16 * 1024 * 1024

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = False
        self.escape = False  # the previous chunk ended on a backslash inside a string
        self.current = bytearray()

    def feed(self, data: bytes) -> list[str]:
        out: list[str] = []
        pos = 0  # bytes before this were handled
        if self.escape and data:
            self.escape = False
            if self.depth:
                self.current += data[:1]
            pos = 1
        for m in _STRUCTURE.finditer(data, pos):
            at = m.start()
            if at < pos:  # the byte after a backslash, already taken
                continue
            ch = data[at:at + 1]
            if self.depth == 0:
                if ch == b"{":
                    self.depth, self.current, self.in_string = 1, bytearray(b"{"), False
                pos = at + 1
                continue
            self.current += data[pos:at + 1]
            pos = at + 1
            if self.in_string:
                if ch == b"\\":
                    if at + 1 < len(data):
                        self.current += data[at + 1:at + 2]
                        pos = at + 2
                    else:
                        self.escape = True
                elif ch == b'"':
                    self.in_string = False
            elif ch == b'"':
                self.in_string = True
            elif ch == b"{":
                self.depth += 1
            elif ch == b"}":
                self.depth -= 1
                if self.depth == 0:
                    out.append(self.current.decode("utf-8", "replace"))
                    self.current = bytearray()
            if len(self.current) > self.MAX:
                self.depth, self.current, self.in_string = 0, bytearray(), False
        if self.depth:
            self.current += data[pos:]
            if len(self.current) > self.MAX:
                self.depth, self.current, self.in_string = 0, bytearray(), False
        return out


def stream_parser() -> StreamParser:
    return StreamParser()
