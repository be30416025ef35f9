"""`agentprobe analyze`: the prompt with and without measured evidence, and answers checked against the
structure, with the fake provider standing in for the model."""

from __future__ import annotations

import base64
import json
import re
import xml.etree.ElementTree as ET

import openai
import pytest

from agentprobe.analyze import PROMPT_VERSION, InvalidAnswer, parse_answer, render
from agentprobe.analyze.render import NO_EVIDENCE, template
from agentprobe.capture import tokens
from agentprobe.checks import MODES

from proxy_fixtures import run_cli

ARCH = "# Report agent\nA planner on gpt-4o-mini fans out tool calls in parallel and writes a report.\n"
SCENARIO = "In production the report stops mid-sentence and one section is silently missing.\n"
FINDINGS = {"token_limit": "high", "api_latency": "critical"}


def answer_xml(findings=FINDINGS, rename: dict | None = None, tail: str = "") -> str:
    """A well-formed analysis on one line: the fake provider joins reply words with single spaces."""
    parts = ["<analysis>"]
    for mode in MODES:
        name = (rename or {}).get(mode, mode)
        if mode in findings:
            parts.append(
                f'<failure_mode name="{name}" present="true"><evidence>[{findings[mode]}] seen in run 1 call 2 &'
                f' more</evidence><severity>{findings[mode]}</severity><reproduction_steps><step order="1">Replay'
                f' call 2.</step><step order="2">Check the finish reason.</step></reproduction_steps><fix_strategy>'
                f"Handle {mode} explicitly.</fix_strategy></failure_mode>")
        else:
            parts.append(f'<failure_mode name="{name}" present="false"><evidence>Nothing points to it.</evidence>'
                         "<severity>low</severity><reproduction_steps></reproduction_steps><fix_strategy>"
                         "</fix_strategy></failure_mode>")
    parts.append("<summary>The agent swallowed a 429 and used a cut answer.</summary><priority_fixes>"
                 '<fix order="1">api_latency: halt on persistent errors.</fix><fix order="2">token_limit: raise'
                 " max_tokens and check finish_reason.</fix></priority_fixes></analysis>")
    return "".join(parts) + tail


def scripted(text: str) -> str:
    """A fake-provider directive, hidden in the scenario, that makes the "model" answer `text`."""
    return f"[fake reply_b64={base64.urlsafe_b64encode(text.encode()).decode().rstrip('=')}]"


@pytest.fixture
def inputs(tmp_path):
    (tmp_path / "arch.md").write_text(ARCH)

    def write(directive: str = "") -> list[str]:
        (tmp_path / "scenario.md").write_text(SCENARIO + directive + "\n")
        return ["--architecture", str(tmp_path / "arch.md"), "--scenario", str(tmp_path / "scenario.md"),
                "--db", str(tmp_path / "ap.db")]

    return write


def send_args(provider, *extra: str) -> list[str]:
    return ["--model", "gpt-4o-mini", "--base-url", f"{provider.url}/v1", "--max-retries", "0", *extra]


# -- the template -----------------------------------------------------------------------------


def test_template_renders_without_evidence(inputs):
    prompt = render(ARCH, SCENARIO + "Literal {{evidence}} stays literal.")
    assert "{{" not in prompt.replace("Literal {{evidence}}", "") and "<!--" not in prompt
    assert ARCH.strip() in prompt and "Literal {{evidence}} stays literal." in prompt
    assert NO_EVIDENCE in prompt
    for i, mode in enumerate(MODES, 1):
        assert f"{i}. {mode}:" in prompt
    # The structure the model is asked for is itself the XML the validator reads.
    skeleton = re.search(r"<analysis>.*</analysis>", template(), re.DOTALL).group(0)
    root = ET.fromstring(skeleton)
    mode = root.find("failure_mode")
    assert [c.tag for c in mode] == ["evidence", "severity", "reproduction_steps", "fix_strategy"]
    assert root.find("priority_fixes/fix").get("order") == "1" and root.find("summary") is not None
    assert PROMPT_VERSION == "analyst-v1"

    r = run_cli("analyze", *inputs(), "--print")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == render(ARCH, SCENARIO)


def test_evidence_from_a_recorded_run(recorded, fake_provider_tls, inputs, tmp_path):
    client = recorded.openai(fake_provider_tls, max_retries=0)
    messages = [{"role": "system", "content": "You write reports."}, {"role": "user", "content": "Write it"}]
    client.chat.completions.create(model="gpt-4o-mini", max_tokens=5, messages=messages,
                                   extra_headers={"x-fake": "words=30"})
    more = messages + [{"role": "assistant", "content": "The report"}, {"role": "user", "content": "go on"}]
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4o-mini", temperature=0.7, messages=more,
                                       extra_headers={"x-fake": "status=429 retry_after=3"})
    client.chat.completions.create(model="gpt-4o-mini", temperature=0.7, messages=more + [
        {"role": "assistant", "content": "ok"}, {"role": "user", "content": "and the last section"}])
    recorded.stop()
    args = [*inputs(), "--db", str(recorded.db_path), "--run", "latest"]

    r = run_cli("analyze", *args, "--print")
    assert r.returncode == 0, r.stderr
    evidence = re.search(r"<measured_evidence>.*</measured_evidence>", r.stdout, re.DOTALL).group(0)
    assert "None: no recorded run" not in r.stdout and "Trimmed" not in evidence
    for fact in ("[high] token_limit/truncated", "[critical] api_latency/swallowed_error", "HTTP 429 rate_limit_exceeded x1",
                 "retry-after up to 3s", "temperature 0.7 (2), not sent (1)", "max_tokens not sent (2), 5 (1)",
                 "input tokens per turn", "calls ran one at a time", "[low] usage/wasted"):
        assert fact in evidence, fact
    assert "evidence" in r.stderr and "of 4,000 tokens" in r.stderr

    # A tight budget drops the least severe lines first, says so, and keeps the critical finding.
    r = run_cli("analyze", *args, "--print", "--budget", "400")
    assert r.returncode == 0, r.stderr
    tight = re.search(r"<measured_evidence>.*</measured_evidence>", r.stdout, re.DOTALL).group(0)
    assert tokens.count(tight)[0] <= 400
    assert "Trimmed to fit 400 tokens, least severe first" in tight
    assert "[critical] api_latency/swallowed_error" in tight and "usage/wasted" not in tight

    # A config adds its settings and the findings `scan --config` would report.
    config = tmp_path / "agent_config.json"
    config.write_text(json.dumps({"model": "gpt-4o-mini", "environments": {"dev": {"temperature": 0},
                                                                          "prod": {"temperature": 0.7}}}))
    r = run_cli("analyze", *inputs(), "--config", str(config), "--print")
    assert r.returncode == 0, r.stderr
    assert "temperature_drift/env_mismatch" in r.stdout and "prod: temperature 0.7" in r.stdout
    assert "run(s)" not in r.stdout  # no database was asked for


# -- answers ----------------------------------------------------------------------------------


def test_valid_answer_from_the_fake_provider(fake_provider, inputs):
    r = run_cli("analyze", *inputs(scripted(answer_xml())), *send_args(fake_provider), "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert [m["name"] for m in data["failure_modes"]] == list(MODES) and data["not_assessed"] == []
    present = {m["name"]: m["severity"] for m in data["failure_modes"] if m["present"]}
    assert present == FINDINGS
    assert data["priority_fixes"][0].startswith("api_latency") and data["prompt_version"] == PROMPT_VERSION
    assert data["failure_modes"][2]["steps"] == ["Replay call 2.", "Check the finish reason."]
    sent = json.loads(fake_provider.requests[0]["body"])
    assert "<failure_scenario>" in sent["messages"][0]["content"] and "temperature" not in sent

    table = run_cli("analyze", *inputs(scripted(answer_xml())), *send_args(fake_provider))
    assert table.returncode == 0, table.stderr
    assert "2 of 6 failure modes present" in table.stdout and "CRITICAL" in table.stdout
    assert table.stdout.index("api_latency") < table.stdout.index("token_limit")  # worst first
    assert "Priority fixes" in table.stdout

    anthropic = run_cli("analyze", *inputs(scripted(answer_xml())), "--provider", "anthropic", "--model",
                        "claude-sonnet-4-6", "--base-url", fake_provider.url, "--max-retries", "0", "--json")
    assert anthropic.returncode == 0, anthropic.stderr
    assert json.loads(anthropic.stdout)["provider"] == "anthropic"


def test_unknown_mode_name_is_rejected_and_kept(fake_provider, inputs, tmp_path):
    bad = answer_xml(rename={"race_condition": "hallucination"})
    r = run_cli("analyze", *inputs(scripted(bad)), *send_args(fake_provider))
    assert r.returncode == 1 and r.stdout == ""
    line = r.stderr.strip()
    assert "\n" not in line and "'hallucination'" in line and "not one of the six modes" in line
    saved = list(tmp_path.glob("analysis-*.raw.txt"))  # beside the --db
    assert len(saved) == 1 and saved[0].read_text() == bad and str(saved[0]) in line


@pytest.mark.parametrize("how", ["max_tokens", "cut_xml"])
def test_truncated_answer(fake_provider, inputs, tmp_path, how):
    if how == "max_tokens":  # the fake stops at max_tokens words with finish_reason length
        r = run_cli("analyze", *inputs(scripted(answer_xml())), *send_args(fake_provider, "--max-tokens", "40"))
        assert r.returncode == 1 and "finish_reason length" in r.stderr
    else:
        cut = answer_xml()[:900]
        raw = tmp_path / "kept" / "answer.txt"
        r = run_cli("analyze", *inputs(scripted(cut)), *send_args(fake_provider, "--save-raw", str(raw)))
        assert r.returncode == 1 and "stops before </analysis>" in r.stderr
        assert raw.read_text() == cut and str(raw) in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_rate_limit_is_one_line_exit_2(fake_provider, inputs):
    r = run_cli("analyze", *inputs("[fake status=429 retry_after=0]"),
                *send_args(fake_provider)[:-2], "--max-retries", "1")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "HTTP 429" in r.stderr and "after 2 attempt(s)" in r.stderr
    assert fake_provider.count() == 2  # the SDK's own retry happened first


def test_missing_key_names_the_variable(inputs):
    for provider, var in (("openai", "OPENAI_API_KEY"), ("anthropic", "ANTHROPIC_API_KEY")):
        r = run_cli("analyze", *inputs(), "--provider", provider, "--model", "m", env={var: ""})
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and var in r.stderr, r.stderr


def test_answer_from_elsewhere(tmp_path):
    saved = tmp_path / "answer.xml"
    saved.write_text("Here is my analysis:\n```xml\n" + answer_xml() + "\n```\n")
    r = run_cli("analyze", "--answer", str(saved), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["summary"].startswith("The agent swallowed")


# -- the validator ----------------------------------------------------------------------------


def test_validator_forgives_wrapping_but_not_meaning():
    analysis = parse_answer("Sure!\n```xml\n" + answer_xml(findings={"token_limit": "HIGH "}) + "\n```")
    assert analysis.present[0].severity == "high"
    partial = answer_xml().replace('<failure_mode name="prompt_drift" present="false"><evidence>Nothing points'
                                   " to it.</evidence><severity>low</severity><reproduction_steps>"
                                   "</reproduction_steps><fix_strategy></fix_strategy></failure_mode>", "")
    assert parse_answer(partial).not_assessed == ["prompt_drift"]
    assert parse_answer(answer_xml().replace("seen in run 1", "at < 75% of the window in run 1"))

    broken = {
        "unknown severity": (answer_xml().replace("<severity>high</severity>", "<severity>urgent</severity>"),
                             "severity 'urgent'"),
        "present maybe": (answer_xml().replace('present="true"', 'present="maybe"', 1), "present='maybe'"),
        "steps out of order": (answer_xml().replace('<step order="2">', '<step order="3">', 1), "not 1..2"),
        "duplicate mode": (answer_xml(rename={"prompt_drift": "token_limit"}), "more than once"),
        "no summary": (answer_xml().replace("<summary>The agent swallowed a 429 and used a cut answer.</summary>",
                                            ""), "<summary>"),
        "fix without order": (answer_xml().replace('<fix order="2">', "<fix>"), "order=''"),
        "present without steps": (answer_xml().replace('<step order="1">Replay call 2.</step><step order="2">'
                                                       "Check the finish reason.</step>", ""), "no reproduction_steps"),
        "not xml": ("<analysis><failure_mode></analysis>", "does not parse"),
        "no analysis": ("I could not decide.", "no <analysis>"),
    }
    for case, (text, expected) in broken.items():
        with pytest.raises(InvalidAnswer, match=re.escape(expected)):
            parse_answer(text)
        assert case


def test_scripted_reply_survives_the_directive_parser():
    from agentprobe.fakeprovider.directives import DirectiveError, parse

    text = '<a b="c_d">x; y] z</a>'
    assert parse(None, f"go {scripted(text)}").reply == text
    with pytest.raises(DirectiveError):
        parse("reply_b64=***", "")


def test_evidence_says_when_connections_went_around_the_proxy(tmp_path):
    from agentprobe.analyze.evidence import run_stats
    from agentprobe.store.db import open_db

    db = open_db(tmp_path / "a.db", create=True)
    db["runs"].insert({"id": "01BYPASSED", "status": "completed", "calls_lost": 0, "bypassed_connections": 2})
    db["runs"].insert({"id": "01CLEAN", "status": "completed", "calls_lost": 0, "bypassed_connections": 0})
    assert "2 connection(s) of the command went around the proxy" in run_stats(db, "01BYPASSED", {})[0].text
    assert "around the proxy" not in run_stats(db, "01CLEAN", {})[0].text
