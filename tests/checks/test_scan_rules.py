"""Every scan rule: a scenario that must trigger it and a near miss that must not.

Rules about traffic use runs recorded through the real proxy; rules about numbers
(context share, labels, hashes) use rows written straight into a real database,
which is what lets a near miss sit exactly beside the threshold. Those scenarios run on
both backends, a SQLite file and a real PostgreSQL database: the rules are written once.
"""

from __future__ import annotations

import hashlib
import itertools

import pytest

from agentprobe.checks import ScanContext, Thresholds, peers, run_checks
from agentprobe.store.db import open_db
from proxy_fixtures import staggered_calls

_ids = itertools.count(1)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Scenario:
    """A real database with runs and calls written directly, for exact numbers."""

    def __init__(self, path):
        self.db = open_db(path, create=True)
        self.runs: list[str] = []

    def insert(self, table: str, row: dict, ignore: bool = False) -> None:
        # Plain SQL, as the writer inserts: the same statement on both backends.
        cols = list(row)
        self.db.execute(f"INSERT {'OR IGNORE ' if ignore else ''}INTO {table} ({', '.join(cols)})"
                        f" VALUES ({', '.join('?' for _ in cols)})", [row[c] for c in cols])

    def run(self, label=None, **fields) -> str:
        run_id = f"01RUN{len(self.runs):04d}"
        self.insert("runs", {"id": run_id, "label": label, "status": "completed", "calls_lost": 0,
                             "started_at": "2026-01-01T00:00:00+00:00", **fields})
        self.runs.append(run_id)
        return run_id

    def call(self, run_id, **fields) -> dict:
        n = next(_ids)
        seq = fields.pop("seq", n)
        row = {"id": f"C{n:06d}", "run_id": run_id, "seq": seq, "completion_seq": seq, "provider": "openai",
               "api": "chat.completions", "model": "gpt-4o", "status": 200, "temperature": 0.0, "attempt": 1,
               "started_at": f"2026-01-01T00:00:{seq:02d}.000+00:00",
               "ended_at": f"2026-01-01T00:00:{seq:02d}.500+00:00", "latency_ms": 500.0,
               "request_sha256": sha(f"req{n}"), "prompt_sha256": sha(f"prompt{n}"), "output_sha256": sha(f"out{n}"),
               "finish_reason": "stop", **fields}
        self.insert("calls", row)
        return row

    def prompt(self, text, kind="system") -> str:
        self.insert("prompts", {"sha256": sha(text), "kind": kind, "text": text}, ignore=True)
        return sha(text)

    def scan(self, run_ids=None, **kw) -> dict[str, list]:
        run_ids = run_ids or self.runs[-1:]
        cross, previous = peers(self.db, run_ids)
        ctx = ScanContext(self.db, run_ids, cross_run_ids=cross, previous_run=previous, **kw)
        out: dict[str, list] = {}
        for f in run_checks(ctx):
            out.setdefault(f.rule, []).append(f)
        return out


@pytest.fixture(params=["sqlite", "postgresql"])
def sc(request, tmp_path):
    if request.param == "postgresql":
        return Scenario(request.getfixturevalue("pg_url"))
    return Scenario(tmp_path / "scan.db")


# -- context_overflow -------------------------------------------------------------------------

def test_context_near_limit_at_76_not_74(sc):
    run = sc.run()
    sc.call(run, conversation_id="CONV_A", turn=1, input_tokens=40_000)
    sc.call(run, conversation_id="CONV_A", turn=14, input_tokens=97_412)  # 76% of 128,000
    sc.call(run, conversation_id="CONV_B", turn=9, input_tokens=94_720)  # 74%
    found = sc.scan()["context_overflow/near_limit"]
    assert len(found) == 1
    assert "97,412 of 128,000 tokens (76%) at turn 14" in found[0].evidence
    assert found[0].severity == "medium"


def test_context_exceeded_and_provider_rejection(sc):
    run = sc.run()
    sc.call(run, conversation_id="C1", turn=3, model="gpt-4", counted_input_tokens=9_000)  # window 8,192
    sc.call(run, status=400, error_type="context_length_exceeded", error_message="maximum context length is 8192")
    found = sc.scan()["context_overflow/exceeded"]
    assert {f.severity for f in found} == {"critical"} and len(found) == 2


def test_unknown_model_window_is_reported_not_guessed(sc):
    run = sc.run()
    sc.call(run, conversation_id="C1", turn=1, model="house-model-7b", input_tokens=10**9)
    found = sc.scan()
    assert "context_overflow/near_limit" not in found and "context_overflow/exceeded" not in found
    assert found["context_overflow/unknown_window"][0].data["model"] == "house-model-7b"
    assert "context_overflow/unknown_window" not in sc.scan(context_windows={"house-model-7b": 10**10})


def test_context_peak_is_the_earliest_largest_call_of_each_conversation(sc):
    run = sc.run()
    sc.call(run, conversation_id="CONV_A", turn=2, seq=5, input_tokens=100_000)
    sc.call(run, conversation_id="CONV_A", turn=3, seq=6, input_tokens=100_000)  # same size, later
    sc.call(run, conversation_id="CONV_A", turn=4, seq=7, input_tokens=None, counted_input_tokens=90_000)
    sc.call(run, conversation_id="CONV_B", turn=1, seq=8, model="house-model-7b", input_tokens=5)
    sc.call(run, conversation_id="CONV_B", turn=2, seq=9, model="house-model-7b", input_tokens=7)
    found = sc.scan()
    [near] = found["context_overflow/near_limit"]
    assert near.calls[0]["seq"] == 5 and near.data["turn"] == 2
    [unknown] = found["context_overflow/unknown_window"]
    assert [c["seq"] for c in unknown.calls] == [9]


# -- temperature_drift ------------------------------------------------------------------------

def test_env_mismatch_between_labels(sc):
    dev, prod = sc.run("dev"), sc.run("prod")
    sc.call(dev, prompt_sha256=sha("same"), temperature=0.0)
    sc.call(prod, prompt_sha256=sha("same"), temperature=0.7)
    sc.call(prod, prompt_sha256=sha("other"), temperature=0.7)
    found = sc.scan([prod])["temperature_drift/env_mismatch"]
    assert len(found) == 1 and found[0].data["temperatures"] == {"dev": "0.0", "prod": "0.7"}


def test_env_mismatch_only_for_prompts_shared_across_labels(sc):
    dev, prod = sc.run("dev"), sc.run("prod")
    sc.call(dev, prompt_sha256=sha("dev only"), temperature=0.0)
    sc.call(dev, prompt_sha256=sha("dev only"), temperature=0.9)  # varies inside one label: not this rule
    sc.call(dev, prompt_sha256=sha("shared"), temperature=0.0, seq=40)
    sc.call(dev, prompt_sha256=sha("shared"), temperature=None, seq=41)
    sc.call(prod, prompt_sha256=sha("shared"), temperature=0.0, seq=42)
    [f] = sc.scan([prod])["temperature_drift/env_mismatch"]
    assert f.data == {"temperatures": {"dev": "0.0,default", "prod": "0.0"}, "prompts": 1}
    assert sorted(c["seq"] for c in f.calls) == [40, 42]


def test_env_match_is_quiet(sc):
    dev, prod = sc.run("dev"), sc.run("prod")
    sc.call(dev, prompt_sha256=sha("same"), temperature=0.2)
    sc.call(prod, prompt_sha256=sha("same"), temperature=0.2)
    assert "temperature_drift/env_mismatch" not in sc.scan([prod])


def test_nondeterministic_output_at_temperature_zero_only(sc):
    run = sc.run()
    sc.call(run, request_sha256=sha("r"), output_sha256=sha("a"))
    sc.call(run, request_sha256=sha("r"), output_sha256=sha("b"))
    sc.call(run, request_sha256=sha("s"), output_sha256=sha("a"), temperature=0.9)
    sc.call(run, request_sha256=sha("s"), output_sha256=sha("b"), temperature=0.9)
    found = sc.scan()["temperature_drift/nondeterministic_output"]
    assert len(found) == 1 and found[0].data == {"distinct_outputs": 2, "sends": 2}


# -- prompt_drift -----------------------------------------------------------------------------

def test_system_prompt_changed_shows_a_unified_diff(sc):
    old = sc.prompt("You are a helpful analyst.\nAnswer in English.")
    new = sc.prompt("You are a helpful analyst.\nAnswer in French.")
    a, b = sc.run("prod"), sc.run("prod")
    sc.call(a, system_prompt_sha256=old)
    sc.call(b, system_prompt_sha256=new)
    [f] = sc.scan()["prompt_drift/system_prompt_changed"]
    assert "-Answer in English." in f.evidence and "+Answer in French." in f.evidence
    assert f.data["previous_run"] == a


def test_same_prompt_next_run_is_quiet_and_tools_change_is_found(sc):
    p = sc.prompt("Same prompt")
    t1, t2 = sc.prompt('[{"name":"a"}]', "tools"), sc.prompt('[{"name":"b"}]', "tools")
    a, b = sc.run(), sc.run()
    sc.call(a, system_prompt_sha256=p, tools_sha256=t1)
    sc.call(b, system_prompt_sha256=p, tools_sha256=t2)
    found = sc.scan()
    assert "prompt_drift/system_prompt_changed" not in found
    assert len(found["prompt_drift/tools_changed"]) == 1


def test_prompt_drift_across_several_runs_compares_each_with_its_previous(sc):
    v1, v2 = sc.prompt("Answer briefly."), sc.prompt("Answer at length.")
    runs = [sc.run("prod") for _ in range(4)]
    for run, prompt in zip(runs, (v1, v1, v2, v2)):
        sc.call(run, system_prompt_sha256=prompt)
        sc.call(run, system_prompt_sha256=prompt)
    [f] = sc.scan(runs)["prompt_drift/system_prompt_changed"]
    assert f.run_id == runs[2] and f.data["previous_run"] == runs[1]
    assert f.data["old_sha256"] == v1 and f.data["new_sha256"] == v2
    assert f.calls[0]["seq"] == min(c["seq"] for c in sc.db.query("SELECT seq FROM calls WHERE run_id = ?", [runs[2]]))


def test_pinned_hash_from_config(sc):
    run = sc.run()
    sc.call(run, system_prompt_sha256=sc.prompt("edited prompt"))
    config = {"model": "gpt-4o", "_system_prompt_sha256": sha("reviewed prompt"),
              "_system_prompt_text": "reviewed prompt"}
    [f] = sc.scan(config=config)["prompt_drift/system_prompt_changed"]
    assert f.severity == "critical" and "+edited prompt" in f.evidence
    config["_system_prompt_sha256"] = sha("edited prompt")
    assert "prompt_drift/system_prompt_changed" not in sc.scan(config=config)


# -- api_latency --------------------------------------------------------------------------------

def test_slow_over_budget_only(sc):
    run = sc.run()
    sc.call(run, latency_ms=31_000.0)
    sc.call(run, latency_ms=29_000.0)
    [f] = sc.scan()["api_latency/slow"]
    assert f.data["calls"] == 1
    assert "api_latency/slow" not in sc.scan(thresholds=Thresholds(latency_ms=40_000))


def test_calls_lost_is_a_finding(sc):
    run = sc.run(calls_lost=3)
    sc.call(run)
    assert sc.scan()["recording/calls_lost"][0].data["calls_lost"] == 3


def test_bypassed_connections_are_a_finding(sc):
    import json

    detail = {"checked": True, "ports": [443, 80, 11434], "interval_ms": 50, "bypasses": [
        {"pid": 4121, "process": "node", "address": "104.18.6.192", "port": 443, "connections": 2},
        {"pid": 4130, "process": "python3", "address": "127.0.0.1", "port": 11434, "connections": 1}]}
    run = sc.run(bypassed_connections=3, bypass_detail=json.dumps(detail))
    sc.call(run)
    [f] = sc.scan()["recording/bypassed"]
    assert f.severity == "high" and f.run_id == run and f.data["bypassed_connections"] == 3
    assert "2 from node (pid 4121) to 104.18.6.192:443" in f.evidence and "polled every 50 ms" in f.evidence
    assert "EnvHttpProxyAgent" in f.fix  # node: its fetch ignores the proxy variables
    assert "Ollama on 127.0.0.1:11434" in f.fix and "NO_PROXY" in f.fix
    assert "--upstream http://127.0.0.1:11434" in f.fix
    # Near misses: checked and clean, and not checked at all.
    clean = sc.run(bypassed_connections=0, bypass_detail=json.dumps({**detail, "bypasses": []}))
    unchecked = sc.run(bypassed_connections=None, bypass_detail=json.dumps({"checked": False, "reason": "macOS"}))
    for other in (clean, unchecked):
        sc.call(other)
        assert "recording/bypassed" not in sc.scan([other])


# -- rules about traffic, recorded through the proxy ----------------------------------------------

def _scan_recorded(recorded) -> dict[str, list]:
    db = recorded.db()
    run_id = recorded.recording.run_id
    cross, previous = peers(db, [run_id])
    out: dict[str, list] = {}
    for f in run_checks(ScanContext(db, [run_id], cross_run_ids=cross, previous_run=previous)):
        out.setdefault(f.rule, []).append(f)
    return out


def test_swallowed_error_vs_recovered_error(recorded, fake_provider_tls):
    import openai

    client = recorded.openai(fake_provider_tls)
    # Recovered: a 429 the SDK retried to success.
    client.chat.completions.create(model="gpt-4o-mini", temperature=0, messages=[{"role": "user", "content": "a"}],
                                   extra_headers={"x-fake": "status=429; retry_after=0.1; fail_times=1"})
    # Swallowed: a 500, no retry, and the agent carries on.
    with pytest.raises(openai.InternalServerError):
        client.with_options(max_retries=0).chat.completions.create(
            model="gpt-4o-mini", temperature=0, messages=[{"role": "user", "content": "b"}],
            extra_headers={"x-fake": "status=500"})
    client.chat.completions.create(model="gpt-4o-mini", temperature=0, messages=[{"role": "user", "content": "c"}])
    found = _scan_recorded(recorded)
    [f] = found["api_latency/swallowed_error"]
    assert f.severity == "critical" and [c["seq"] for c in f.calls] == [3]
    assert found["api_latency/rate_limited"][0].data["calls"] == 1
    assert found["api_latency/retry"][0].data["retries"] == 1


def test_failure_at_the_end_is_not_swallowed(recorded, fake_provider_tls):
    import openai

    client = recorded.openai(fake_provider_tls, max_retries=0)
    client.chat.completions.create(model="gpt-4o-mini", temperature=0, messages=[{"role": "user", "content": "a"}])
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o-mini", temperature=0, messages=[{"role": "user", "content": "b"}],
                                       extra_headers={"x-fake": "status=500"})
    assert "api_latency/swallowed_error" not in _scan_recorded(recorded)  # the agent stopped


def test_truncation_cut_stream_missing_usage_and_implicit_temperature(recorded, fake_provider_tls):
    client = recorded.openai(fake_provider_tls, max_retries=0)
    client.chat.completions.create(model="gpt-4o-mini", temperature=0, max_tokens=5,
                                   messages=[{"role": "user", "content": "long"}], extra_headers={"x-fake": "words=30"})
    client.chat.completions.create(model="gpt-4o-mini", temperature=0, max_tokens=50,
                                   messages=[{"role": "user", "content": "short"}])  # near miss: fits
    stream = client.chat.completions.create(model="gpt-4o-mini", stream=True,
                                            messages=[{"role": "user", "content": "s"}])
    list(stream)
    with pytest.raises(Exception):
        list(client.chat.completions.create(model="gpt-4o-mini", temperature=0, stream=True,
                                            stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": "cut"}],
                                            extra_headers={"x-fake": "cut_after=2"}))
    found = _scan_recorded(recorded)
    [t] = found["token_limit/truncated"]
    assert [c["seq"] for c in t.calls] == [1]
    assert [c["seq"] for c in found["usage/missing"][0].calls] == [3]
    assert [c["seq"] for c in found["temperature_drift/implicit_default"][0].calls] == [3]
    assert [c["seq"] for c in found["api_latency/stream_cut"][0].calls] == [4]
    assert found["usage/wasted"][0].data["tokens"] > 0


def test_inversion_needs_overlap(recorded, fake_provider_tls):
    client = recorded.openai(fake_provider_tls)

    def ask(i, delay):
        client.chat.completions.create(model="gpt-4o-mini", temperature=0,
                                       messages=[{"role": "user", "content": f"p{i}"}],
                                       extra_headers={"x-fake": f"delay={delay}"})

    # Sequential calls, slow then fast: no overlap, so no inversion.
    ask(0, 0.2)
    ask(1, 0)
    assert "race_condition/completion_inversion" not in _scan_recorded(recorded)


def test_inversion_of_overlapping_calls(recorded, fake_provider_tls):
    client = recorded.openai(fake_provider_tls)
    staggered_calls(client, (0.4, 0.05), "q", temperature=0)
    [f] = _scan_recorded(recorded)["race_condition/completion_inversion"]
    assert f.data == {"pairs": 1, "calls": 2}


def test_inversion_pairs_and_the_calls_cited(sc):
    run = sc.run()

    def at(seq, done, start, end):
        return sc.call(run, seq=seq, completion_seq=done, started_at=f"2026-01-01T00:00:{start:04.1f}+00:00",
                       ended_at=end and f"2026-01-01T00:00:{end:04.1f}+00:00")

    at(1, 3, 10.0, 13.0)  # long call: the two sent while it ran both finish first
    at(2, 1, 10.5, 11.0)
    at(3, 2, 11.5, 12.0)
    at(4, 4, 13.0, 14.0)  # starts as 1 ends: no overlap
    at(5, 5, 14.5, None)  # never ended (a crashed recording): overlaps nothing
    at(6, 6, 14.6, 14.8)
    [f] = sc.scan()["race_condition/completion_inversion"]
    assert f.data == {"pairs": 2, "calls": 3}
    assert [c["seq"] for c in f.calls] == [1, 2, 3] and all(c["call_id"] for c in f.calls)
    assert "e.g. call 1 was sent before call 2 but finished after it (completion 3 vs 1)" in f.evidence


@pytest.mark.parametrize("order", [[0, 1, 2], [1, 0, 2]])
def test_tool_result_order(recorded, fake_provider_tls, order):
    client = recorded.openai(fake_provider_tls)
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    messages = [{"role": "user", "content": "use tools"}]
    first = client.chat.completions.create(model="gpt-4o-mini", temperature=0, messages=messages, tools=tools,
                                           extra_headers={"x-fake": "tool_calls=3"})
    calls = first.choices[0].message.tool_calls
    base = messages + [first.choices[0].message.model_dump(exclude_none=True)]
    results = base + [{"role": "tool", "tool_call_id": calls[i].id, "content": "ok"} for i in order]
    client.chat.completions.create(model="gpt-4o-mini", temperature=0, messages=results, tools=tools)
    found = _scan_recorded(recorded).get("race_condition/tool_result_order", [])
    if order == sorted(order):
        assert found == []
    else:
        [f] = found
        assert f.data["issued"] == [c.id for c in calls] and f.data["returned"][:2] == [calls[1].id, calls[0].id]


def test_usage_mismatch_tolerance(sc):
    run = sc.run()
    sc.call(run, input_tokens=100, counted_input_tokens=130, tokenizer="cl100k_base")  # 23% off
    sc.call(run, input_tokens=100, counted_input_tokens=105, tokenizer="cl100k_base")  # 5%: fine
    sc.call(run, input_tokens=100, counted_input_tokens=125, tokenizer="cl100k_base~o200k_base")  # estimate: fine
    sc.call(run, input_tokens=11, counted_input_tokens=7, tokenizer="cl100k_base")  # 36%, but only message framing
    [f] = sc.scan()["usage/mismatch"]
    assert f.data["calls"] == 1


# -- APIs that generate nothing ----------------------------------------------------------------------

def _utility_calls(sc, run, system: str) -> None:
    """A RAG step: embed the query (429, then its retry), count the prompt's tokens, embed in a batch."""
    first = sc.call(run, api="embeddings", model="text-embedding-3-small", temperature=None, status=429,
                    error_type="rate_limit_exceeded", finish_reason="error", retry_after_s=1.0,
                    request_sha256=sha("embed"), counted_input_tokens=40, output_sha256=None)
    sc.call(run, api="embeddings", model="text-embedding-3-small", temperature=None, attempt=2, retry_of=first["id"],
            request_sha256=sha("embed"), input_tokens=40, counted_input_tokens=40, output_sha256=None,
            finish_reason=None)
    # A count of a long conversation, with a system prompt and an output ceiling in the wrapped request.
    sc.call(run, api="countTokens", provider="gemini", model="gemini-2.5-flash", temperature=None, max_tokens=5,
            conversation_id=f"COUNT_{run}", turn=1, input_tokens=1_000_000, counted_input_tokens=990_000,
            system_prompt_sha256=sc.prompt(system), output_sha256=None, finish_reason=None)
    sc.call(run, api="messages.count_tokens", provider="anthropic", model="claude-sonnet-4-6", temperature=None,
            system_prompt_sha256=sc.prompt(system + " (claude)"), output_sha256=None, finish_reason=None)
    sc.call(run, api="batchEmbedContents", provider="gemini", model="text-embedding-004", temperature=None,
            input_tokens=100, counted_input_tokens=50, tokenizer="cl100k_base", output_sha256=None, finish_reason=None)


def test_apis_that_generate_nothing_stay_out_of_the_sampling_conversation_and_prompt_rules(sc):
    _utility_calls(sc, sc.run(label="prod"), "Answer from the documents.")
    _utility_calls(sc, sc.run(label="prod"), "Answer from the documents only.")
    found = sc.scan(config={"model": "gpt-4o", "environments": {"prod": {"temperature": 0, "max_tokens": 100}}})
    excluded = ("temperature_drift", "context_overflow", "prompt_drift", "token_limit")
    assert sorted(rule for rule in found if rule.split("/")[0] in excluded) == []
    # What does apply: failures, retries and the tokens they spent, and usage counts that disagree.
    [limited] = found["api_latency/rate_limited"]
    assert limited.data["calls"] == 1 and limited.calls[0]["model"] == "text-embedding-3-small"
    assert found["api_latency/retry"][0].data == {"retries": 1, "max_attempt": 2}
    assert "usage/wasted" not in found  # the 429 that was retried is not billed: nothing was wasted
    [mismatch] = found["usage/mismatch"]
    assert [c["model"] for c in mismatch.calls] == ["text-embedding-004"]


def test_a_provider_rejecting_an_embedding_input_as_too_long_is_still_reported(sc):
    run = sc.run()
    sc.call(run, api="embeddings", model="text-embedding-3-small", temperature=None, status=400,
            error_type="context_length_exceeded", error_message="This model's maximum context length is 8192 tokens")
    [f] = sc.scan()["context_overflow/exceeded"]
    assert f.calls[0]["model"] == "text-embedding-3-small"


def test_only_billed_calls_count_as_wasted(sc):
    run = sc.run()
    sc.call(run, status=429, error_type="rate_limit_exceeded", input_tokens=None, counted_input_tokens=500)
    sc.call(run, status=None, error_type="upstream_error", input_tokens=None, counted_input_tokens=700)
    sc.call(run, status=500, error_type="server_error", input_tokens=None, counted_input_tokens=300)
    assert "usage/wasted" not in sc.scan()
    sc.call(run, status=200, finish_reason="length", input_tokens=30, output_tokens=10)
    [f] = sc.scan()["usage/wasted"]
    assert f.data["tokens"] == 40 and "bills" in f.evidence


def test_an_empty_run_is_never_the_previous_run_for_drift(sc):
    old, new = sc.prompt("You are a helpful analyst."), sc.prompt("You are a terse analyst.")
    good = sc.run("prod")
    sc.call(good, system_prompt_sha256=old)
    sc.run("prod", status="failed")  # `trace -- nonexistent-cmd`: no calls at all
    sc.run("prod", parent_run_id=good)  # a fork of it: agentprobe's own
    latest = sc.run("prod")
    sc.call(latest, system_prompt_sha256=new)
    [f] = sc.scan([latest])["prompt_drift/system_prompt_changed"]
    assert f.data["previous_run"] == good


def test_agentprobes_own_runs_are_not_environments(sc):
    prod = sc.run("prod")
    sc.call(prod, prompt_sha256=sha("same"), temperature=0.0)
    for label in ("replay", "serve"):
        other = sc.run(label)
        sc.call(other, prompt_sha256=sha("same"), temperature=0.9)
    assert "temperature_drift/env_mismatch" not in sc.scan([prod])


def test_a_cross_run_finding_belongs_to_the_runs_it_compares(sc):
    dev, prod = sc.run("dev"), sc.run("prod")
    sc.call(dev, prompt_sha256=sha("same"), temperature=0.0)
    sc.call(prod, prompt_sha256=sha("same"), temperature=0.7)
    unrelated = sc.run("prod")
    sc.call(unrelated, prompt_sha256=sha("something else"), temperature=0.7)
    assert "temperature_drift/env_mismatch" not in sc.scan([unrelated])
    [f] = sc.scan([prod])["temperature_drift/env_mismatch"]
    assert f.run_id == prod and "sent at temperature" in f.evidence
