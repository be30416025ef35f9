"""`diff` on pairs of real runs recorded through the proxy: the right first divergence and class."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest

from proxy_fixtures import Recorded, run_cli

SYSTEM = "You plan short trips. Keep every answer brief."
MODEL = "gpt-4o-mini"


def agent(client, system=SYSTEM, temperature=0.0, second=None, last=None):
    """Three steps: a two-turn conversation, then a separate one-line summary."""
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "Plan a day in Lisbon."}]
    first = client.chat.completions.create(model=MODEL, messages=messages, temperature=temperature)
    messages += [{"role": "assistant", "content": first.choices[0].message.content},
                 {"role": "user", "content": "And the budget?"}]
    client.chat.completions.create(model=MODEL, messages=messages, temperature=temperature,
                                   extra_headers=second or {})
    try:
        client.chat.completions.create(model=MODEL, temperature=temperature, extra_headers=last or {},
                                       messages=[{"role": "system", "content": system},
                                                 {"role": "user", "content": "Summarize in one line."}])
    except openai.APIError:
        pass  # the agent gives up on the summary


@pytest.fixture
def record(tmp_path, tls_ca_bundle, fake_provider_tls):
    """record(**variant) -> run id; every run lands in the same database."""
    def run(max_retries=0, **variant) -> str:
        rec = Recorded(tmp_path, Path(tls_ca_bundle))
        try:
            agent(rec.openai(fake_provider_tls, max_retries=max_retries), **variant)
        finally:
            rec.stop()
        return rec.recording.run_id
    run.db = tmp_path / "agentprobe.db"
    return run


def diff(record, a, b, *extra):
    out = run_cli("diff", a, b, "--db", str(record.db), "--json", *extra)
    assert out.returncode in (0, 1), out.stderr
    return out.returncode, json.loads(out.stdout)


def test_identical_runs(record):
    a, b = record(), record()
    code, result = diff(record, a, b)
    assert code == 0 and result["identical"] and result["divergence"] is None
    assert result["steps"] == {"aligned": 3, "only_a": 0, "only_b": 0}


def test_one_word_system_prompt_edit_is_a_prompt_change_at_the_first_call(record):
    a, b = record(), record(system=SYSTEM.replace("brief", "short"))
    code, result = diff(record, a, b)
    d = result["divergence"]
    assert code == 1 and d["kind"] == "prompt_change" and d["index"] == 0 and d["a"]["seq"] == 1
    [prompt] = [f for f in d["fields"] if f["field"] == "system_prompt"]
    assert "-You plan short trips. Keep every answer brief." in prompt["diff"]
    assert "+You plan short trips. Keep every answer short." in prompt["diff"]
    readable = run_cli("diff", "--run-a", a, "--run-b", b, "--db", str(record.db))
    assert readable.returncode == 1 and "prompt_change" in readable.stdout and "answer short" in readable.stdout


def test_temperature_change_is_a_config_change(record):
    a, b = record(), record(temperature=0.7)
    _, result = diff(record, a, b)
    d = result["divergence"]
    assert d["kind"] == "config_change" and d["index"] == 0
    assert {"field": "temperature", "a": 0.0, "b": 0.7} in d["fields"]


def test_same_request_different_output_is_nondeterministic(record):
    a = record(second={"x-fake": "reply=Around_80_euros."})
    b = record(second={"x-fake": "reply=Roughly_120_euros."})
    _, result = diff(record, a, b)
    d = result["divergence"]
    assert d["kind"] == "nondeterministic_output" and d["index"] == 1 and d["b"]["seq"] == 2
    [output] = [f for f in d["fields"] if f["field"] == "output"]
    assert "80 euros" in output["a"] and "120 euros" in output["b"]
    # What followed: the third step is identical, so nothing else differs.
    assert result["later_differences"] == 0


def test_an_extra_retry_on_one_side_is_an_error_at_that_step(record):
    a = record(max_retries=2)
    b = record(max_retries=2, second={"x-fake": "status=429; retry_after=0; fail_times=1"})
    _, result = diff(record, a, b)
    d = result["divergence"]
    assert d["kind"] == "error" and d["index"] == 1
    assert {"field": "attempts", "a": [200], "b": [429, 200]} in d["fields"]
    assert d["b"]["attempts"] == 2 and result["steps"]["aligned"] == 3  # the retry did not shift the alignment
    effect = result["effect"]["after"]
    assert effect["b"]["calls"] == effect["a"]["calls"] + 1 and effect["b"]["errors"] == 1


def test_one_side_ending_in_a_429(record):
    a, b = record(), record(last={"x-fake": "status=429; retry_after=0"})
    _, result = diff(record, a, b)
    d = result["divergence"]
    assert d["kind"] == "error" and d["index"] == 2
    assert {"field": "status", "a": 200, "b": 429} in d["fields"]
    before = result["effect"]["before"]
    assert before["a"]["calls"] == before["b"]["calls"] == 2 and before["a"]["errors"] == before["b"]["errors"] == 0
    assert result["effect"]["after"]["b"]["errors"] == 1 and result["effect"]["after"]["a"]["errors"] == 0


def test_diff_reads_trace_files_and_matches_the_database(record, tmp_path):
    a, b = record(), record(temperature=0.7)
    assert run_cli("export", a, "--db", str(record.db), "-o", str(tmp_path / "a.json")).returncode == 0
    code, from_file = diff(record, str(tmp_path / "a.json"), b)
    _, from_db = diff(record, a, b)
    assert code == 1 and from_file["divergence"] == from_db["divergence"]


@pytest.mark.parametrize("args, message", [
    (["NOSUCHRUN", "latest"], "no run"),
    (["only-one"], "needs two runs"),
    (["{tmp}/missing.json", "latest"], "does not exist"),
])
def test_bad_diff_input(record, tmp_path, args, message):
    record()
    before = record.db.read_bytes()
    out = run_cli("diff", *[a.format(tmp=tmp_path) for a in args], "--db", str(record.db))
    assert out.returncode == 2 and message in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert record.db.read_bytes() == before


def test_a_prompt_change_without_trailing_newlines_diffs_line_by_line():
    from agentprobe.diff.compare import _text_diff
    from agentprobe.util.textdiff import unified

    old, new = "You are a helpful assistant.", "You are a terse assistant."  # no trailing newline
    for text in (_text_diff(old, new, "a", "b"), unified(old, new, "a", "b")):
        lines = text.splitlines()
        assert "-You are a helpful assistant." in lines and "+You are a terse assistant." in lines, text
        assert not any("helpful" in line and "terse" in line for line in lines)
