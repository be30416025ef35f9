"""Calls as OpenTelemetry spans, received and decoded by a local OTLP/HTTP receiver."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from otlp_receiver import Receiver, attributes
from proxy_fixtures import run_cli

AGENT = textwrap.dedent(
    """
    import os, openai
    c = openai.OpenAI(base_url=os.environ["FAKE_URL"] + "/v1", api_key="sk-otlp-SECRET-0123456789abcdef")
    c.chat.completions.create(model="gpt-4o-mini", temperature=0.2, max_tokens=40, seed=1,
                              messages=[{"role": "user", "content": "hello"}],
                              extra_headers={"x-fake": "status=429; retry_after=0.1; fail_times=1"})
    """
)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()


def test_trace_streams_spans_live(tmp_path, tls_ca_bundle, fake_provider_tls, receiver):
    (tmp_path / "agent.py").write_text(AGENT)
    env = {"FAKE_URL": fake_provider_tls.url, "AGENTPROBE_DB": str(tmp_path / "ap.db"),
           "AGENTPROBE_CONFDIR": str(tmp_path / "conf")}
    r = run_cli("trace", "--otlp", receiver.url, "--upstream-ca", tls_ca_bundle, "--", sys.executable,
                str(tmp_path / "agent.py"), env=env)
    assert r.returncode == 0, r.stderr
    assert {path for path, _ in receiver.posts} == {"/v1/traces"}
    failed, ok = sorted(receiver.spans(), key=lambda s: attributes(s)["agentprobe.seq"])
    assert failed["traceId"] == ok["traceId"] and len(ok["traceId"]) == 32 and len(ok["spanId"]) == 16
    assert ok["name"] == "chat gpt-4o-mini" and ok["kind"] == 3
    a = attributes(ok)
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == "gpt-4o-mini"
    assert a["gen_ai.request.temperature"] == 0.2 and a["gen_ai.request.max_tokens"] == "40"
    assert a["gen_ai.request.seed"] == "1" and a["gen_ai.response.finish_reasons"] == ["stop"]
    assert int(a["gen_ai.usage.input_tokens"]) > 0 and int(a["gen_ai.usage.output_tokens"]) > 0
    assert a["gen_ai.conversation.id"] and a["agentprobe.attempt"] == "2"
    assert a["agentprobe.retry_of"] == attributes(failed)["agentprobe.call.id"]
    assert failed["status"]["code"] == 2 and attributes(failed)["error.type"] == "rate_limit_exceeded"
    assert int(ok["endTimeUnixNano"]) > int(ok["startTimeUnixNano"]) > 0
    assert "SECRET" not in json.dumps(receiver.posts)


def test_collector_down_does_not_break_recording(tmp_path, tls_ca_bundle, fake_provider_tls):
    (tmp_path / "agent.py").write_text(AGENT)
    env = {"FAKE_URL": fake_provider_tls.url, "AGENTPROBE_DB": str(tmp_path / "ap.db"),
           "AGENTPROBE_CONFDIR": str(tmp_path / "conf")}
    r = run_cli("trace", "--otlp", "http://127.0.0.1:9", "--upstream-ca", tls_ca_bundle, "--", sys.executable,
                str(tmp_path / "agent.py"), env=env)
    assert r.returncode == 0 and "calls 2" in r.stderr
    # Said once, with the prefix and the count; never one line per batch.
    lines = [line for line in r.stderr.splitlines() if "OTLP" in line or "span" in line]
    assert len(lines) == 1 and lines[0].startswith("agentprobe: WARNING: "), r.stderr
    assert "2 of 2 span(s) were not exported to http://127.0.0.1:9" in lines[0]
    assert "Connection refused" in lines[0] and "agentprobe export RUN --format otlp" in lines[0]


def test_a_long_running_recorder_is_told_while_it_runs_and_counted_at_the_end(monkeypatch):
    from agentprobe.traces import otlp

    said = []
    monkeypatch.setattr(otlp, "warn", said.append)
    exporter = otlp.LiveExporter("http://127.0.0.1:9", batch=1, announce_after_s=0.2)
    import time

    from proxy_fixtures import wait_until

    for i in range(3):
        exporter.submit([{"id": f"C{i}", "run_id": "R1", "api": "chat.completions", "model": "m"}])
        assert wait_until(lambda: exporter.failed == i + 1)
        time.sleep(0.15)
    exporter.close()
    assert len(said) == 2, said  # once while it runs (after 0.2 s of failing), once with the count
    assert said[0].startswith("OTLP export to http://127.0.0.1:9 is failing")
    assert said[1].startswith("3 of 3 span(s) were not exported")


@pytest.mark.parametrize("api,operation", [("embeddings", "embeddings"), ("batchEmbedContents", "embeddings"),
                                           ("embedContent", "embeddings"), ("countTokens", "count_tokens"),
                                           ("messages.count_tokens", "count_tokens"), ("messages", "chat")])
def test_span_operation_names(api, operation):
    from agentprobe.traces.otlp import call_span

    span = call_span({"id": "C1", "run_id": "R1", "api": api, "model": "m", "provider": "gemini", "input_tokens": 7})
    assert span["name"] == f"{operation} m"
    assert attributes(span)["gen_ai.operation.name"] == operation
