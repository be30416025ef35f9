"""Turn Captures into `calls`, `bodies` and `prompts` rows.

Runs in the writer, in completion order; `linking.RunTracker` ties retries and
conversation turns together.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from ..providers import detect, load_json, mcp, provider_for
from ..providers.base import ParsedRequest, ParsedResponse, ParseError
from ..providers.common import feed_in_pieces
from ..util.clock import iso, new_id
from ..util.hashing import canonical_json, sha256_json, sha256_text
from ..util.http_headers import retry_after
from . import redact, tokens
from .decoders import decode_body
from .exchange import STORED_BODY_LIMIT, Capture
from .linking import RunTracker
from .mcp_rows import McpState, answered_at, fill_answer, fill_request, remember, scrub, stream_rows, transport_of, wait_for_stream

@dataclass
class Rows:
    call: dict[str, Any]
    bodies: list[dict[str, Any]] = field(default_factory=list)
    prompts: list[dict[str, Any]] = field(default_factory=list)
    # Rows written earlier that this capture completes: (call id, {column: value}). A legacy MCP answer
    # arriving on its session's stream; a tool execution whose result this LLM call sends back.
    updates: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def request_digest(method: str, path: str, stored_body: bytes) -> str:
    """Identity of a request: an SDK retry of it, or a replay of it, has the same digest."""
    route = redact.safe_path(path).split("?")[0]
    return sha256_text(f"{method} {route}\n".encode() + stored_body) or ""


def stored_request_body(body_json) -> bytes:
    """The form a JSON request body is stored in (and hashed in): canonical and redacted."""
    return canonical_json(body_json).encode()


# A request body decodes to at most this much; agents send prompts of a few MB at most.
REQUEST_DECODED_LIMIT = 64 * 1024 * 1024


def _body_row(content: bytes | None, content_type: str | None, truncated: bool) -> dict | None:
    if not content:
        return None
    cut = len(content) > STORED_BODY_LIMIT
    stored = content[:STORED_BODY_LIMIT]
    try:
        value: str | bytes = stored.decode("utf-8")
    except UnicodeDecodeError:
        value = stored
    return {
        "id": sha256_text(stored),
        "content": value,
        "size": len(content),
        "content_type": content_type,
        "truncated": int(cut or truncated),
    }


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


def _ratelimit(headers: list[tuple[str, str]]) -> str | None:
    limits = {
        k.lower(): redact.header_value(k, v)
        for k, v in headers
        if k.lower().startswith(("x-ratelimit-", "anthropic-ratelimit-"))
    }
    return json.dumps(limits, sort_keys=True) if limits else None


def _ms(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return round((b - a) * 1000, 3)


def _final_event_seen(cap: Capture, resp: ParsedResponse | None) -> bool:
    """A stream whose final event arrived is complete, however the connection closed afterwards.

    SDKs stop reading at the final event ([DONE], message_stop, response.completed) and hang up;
    a gateway that flushes its compression trailer or terminating chunk a moment later then sees
    a client disconnect on a stream the agent read whole.
    """
    return cap.streamed and resp is not None and resp.complete


def _error_type(cap: Capture, resp: ParsedResponse | None) -> str | None:
    if _final_event_seen(cap, resp):
        return resp.error_type  # an error event inside the stream still counts
    if cap.client_disconnected:
        return "client_disconnected"
    if resp is not None and resp.error_type:
        return resp.error_type
    if cap.error:
        msg = cap.error.lower()
        if cap.status is not None:
            return "stream_cut"
        if "certificate" in msg or "tls" in msg or "ssl" in msg or "handshake" in msg:
            return "upstream_tls_error"  # the proxy could not verify (or speak TLS to) the upstream
        if "name or service not known" in msg or "getaddrinfo" in msg or "nodename" in msg \
                or "no address associated" in msg or "name resolution" in msg:
            return "upstream_dns_error"
        if "timeout" in msg or "timed out" in msg:
            return "timeout"
        if "refused" in msg or "connect" in msg:
            return "connection_error"
        return "upstream_error"
    if cap.streamed and resp is not None and not resp.complete:
        return "stream_cut"
    if cap.status is not None and cap.status >= 400:
        return f"http_{cap.status}"
    return None


def _scrub(text: str | None, secrets: list[str]) -> str | None:
    return redact.scrub_text(text, secrets, json_fields=redact.looks_like_json(text)) if text else text


def _scrubbed(r: ParsedResponse, secrets: list[str]) -> ParsedResponse:
    """The parsed answer under the same redaction as the stored response body.

    A model repeats what it was shown: a key pasted into the prompt (scrubbed there) can come
    back in its text or in a tool call's arguments.
    """
    return dataclasses.replace(
        r,
        output_text=_scrub(r.output_text, secrets),
        tool_calls=[{**tc, "arguments": _scrub(tc["arguments"], secrets)}
                    if isinstance(tc.get("arguments"), str) else tc for tc in r.tool_calls],
        error_message=_scrub(r.error_message, secrets),
    )


def _answer_changed(r: ParsedResponse, scrubbed: ParsedResponse) -> bool:
    return r.output_text != scrubbed.output_text or r.tool_calls != scrubbed.tool_calls


def scrubbed_request(body: bytes, secrets: list[str]) -> tuple[Any, list[str]]:
    """(the request body as stored, before canonical JSON, and the secret values its fields held);
    raises ParseError for a body that is not JSON. `serve` reads requests the same way."""
    value = load_json(body)
    return redact.scrub_json_value(value, body.decode("utf-8", "replace"), secrets)


def stored_response_body(cap: Capture, secrets: list[str], needs_stream_scrub: bool) -> bytes:
    text = cap.response_body.decode("utf-8", "replace")
    if not cap.streamed:
        return redact.scrub_body(text, secrets).encode()
    # The events first, while every secret in them is whole: a text scrub of the raw stream could
    # take the start of one (a PEM block's BEGIN line) and leave its pieces unrecognisable.
    if needs_stream_scrub or redact.has_side_channels(text):
        text = redact.scrub_stream(text, secrets)
    return redact.scrub_text(text, secrets).encode()


class RowBuilder:
    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.tracker = RunTracker()
        self.mcp = McpState()

    def build(self, cap: Capture) -> Rows:
        try:
            return self._build(cap)
        except Exception as e:  # a bug here must cost the details of one call, not the call
            rows = self._build_minimal(cap)
            secrets = redact.secrets_in(cap.request_headers, cap.path)
            rows.call["parse_error"] = redact.scrub_text(f"recorder: {type(e).__name__}: {e}", secrets)[:500]
            return rows

    def _build_minimal(self, cap: Capture) -> Rows:
        return Rows(self._base_call(cap, redact.secrets_in(cap.request_headers, cap.path)))

    def _build(self, cap: Capture) -> Rows:
        secrets = redact.secrets_in(cap.request_headers, cap.path)
        content_type = _header(cap.request_headers, "content-type")
        resp_type = _header(cap.response_headers, "content-type")
        rows = Rows(self._base_call(cap, secrets))
        if cap.dialect is None:
            return rows
        if cap.dialect is mcp:
            return self._mcp(cap, rows, secrets, content_type, resp_type)
        return self._llm(cap, rows, secrets, content_type, resp_type)

    def _mcp(self, cap: Capture, rows: Rows, secrets: list[str], content_type, resp_type) -> Rows:
        call = rows.call
        if cap.method == "GET":
            stream_rows(cap, rows, self.mcp, secrets, _body_row)
            return rows
        raw, failure = cap.request_body or b"", None
        if cap.request_encoding and raw:
            raw, failure = decode_body(raw, cap.request_encoding, limit=REQUEST_DECODED_LIMIT)
        try:
            body_json = load_json(raw)
        except ParseError:
            body_json = None
        msgs = mcp.messages(body_json) if body_json is not None else []
        if not msgs or not mcp.is_mcp(msgs):
            # MCP headers or a JSON-RPC look, but no MCP body: perhaps an LLM call after all.
            dialect = detect(cap.method, cap.host, cap.path, raw) if not failure else None
            if dialect is None:
                if failure or body_json is None:
                    call["parse_error"] = f"request: {failure or 'not JSON'} (MCP headers)"
                return rows
            cap.dialect = dialect
            if (resp_type or "").startswith("text/event-stream"):
                cap.streamed, cap.stream_deferred = True, True
            return self._llm(cap, rows, secrets, content_type, resp_type)
        body_json = scrub(body_json, secrets)
        req = mcp.read_request(mcp.messages(body_json))
        stored = stored_request_body(body_json)
        call["request_sha256"] = request_digest(cap.method or "", cap.path, stored)
        body = _body_row(stored, content_type, False)
        if body:
            rows.bodies.append(body)
            call["request_body"] = body["id"]
        if cap.response_body:
            text = redact.scrub_text(cap.response_body.decode("utf-8", "replace"), secrets)
            body = _body_row(text.encode(), resp_type, cap.response_truncated)
            if body:
                rows.bodies.append(body)
                call["response_body"] = body["id"]
        transport = transport_of(cap)
        key = fill_request(call, cap, req, transport, self.mcp, secrets)
        if transport == "stdio":
            call["error_type"] = None if not cap.error else "cancelled" if "cancel" in cap.error.lower() else "no_answer"
        if req.kind == "request":
            if transport == "http+sse" and cap.status == 202 and key:
                wait_for_stream(self.mcp, call, key, req, cap.started_at)
            else:
                resp = mcp.read_response(cap.response_body, resp_type if cap.scheme != "stdio" else None, req.id)
                fill_answer(call, resp, rows, secrets)
                answered_at(call, cap, resp)
                if not resp.found and call.get("error_type") is None:
                    call["error_type"] = "no_answer"
            if req.method == "tools/call" and req.target:
                self.mcp.links.executed(call, req.target, call.get("arguments_sha256"), cap.started_at)
        remember(self.mcp, call, cap, key)
        return rows

    def _base_call(self, cap: Capture, secrets: list[str]) -> dict[str, Any]:
        return {
            "id": new_id(),
            "run_id": self.run_id,
            "seq": cap.seq,
            "completion_seq": cap.completion_seq,
            "started_at": iso(cap.started_at),
            "first_byte_at": iso(cap.first_byte_at),
            "ended_at": iso(cap.ended_at),
            "latency_ms": _ms(cap.started_at, cap.ended_at),
            "ttft_ms": _ms(cap.started_at, cap.first_chunk_at or cap.first_byte_at),
            "method": cap.method,
            "scheme": cap.scheme,
            "host": cap.host,
            "port": cap.port,
            "path": redact.safe_path(cap.path, secrets),
            "provider": "unknown",
            "status": cap.status,
            "attempt": 1,
            "retry_after_s": retry_after(lambda name: _header(cap.response_headers, name)),
            "ratelimit": _ratelimit(cap.response_headers),
            "request_headers": json.dumps(redact.safe_headers(cap.request_headers, secrets, response=False)),
            "response_headers": json.dumps(redact.safe_headers(cap.response_headers, secrets)),
            "error_type": _error_type(cap, None),
            "error_message": redact.scrub_text(cap.error, secrets) if cap.error else None,
        }

    def _llm(self, cap: Capture, rows: Rows, secrets: list[str], content_type, resp_type) -> Rows:
        call = rows.call
        parsed: ParsedRequest | None = None
        errors: list[str] = []
        body_json = None
        found: list[str] = []
        raw_request, failure = cap.request_body or b"", None
        if cap.request_encoding and raw_request:
            raw_request, failure = decode_body(raw_request, cap.request_encoding, limit=REQUEST_DECODED_LIMIT)
            if failure:
                errors.append(f"request: {failure}")
        if raw_request or not failure:  # nothing decoded was already said; no second, vaguer error
            try:
                body_json, found = scrubbed_request(raw_request, secrets)
                parsed = cap.dialect.parse_request(body_json, cap.path, cap.host)
            except ParseError as e:
                errors.append(f"request: {e}")
            except Exception as e:  # a parser bug must not lose the call
                errors.append(f"request: {type(e).__name__}: {e}")

        if body_json is not None:
            stored_request = stored_request_body(body_json)
        else:  # not JSON (a trailing comma, a stray Latin-1 byte): scrubbed as text, fields and all
            stored_request = redact.scrub_text(
                raw_request.decode("utf-8", "replace"), secrets, json_fields=True, found=found
            ).encode()
        # What the body's secret fields held is a secret of this call too: the answer may repeat it.
        secrets = redact.merged_secrets(secrets, found)
        call["request_sha256"] = request_digest(cap.method, cap.path, stored_request)
        body = _body_row(stored_request, content_type, False)
        if body:
            rows.bodies.append(body)
            call["request_body"] = body["id"]

        resp = self._response(cap, errors)
        scrubbed = _scrubbed(resp, secrets) if resp is not None else None
        if cap.response_body:
            stored = stored_response_body(cap, secrets, scrubbed is not None and _answer_changed(resp, scrubbed))
            body = _body_row(stored, resp_type, cap.response_truncated)
            if body:
                rows.bodies.append(body)
                call["response_body"] = body["id"]

        if parsed is not None:
            self._request_fields(call, rows, parsed)
        else:
            call["provider"] = provider_for(cap.host, cap.dialect)
            call["api"] = getattr(cap.dialect, "name", None)
        if scrubbed is not None:
            self._response_fields(call, rows, scrubbed)
        call["error_type"] = _error_type(cap, resp)
        if cap.decode_error:
            # We could not read the body (an unknown or wrong content-encoding, or one past the
            # decoding cap): say so, and do not guess an empty or cut answer from what we did read.
            errors.append(f"response: {cap.decode_error}")
        elif call["error_type"] is None and cap.status and cap.status < 300 and not cap.response_body \
                and not cap.error:
            call["error_type"] = "empty_response"  # the agent got a success status and nothing to read
        if call["error_type"] and not call.get("finish_reason"):
            call["finish_reason"] = "error"
        if cap.streamed and cap.decode_error and not _final_event_seen(cap, resp):
            call["stream_complete"] = None  # unknown: we stopped reading, the agent did not
            if call["error_type"] == "stream_cut" and not cap.error:
                call["error_type"] = None
        elif cap.streamed:
            call["stream_complete"] = int(_final_event_seen(cap, resp))
            if call["stream_complete"] and cap.error and not call.get("error_type"):
                call["error_message"] = None  # the hang-up after the final event is not a failure
        if errors:
            call["parse_error"] = redact.scrub_text("; ".join(errors), secrets)[:500]
        failed = bool(call["error_type"]) or cap.status is None or cap.status >= 400
        self.tracker.link(call, parsed, failed, cap.started_at, cap.ended_at)
        if parsed is not None and parsed.tool_result_ids:
            rows.updates.extend(self.mcp.links.returned(call["id"], parsed.tool_result_ids))
        if not failed and call.get("tool_calls"):
            self.mcp.links.model_asked(call["id"], json.loads(call["tool_calls"]), cap.ended_at)
        return rows

    def _response(self, cap: Capture, errors: list[str]) -> ParsedResponse | None:
        if cap.streamed:
            if not cap.stream_deferred:
                return cap.stream_result
            try:
                parser = cap.dialect.stream_parser()
                feed_in_pieces(parser, cap.response_body or b"")
                return parser.result()
            except Exception as e:  # a parser bug must not lose the call
                errors.append(f"response stream: {type(e).__name__}: {e}")
                return None
        if cap.status is None:
            return None
        if not cap.response_body:
            return ParsedResponse(complete=cap.status < 400)
        try:
            return cap.dialect.parse_response(cap.status, load_json(cap.response_body))
        except ParseError as e:
            errors.append(f"response: {e}")
        except Exception as e:
            errors.append(f"response: {type(e).__name__}: {e}")
        return None

    def _request_fields(self, call: dict, rows: Rows, p: ParsedRequest) -> None:
        call.update(
            provider=p.provider,
            api=p.api,
            model=p.model,
            stream=int(p.stream),
            include_usage=None if p.include_usage is None else int(p.include_usage),
            temperature=p.temperature,
            top_p=p.top_p,
            max_tokens=p.max_tokens,
            seed=p.seed,
            parallel_tool_calls=None if p.parallel_tool_calls is None else int(p.parallel_tool_calls),
            message_count=len(p.messages or p.inputs),  # an embedding call's inputs
            system_prompt_sha256=sha256_text(p.system_prompt),
            prompt_sha256=sha256_json(p.messages or p.inputs),
            tools_sha256=sha256_json(p.tools) if p.tools else None,
            tool_result_ids=json.dumps(p.tool_result_ids) if p.tool_result_ids else None,
            server_context=p.server_context,
        )
        if p.system_prompt is not None:
            rows.prompts.append(
                {"sha256": call["system_prompt_sha256"], "kind": "system", "text": p.system_prompt}
            )
        if p.tools:
            rows.prompts.append(
                {"sha256": call["tools_sha256"], "kind": "tools", "text": canonical_json(p.tools)}
            )
        if p.inputs:  # embeddings: each input on its own, token ids as they are
            texts = [i for i in p.inputs if isinstance(i, str)]
            counted, call["tokenizer"] = tokens.count_parts(texts, p.model, joined=False)
            call["counted_input_tokens"] = counted + sum(len(i) for i in p.inputs if isinstance(i, list))
            return
        parts = ([p.system_prompt or ""]
                 + [str(m.get("content") or "") + canonical_json(m.get("tool_calls") or "") for m in p.messages]
                 + ([canonical_json(p.tools)] if p.tools else []))
        call["counted_input_tokens"], call["tokenizer"] = tokens.count_parts(parts, p.model)

    def _response_fields(self, call: dict, rows: Rows, r: ParsedResponse) -> None:
        call.update(
            response_model=r.response_model,
            response_id=r.response_id,
            finish_reason=r.finish_reason,
            raw_finish_reason=r.raw_finish_reason,
            input_tokens=r.input_tokens,
            output_tokens=r.output_tokens,
            cached_input_tokens=r.cached_input_tokens,
            reasoning_tokens=r.reasoning_tokens,
            usage_source=r.usage_source,
            tool_calls=json.dumps(r.tool_calls) if r.tool_calls else None,
        )
        if r.error_message:
            call["error_message"] = r.error_message[:2000]
        if r.output_text or r.tool_calls:
            output = r.output_text + (canonical_json(r.tool_calls) if r.tool_calls else "")
            call["output_sha256"] = sha256_text(output)
            rows.prompts.append({"sha256": call["output_sha256"], "kind": "output", "text": output})
