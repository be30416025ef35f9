"""Calls recorded exactly as they happened, where the obvious reading gets them wrong.

Each test drives a real SDK through the real proxy and compares what the provider saw with what
the database holds, call by call, then checks the one column or finding that used to be wrong.
"""

from __future__ import annotations

import threading

import openai
import pytest

from agentprobe.checks import scan_runs
from agentprobe.store.db import open_db
from proxy_fixtures import assert_same_calls


def _rules(recorded) -> set[str]:
    db = open_db(recorded.db_path)
    run_id = db.execute("SELECT id FROM runs").fetchone()[0]
    return {f.rule for f in scan_runs(db, [run_id])}


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd", "identity"])
def test_a_stream_read_to_its_final_event_is_complete_however_the_connection_then_closes(
        recorded, fake_provider_tls, encoding):
    # The SDK stops at [DONE] and hangs up; the provider sends its compression trailer and the
    # terminating chunk 0.3 s later, so the proxy sees the client disconnect first.
    client = recorded.openai(fake_provider_tls)
    texts = []
    for i in range(2):
        stream = client.chat.completions.create(
            model="gpt-4o-mini", stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": f"Count to three, take {i}."}],
            extra_headers={"x-fake": f"encoding={encoding}; words=30; end_delay=0.3"})
        texts.append("".join(c.choices[0].delta.content or "" for c in stream if c.choices))
    calls = recorded.calls()
    assert_same_calls(fake_provider_tls, recorded.db())
    for call, text in zip(calls, texts):
        assert call["stream_complete"] == 1 and call["error_type"] is None and call["error_message"] is None
        assert call["finish_reason"] == "stop" and call["output_tokens"] == 30 and text
    rules = _rules(recorded)
    assert "api_latency/stream_cut" not in rules and "api_latency/swallowed_error" not in rules


def test_identical_requests_sent_at_once_are_not_retries_of_the_one_that_failed(recorded, fake_provider_tls):
    # Best-of-3: the same request three times at once; the first to arrive fails with a 500.
    client = recorded.openai(fake_provider_tls, max_retries=0)
    outcomes = []

    def one():
        try:
            client.chat.completions.create(model="gpt-4o-mini", temperature=0.7,
                                           messages=[{"role": "user", "content": "Pick a name."}],
                                           extra_headers={"x-fake": "status=500; fail_times=1; delay=0.3"})
            outcomes.append("ok")
        except openai.InternalServerError:
            outcomes.append("500")

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["500", "ok", "ok"]
    calls = recorded.calls()
    assert_same_calls(fake_provider_tls, recorded.db())
    assert sorted(c["status"] for c in calls) == [200, 200, 500]
    assert all(c["attempt"] == 1 and c["retry_of"] is None for c in calls)
    assert "api_latency/retry" not in _rules(recorded)


def test_a_retry_of_an_sdk_timeout_links_to_the_call_it_repeats(recorded, fake_provider_tls):
    client = recorded.openai(fake_provider_tls, max_retries=1, timeout=0.4)
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "slow one"}],
                                       extra_headers={"x-fake": "delay=1.5"})
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "next step"}])
    first, retry, after = recorded.calls()
    assert_same_calls(fake_provider_tls, recorded.db())
    for call in (first, retry):
        assert call["error_type"] == "client_disconnected" and call["status"] is None and call["stream"] == 0
        assert 300 <= call["latency_ms"] < 1500
    assert retry["attempt"] == 2 and retry["retry_of"] == first["id"]
    assert after["status"] == 200 and after["attempt"] == 1
    rules = _rules(recorded)
    assert "api_latency/abandoned" in rules and "api_latency/stream_cut" not in rules
    assert "api_latency/swallowed_error" in rules  # the agent carried on without an answer


def test_a_previous_response_id_chain_is_one_conversation_with_growing_turns(recorded, fake_provider_tls):
    client = recorded.openai(fake_provider_tls)
    reply = client.responses.create(model="gpt-4o-mini", instructions="Be brief.", input="My name is Ada.")
    ids = [reply.id]
    for question in ("What is my name?", "Spell it backwards.", "Now in capitals."):
        reply = client.responses.create(model="gpt-4o-mini", input=question, previous_response_id=reply.id)
        ids.append(reply.id)
    calls = recorded.calls()
    assert_same_calls(fake_provider_tls, recorded.db())
    assert [c["response_id"] for c in calls] == ids
    assert len({c["conversation_id"] for c in calls}) == 1 and [c["turn"] for c in calls] == [1, 2, 3, 4]
    assert [c["server_context"] for c in calls] == [None, "previous_response_id", "previous_response_id",
                                                     "previous_response_id"]
    # The provider bills the held history again: the reported input grows while each request stays small.
    inputs = [c["input_tokens"] for c in calls]
    assert all(a < b for a, b in zip(inputs, inputs[1:])) and inputs[-1] > 4 * inputs[0] > 0
    assert all(c["counted_input_tokens"] < c["input_tokens"] for c in calls[1:])
    assert "usage/mismatch" not in _rules(recorded)
