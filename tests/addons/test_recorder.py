"""The Recorder addon on its own, driven as mitmproxy drives it (taddons, tflow): what it hands the writer."""

from __future__ import annotations

import gzip
import json

import pytest
from mitmproxy.test import taddons, tflow

from agentprobe.addons.recorder import Recorder
from agentprobe.addons.stream_tee import StreamTee
from agentprobe.providers import openai_chat

CHAT = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).encode()


def chat_flow(**response):
    flow = tflow.tflow(resp=True)
    flow.request.method = "POST"
    flow.request.host, flow.request.path = "api.openai.com", "/v1/chat/completions"
    flow.request.headers["authorization"] = "Bearer sk-test-0123456789abcdef"
    flow.request.content = CHAT
    for name, value in response.items():
        setattr(flow.response, name, value)
    return flow


def drive(recorder: Recorder, flow, chunks: list[bytes]) -> None:
    """The hooks in the order mitmproxy runs them for a streamed response."""
    recorder.requestheaders(flow)
    recorder.request(flow)
    recorder.responseheaders(flow)
    tee = flow.response.stream
    if callable(tee):
        forwarded = [tee(c) for c in chunks] + [tee(b"")]
        assert b"".join(forwarded) == b"".join(chunks)  # the agent gets the bytes unchanged
    recorder.response(flow)


@pytest.fixture
def recorded():
    got = []
    recorder = Recorder(got.append)
    with taddons.context(recorder):
        yield recorder, got


def test_an_llm_call_is_teed_and_handed_over_once_with_its_order(recorded):
    recorder, got = recorded
    flow = chat_flow()
    flow.response.headers["content-type"] = "application/json"
    body = json.dumps({"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}]}).encode()
    drive(recorder, flow, [body[:10], body[10:]])
    recorder.error(flow)  # a late error hook for the same flow must not record it twice
    [cap] = got
    assert (cap.seq, cap.completion_seq) == (1, 1)
    assert cap.dialect is openai_chat and cap.request_body == CHAT
    assert cap.status == 200 and cap.response_body == body and not cap.streamed
    assert ("authorization", "Bearer sk-test-0123456789abcdef") in cap.request_headers  # dropped later, in rows.py


def test_completion_order_follows_finishing_not_dispatch(recorded):
    recorder, got = recorded
    first, second = chat_flow(), chat_flow()
    for f in (first, second):
        recorder.requestheaders(f)
        recorder.request(f)
        recorder.responseheaders(f)
    recorder.response(second)
    recorder.response(first)
    assert [(c.seq, c.completion_seq) for c in got] == [(2, 1), (1, 2)]


def test_a_gzipped_event_stream_is_decoded_for_the_parser_and_forwarded_as_sent(recorded):
    recorder, got = recorded
    events = b'data: {"choices":[{"delta":{"content":"hel"}}]}\n\ndata: {"choices":[{"delta":{"content":"lo"},' \
             b'"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    packed = gzip.compress(events)
    flow = chat_flow()
    flow.response.headers["content-type"] = "text/event-stream"
    flow.response.headers["content-encoding"] = "gzip"
    drive(recorder, flow, [packed[:7], packed[7:30], packed[30:]])
    [cap] = got
    assert cap.streamed and cap.stream_deferred and cap.response_body == events and cap.decode_error is None


def test_other_traffic_streams_through_untouched_and_is_recorded_by_status(recorded):
    recorder, got = recorded
    flow = tflow.tflow(resp=True)  # a GET to some other host
    recorder.requestheaders(flow)
    recorder.request(flow)
    recorder.responseheaders(flow)
    assert flow.response.stream is True
    recorder.response(flow)
    [cap] = got
    assert cap.dialect is None and cap.request_body is None and cap.status == flow.response.status_code


def test_a_client_disconnect_is_marked(recorded):
    recorder, got = recorded
    flow = chat_flow()
    recorder.requestheaders(flow)
    recorder.request(flow)
    flow.response = None
    flow.error = tflow.terr("Client disconnected.")
    recorder.error(flow)
    [cap] = got
    assert cap.client_disconnected and cap.status is None


def test_a_sink_that_raises_costs_a_count_not_the_proxy(recorded):
    def broken(_):
        raise RuntimeError("writer gone")

    recorder = Recorder(broken)
    with taddons.context(recorder):
        drive(recorder, chat_flow(), [b"{}"])
    assert recorder.errors == 1


def test_the_tee_survives_a_broken_decoder():
    flow = chat_flow()
    flow.response.headers["content-encoding"] = "gzip"
    tee = StreamTee(flow, None, 1024)
    assert tee(b"not gzip at all") == b"not gzip at all"
    assert tee(b"more") == b"more"
    assert tee.decode_error and "Error" in tee.decode_error


def test_websocket_messages_are_not_kept():
    recorder = Recorder(lambda c: None)
    flow = tflow.twebsocketflow()
    with taddons.context(recorder):
        for _ in range(5):
            flow.websocket.messages.append(flow.websocket.messages[-1])
            recorder.websocket_message(flow)
    assert len(flow.websocket.messages) == 1
