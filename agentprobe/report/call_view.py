"""One recorded call as a person wants to read it: what was asked, what came back, what it cost.

The request is re-read from its stored (redacted) body by the dialect's own parser, so the
system prompt, the messages and the tools appear as the provider saw them; the answer is the
joined text the writer kept (streams included) and the tool calls the model made.
"""

from __future__ import annotations

import json
from typing import Any

from ..providers import detect, load_json
from ..providers.base import ParseError
from ..store.queries import body_text, decode_json_columns

SETTINGS = ("temperature", "top_p", "max_tokens", "seed", "stream", "parallel_tool_calls", "include_usage")
FLAGS = ("stream", "parallel_tool_calls", "include_usage")  # stored as 0/1: shown as the booleans that were sent
TIMING = ("started_at", "ended_at", "latency_ms", "ttft_ms", "seq", "completion_seq")
USAGE = ("input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens", "usage_source",
         "counted_input_tokens", "tokenizer")
OUTCOME = ("status", "finish_reason", "raw_finish_reason", "error_type", "error_message", "stream_complete",
           "attempt", "retry_of", "conversation_id", "turn", "parse_error")


def call_view(db, run_id: str, seq: int, *, findings: list | None = None) -> dict[str, Any]:
    """Everything `agentprobe show RUN#SEQ` prints; raises LookupError for a call the run lacks."""
    row = db.execute("SELECT * FROM calls WHERE run_id = ? AND seq = ?", [run_id, seq]).fetchone()
    if row is None:
        count = db.execute("SELECT count(*) FROM calls WHERE run_id = ?", [run_id]).fetchone()[0]
        raise LookupError(f"run {run_id} has no call {seq} (it has {count})")
    columns = [d[0] for d in db.execute("SELECT * FROM calls LIMIT 0").description]
    call = decode_json_columns(dict(zip(columns, row)))
    view: dict[str, Any] = {
        "ref": f"{run_id}#{seq}",
        "call": {k: call.get(k) for k in ("id", "method", "host", "path", "provider", "api", "model",
                                          "response_model", "conversation_id", "turn", "attempt", "retry_of")},
        "settings": {k: bool(call[k]) if k in FLAGS else call[k] for k in SETTINGS if call.get(k) is not None},
        "timing": {k: call.get(k) for k in TIMING},
        "usage": {k: call.get(k) for k in USAGE},
        "outcome": {k: call.get(k) for k in OUTCOME if call.get(k) is not None},
        "request": _request(call, body_text(db, call.get("request_body"))),
        "answer": _answer(db, call),
        "findings": [],
    }
    for finding in findings or ():
        if any(c.get("run_id") == run_id and c.get("seq") == seq for c in finding.calls):
            view["findings"].append({"rule": finding.rule, "severity": finding.severity, "title": finding.title,
                                     "fix": finding.fix})
    return view


def _request(call: dict, stored: str | None) -> dict[str, Any]:
    if not stored:
        return {"body": None}
    dialect = detect(call.get("method") or "POST", call.get("host") or "", call.get("path") or "", None)
    try:
        body = load_json(stored)
    except ParseError:
        return {"body": stored}
    out: dict[str, Any] = {}
    if dialect is not None:
        try:
            parsed = dialect.parse_request(body, call.get("path") or "", call.get("host") or "")
            out = {"system": parsed.system_prompt, "messages": parsed.messages, "tools": parsed.tools}
        except Exception:  # noqa: BLE001 - a body the parser cannot read is still shown whole
            pass
    out["body"] = body
    return out


def _answer(db, call: dict) -> dict[str, Any]:
    text = None
    if call.get("output_sha256"):
        row = db.execute("SELECT text FROM prompts WHERE sha256 = ?", [call["output_sha256"]]).fetchone()
        text = row[0] if row else None
    tool_calls = call.get("tool_calls") or []
    if text and tool_calls:
        # The stored output is the text followed by the tool calls' JSON; show the text alone.
        suffix = json.dumps(tool_calls, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        if text.endswith(suffix):
            text = text[: -len(suffix)]
    return {"text": text, "tool_calls": tool_calls}
