"""Edges of the capture path: other dialects, plain HTTP, failures with no response, durability."""

from __future__ import annotations

import socket
import sqlite3
import time

import httpx2
import openai
import pytest


def _client(recorded) -> httpx2.Client:
    return httpx2.Client(proxy=recorded.url, verify=recorded.ssl_context(), trust_env=False, timeout=30)


def test_gemini_sse_and_json_array_streams(recorded, fake_provider_tls):
    base = f"{fake_provider_tls.url}/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "hello there"}]}],
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "generationConfig": {"temperature": 0.2, "maxOutputTokens": 5}}
    with _client(recorded) as c:
        sse = c.post(base + "?alt=sse", json=body, headers={"x-fake": "words=20"})
        array = c.post(base, json=body)
        plain = c.post(base.replace(":streamGenerateContent", ":generateContent"), json=body)
    assert sse.status_code == array.status_code == plain.status_code == 200
    a, b, p = recorded.calls()
    assert {a["provider"], b["provider"], p["provider"]} == {"gemini"}
    assert a["model"] == "gemini-2.5-flash" and a["stream"] == 1 and a["api"] == "streamGenerateContent"
    assert a["finish_reason"] == "length" and a["stream_complete"] == 1
    assert a["temperature"] == 0.2 and a["max_tokens"] == 5
    assert b["stream_complete"] == 1 and b["output_tokens"] > 0 and b["input_tokens"] > 0
    assert p["stream"] == 0 and p["output_sha256"]
    assert a["system_prompt_sha256"] == b["system_prompt_sha256"] == p["system_prompt_sha256"]


def test_plain_http_base_url_through_http_proxy(recorded, fake_provider):
    """A local vLLM/Ollama-style server over plain HTTP is recorded as fully as HTTPS."""
    client = openai.OpenAI(base_url=f"{fake_provider.url}/v1", api_key="sk-local-0123456789abcdef",
                           http_client=openai.DefaultHttpxClient(proxy=recorded.url, trust_env=False))
    client.chat.completions.create(model="qwen2.5:7b", messages=[{"role": "user", "content": "hi"}], temperature=0)
    [call] = recorded.calls()
    assert call["scheme"] == "http" and call["model"] == "qwen2.5:7b"
    assert call["provider"] == "openai_compatible" and call["output_tokens"] > 0 and call["temperature"] == 0


def test_non_llm_traffic_recorded_by_status_and_latency_only(recorded, fake_provider_tls):
    with _client(recorded) as c:
        assert c.get(f"{fake_provider_tls.url}/health").text.strip() == "ok"
        c.get(f"{fake_provider_tls.url}/v1/models")
    health, models = recorded.calls()
    assert health["provider"] == "unknown" and health["status"] == 200 and health["latency_ms"] >= 0
    assert health["request_body"] is None and health["response_body"] is None
    assert models["status"] == 404 and models["model"] is None


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_upstream_connection_refused(recorded):
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{_closed_port()}/v1", api_key="sk-x-0123456789abcdef",
                           http_client=openai.DefaultHttpxClient(proxy=recorded.url, trust_env=False), max_retries=0)
    with pytest.raises(openai.APIError):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    [call] = recorded.calls()
    assert call["error_type"] == "connection_error", call
    assert call["model"] == "gpt-4o-mini" and call["finish_reason"] == "error"
    assert call["error_message"]


def test_client_disconnects_mid_stream(recorded, fake_provider_tls):
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "long"}]}
    with _client(recorded) as c:
        with c.stream("POST", f"{fake_provider_tls.url}/v1/chat/completions", json=body,
                      headers={"x-fake": "words=200; chunk_delay=0.02"}) as r:
            for _ in r.iter_raw():
                break  # the agent gives up after the first chunk
    time.sleep(0.5)
    [call] = recorded.calls()
    assert call["stream_complete"] == 0
    assert call["error_type"] in ("client_disconnected", "stream_cut"), call


def test_completed_call_is_durable_within_a_second_while_running(recorded, fake_provider_tls):
    client = recorded.openai(fake_provider_tls)
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "durable?"}])
    done = time.monotonic()
    reader = sqlite3.connect(recorded.db_path)
    while time.monotonic() - done < 1.0:
        if reader.execute("SELECT count(*) FROM calls").fetchone()[0] == 1:
            break
        time.sleep(0.01)
    assert reader.execute("SELECT count(*) FROM calls").fetchone()[0] == 1  # proxy still running
    reader.close()


def test_unparseable_request_is_still_recorded(recorded, fake_provider_tls):
    with _client(recorded) as c:
        c.post(f"{fake_provider_tls.url}/v1/chat/completions", content=b"{not json",
               headers={"content-type": "application/json"})
    [call] = recorded.calls()
    assert call["parse_error"] and call["status"] is not None and call["api"] == "chat.completions"
    run = recorded.db().execute("SELECT calls_lost FROM runs").fetchone()
    assert run[0] == 0


def test_http2_client_is_recorded(recorded, fake_provider_tls):
    body = {"model": "gpt-4o-mini", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "over h2"}]}
    with httpx2.Client(proxy=recorded.url, verify=recorded.ssl_context(), trust_env=False, http2=True) as c:
        r = c.post(f"{fake_provider_tls.url}/v1/chat/completions", json=body)
        assert r.http_version == "HTTP/2" and r.text.rstrip().endswith("data: [DONE]")
    [call] = recorded.calls()
    assert call["stream_complete"] == 1 and call["input_tokens"] > 0
