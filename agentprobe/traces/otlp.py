"""Recorded calls as OpenTelemetry spans (OTLP/HTTP JSON), named by the GenAI conventions.

One trace per run, one CLIENT span per call named "{operation} {model}", with
gen_ai.* attributes a backend (Jaeger, Tempo, Langfuse, Phoenix) understands and
agentprobe's own facts under `agentprobe.`. Findings become span events.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import queue
import threading
import time
import urllib.request
from collections.abc import Iterable
from typing import Any

from .. import __version__
from ..util.say import warn

log = logging.getLogger("agentprobe.traces.otlp")

_OPERATION = {
    "chat.completions": "chat",
    "responses": "chat",
    "messages": "chat",
    "generateContent": "generate_content",
    "streamGenerateContent": "generate_content",
    "embeddings": "embeddings",
    "embedContent": "embeddings",
    "batchEmbedContents": "embeddings",
    # No GenAI convention names token counting: a name of our own, as the conventions allow.
    "countTokens": "count_tokens",
    "messages.count_tokens": "count_tokens",
}
_PROVIDER = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini",
             "openai_compatible": "openai_compatible"}
SPAN_KIND_CLIENT = 3
STATUS_ERROR = 2


def trace_id(run_id: str) -> str:
    return hashlib.sha256(f"run:{run_id}".encode()).hexdigest()[:32]


def span_id(call_id: str) -> str:
    return hashlib.sha256(f"call:{call_id}".encode()).hexdigest()[:16]


def _nanos(iso: str | None) -> str:
    if not iso:
        return "0"
    return str(int(dt.datetime.fromisoformat(iso).timestamp() * 1_000_000_000))


def _value(v: Any) -> dict:
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}  # int64 travels as a string in OTLP/JSON
    if isinstance(v, float):
        return {"doubleValue": v}
    if isinstance(v, (list, tuple)):
        return {"arrayValue": {"values": [_value(x) for x in v]}}
    return {"stringValue": str(v)}


def _attributes(pairs: dict[str, Any]) -> list[dict]:
    return [{"key": k, "value": _value(v)} for k, v in pairs.items() if v is not None]


def call_span(call: dict, findings: Iterable[dict] = ()) -> dict:
    operation = _OPERATION.get(call.get("api") or "", "http")
    model = call.get("model") or call.get("response_model") or ""
    attrs = {
        "gen_ai.operation.name": operation if call.get("api") else None,
        "gen_ai.provider.name": _PROVIDER.get(call.get("provider") or "") if call.get("api") else None,
        "gen_ai.request.model": call.get("model"),
        "gen_ai.request.temperature": call.get("temperature"),
        "gen_ai.request.top_p": call.get("top_p"),
        "gen_ai.request.max_tokens": call.get("max_tokens"),
        "gen_ai.request.seed": call.get("seed"),
        "gen_ai.response.id": call.get("response_id"),
        "gen_ai.response.model": call.get("response_model"),
        "gen_ai.response.finish_reasons": [call["finish_reason"]] if call.get("finish_reason") else None,
        "gen_ai.usage.input_tokens": call.get("input_tokens"),
        "gen_ai.usage.output_tokens": call.get("output_tokens"),
        "gen_ai.conversation.id": call.get("conversation_id"),
        "error.type": call.get("error_type"),
        "server.address": call.get("host"),
        "server.port": call.get("port"),
        "http.request.method": call.get("method"),
        "http.response.status_code": call.get("status"),
        "url.path": (call.get("path") or "").split("?")[0] or None,
        "agentprobe.run.id": call.get("run_id"),
        "agentprobe.call.id": call.get("id"),
        "agentprobe.seq": call.get("seq"),
        "agentprobe.completion_seq": call.get("completion_seq"),
        "agentprobe.attempt": call.get("attempt"),
        "agentprobe.retry_of": call.get("retry_of"),
        "agentprobe.turn": call.get("turn"),
        "agentprobe.stream": bool(call["stream"]) if call.get("stream") is not None else None,
        "agentprobe.ttft_ms": call.get("ttft_ms"),
        "agentprobe.system_prompt_sha256": call.get("system_prompt_sha256"),
        "agentprobe.prompt_sha256": call.get("prompt_sha256"),
        "agentprobe.tools_sha256": call.get("tools_sha256"),
        "agentprobe.request_sha256": call.get("request_sha256"),
        "agentprobe.output_sha256": call.get("output_sha256"),
        "agentprobe.counted_input_tokens": call.get("counted_input_tokens"),
        "agentprobe.tokenizer": call.get("tokenizer"),
    }
    mcp_method = call.get("mcp_method") if call.get("provider") == "mcp" else None
    if mcp_method:  # OpenTelemetry's MCP conventions; a tools/call is a GenAI execute_tool span
        attrs.update({
            "mcp.method.name": mcp_method,
            "mcp.protocol.version": call.get("mcp_protocol"),
            "jsonrpc.request.id": call.get("mcp_id"),
            "rpc.jsonrpc.error_code": call.get("rpc_error_code"),
            "gen_ai.operation.name": "execute_tool" if mcp_method == "tools/call" else None,
            "gen_ai.tool.name": call.get("mcp_name") if mcp_method == "tools/call" else None,
            "gen_ai.tool.call.id": call.get("tool_call_id"),
            "network.transport": "pipe" if call.get("mcp_transport") == "stdio" else None,
        })
    span = {
        "traceId": trace_id(call["run_id"]),
        "spanId": span_id(call["id"]),
        "name": f"{operation} {model}".strip() if call.get("api") else
        f"{mcp_method} {call.get('mcp_name') or ''}".strip() if mcp_method else f"{call.get('method')} {call.get('host')}",
        "kind": SPAN_KIND_CLIENT,
        "startTimeUnixNano": _nanos(call.get("started_at")),
        "endTimeUnixNano": _nanos(call.get("ended_at")),
        "attributes": _attributes(attrs),
        "events": [
            {
                "name": f["rule"],
                "timeUnixNano": _nanos(call.get("ended_at")),
                "attributes": _attributes({"agentprobe.severity": f.get("severity"), "agentprobe.evidence":
                                           f.get("evidence"), "agentprobe.fix": f.get("fix")}),
            }
            for f in findings
        ],
    }
    if call.get("error_type"):
        span["status"] = {"code": STATUS_ERROR, "message": str(call.get("error_message") or call["error_type"])[:500]}
    return span


def payload(spans: list[dict]) -> dict:
    return {
        "resourceSpans": [{
            "resource": {"attributes": _attributes({"service.name": "agentprobe", "telemetry.sdk.name": "agentprobe"})},
            "scopeSpans": [{"scope": {"name": "agentprobe", "version": __version__}, "spans": spans}],
        }]
    }


def traces_url(endpoint: str) -> str:
    """An OTLP base endpoint (http://host:4318) or the full /v1/traces URL."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else endpoint + "/v1/traces"


def post(endpoint: str, spans: list[dict], timeout: float = 10) -> None:
    body = json.dumps(payload(spans)).encode()
    req = urllib.request.Request(traces_url(endpoint), data=body, method="POST",
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        resp.read()


class LiveExporter:
    """Sends spans as calls are written, from its own thread: a slow collector never slows the writer."""

    def __init__(self, endpoint: str, batch: int = 256, *, yield_cpu: bool = False,
                 announce_after_s: float = 10.0) -> None:
        self.endpoint = endpoint
        self.batch = batch
        self.yield_cpu = yield_cpu  # in the writer process: export only with CPU the agent leaves idle
        self.queue: queue.Queue = queue.Queue(maxsize=100_000)
        self.sent = 0
        self.failed = 0
        self._error: str | None = None
        self.announce_after_s = announce_after_s
        self._failing_since: float | None = None
        self._said = False
        self._thread = threading.Thread(target=self._loop, name="agentprobe-otlp", daemon=True)
        self._thread.start()

    def submit(self, calls: list[dict]) -> None:
        for call in calls:
            try:
                self.queue.put_nowait(call)
            except queue.Full:
                self.failed += 1

    def close(self, timeout: float = 10) -> None:
        self.queue.put(None)
        self._thread.join(timeout)
        if self.failed:
            warn(f"{self.failed} of {self.sent + self.failed} span(s) were not exported to {self.endpoint}"
                 f" ({self._error}); the calls are in the database: `agentprobe export RUN --format otlp` sends"
                 " them again")

    def _loop(self) -> None:
        if self.yield_cpu:
            from ..store import cpu_priority

            cpu_priority.lower_this_thread()
        done = False
        while not done:
            item = self.queue.get()
            calls = []
            while True:
                if item is None:
                    done = True
                else:
                    calls.append(item)
                if len(calls) >= self.batch:
                    break
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
            if calls:
                try:
                    post(self.endpoint, [call_span(c) for c in calls])
                    self.sent += len(calls)
                except Exception as e:  # noqa: BLE001 - the collector being down is not our agent's problem
                    self.failed += len(calls)
                    self._error = f"{type(e).__name__}: {e}"
                    now = time.monotonic()
                    if self._failing_since is None:
                        self._failing_since = now
                    # A short run (a `trace`) gets one line, the count at the end; a long-running recorder
                    # is told once, while it runs, when the collector has been failing for a while.
                    if not self._said and not done and now - self._failing_since >= self.announce_after_s:
                        self._said = True
                        warn(f"OTLP export to {self.endpoint} is failing ({self._error}); the calls are still"
                             " recorded, and the spans not exported are counted when the run ends")
