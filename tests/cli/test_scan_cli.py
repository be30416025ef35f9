"""`agentprobe scan` as a CI job runs it: formats, exit codes, configs, bad input."""

from __future__ import annotations

import hashlib
import json
import sys
import textwrap
import xml.etree.ElementTree as ET

import jsonschema
import pytest

from proxy_fixtures import run_cli

AGENT = textwrap.dedent(
    """
    import os, openai
    c = openai.OpenAI(base_url=os.environ["FAKE_URL"] + "/v1", api_key="sk-scan-0123456789abcdef", max_retries=0)
    system = os.environ.get("SYSTEM", "You are terse.")
    c.chat.completions.create(model="gpt-4o-mini", temperature=float(os.environ.get("TEMP", "0")), max_tokens=5,
                              messages=[{"role": "system", "content": system}, {"role": "user", "content": "Explain"}],
                              extra_headers={"x-fake": "words=30"})
    """
)
# The parts of SARIF 2.1.0 that consumers (GitHub code scanning) require.
SARIF_SUBSET = {
    "type": "object", "required": ["version", "$schema", "runs"],
    "properties": {
        "version": {"const": "2.1.0"},
        "runs": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["tool", "results"],
            "properties": {
                "tool": {"type": "object", "required": ["driver"], "properties": {"driver": {
                    "type": "object", "required": ["name", "rules"],
                    "properties": {"rules": {"type": "array", "items": {"type": "object", "required": ["id"]}}}}}},
                "results": {"type": "array", "items": {
                    "type": "object", "required": ["ruleId", "level", "message"],
                    "properties": {"level": {"enum": ["none", "note", "warning", "error"]},
                                   "message": {"type": "object", "required": ["text"]}}}},
            }}},
    },
}


@pytest.fixture
def traced(tmp_path, tls_ca_bundle, fake_provider_tls):
    (tmp_path / "agent.py").write_text(AGENT)
    env = {"FAKE_URL": fake_provider_tls.url, "AGENTPROBE_DB": str(tmp_path / "ap.db"),
           "AGENTPROBE_CONFDIR": str(tmp_path / "conf")}

    def run(label="dev", **extra):
        r = run_cli("trace", "--label", label, "--upstream-ca", tls_ca_bundle, "--", sys.executable,
                    str(tmp_path / "agent.py"), env={**env, **extra})
        assert r.returncode == 0, r.stderr
        return json.loads(run_cli("runs", "--json", env=env).stdout)[0]["id"]

    return run, env, tmp_path


def test_formats_and_fail_on(traced):
    run, env, tmp = traced
    run_id = run()
    table = run_cli("scan", env=env)
    assert table.returncode == 0 and "token_limit/truncated" in table.stdout and "fix:" in table.stdout
    assert run_cli("scan", "--fail-on", "high", env=env).returncode == 1  # truncation is high
    assert run_cli("scan", "--fail-on", "critical", env=env).returncode == 0
    data = json.loads(run_cli("scan", "--format", "json", env=env).stdout)
    assert data["runs"] == [run_id] and any(f["rule"] == "token_limit/truncated" for f in data["findings"])
    sarif = json.loads(run_cli("scan", "--format", "sarif", env=env).stdout)
    jsonschema.validate(sarif, SARIF_SUBSET)
    # And the typed SARIF 2.1.0 object model: levels, locations and rule references as the standard defines them.
    from sarif_pydantic import Sarif

    typed = Sarif.model_validate(sarif)
    assert typed.version == "2.1.0" and len(typed.runs[0].results) == len(data["findings"])
    rule_ids = [r.id for r in typed.runs[0].tool.driver.rules]
    assert all(r.rule_id in rule_ids and r.message.text for r in typed.runs[0].results)
    assert "token_limit/truncated" in rule_ids
    junit = ET.fromstring(run_cli("scan", "--format", "junit", env=env).stdout)
    suites = {s.get("name"): s for s in junit}
    assert int(suites["token_limit"].get("failures")) == 1 and int(suites["race_condition"].get("failures")) == 0
    analysis = ET.fromstring(run_cli("scan", "--format", "xml", env=env).stdout)
    modes = {m.get("name"): m for m in analysis.findall("failure_mode")}
    assert list(modes) == ["temperature_drift", "context_overflow", "token_limit", "prompt_drift", "api_latency",
                           "race_condition"]
    assert modes["token_limit"].get("present") == "true" and modes["race_condition"].get("present") == "false"
    assert modes["token_limit"].find("severity").text == "high"
    assert modes["token_limit"].find("reproduction_steps/step").get("order") == "1"
    assert analysis.find("priority_fixes/fix").get("order") == "1" and analysis.find("summary").text
    out = tmp / "report.sarif"
    assert run_cli("scan", "--format", "sarif", "-o", str(out), env=env).returncode == 0
    assert json.loads(out.read_text())["version"] == "2.1.0"


def test_cross_run_rules_by_label(traced):
    run, env, _ = traced
    run(label="dev", TEMP="0")
    run(label="prod", TEMP="0.7", SYSTEM="You are terse and formal.")
    data = json.loads(run_cli("scan", "--format", "json", env=env).stdout)
    rules = {f["rule"]: f for f in data["findings"]}
    assert rules["temperature_drift/env_mismatch"]["data"]["temperatures"] == {"dev": "0.0", "prod": "0.7"}
    assert "+You are terse and formal." in rules["prompt_drift/system_prompt_changed"]["evidence"]
    assert json.loads(run_cli("scan", "--label", "dev", "--format", "json", env=env).stdout)["runs"]
    assert len(json.loads(run_cli("scan", "--all", "--format", "json", env=env).stdout)["runs"]) == 2


def _config(tmp, **fields):
    cfg = {"model": "gpt-4o-mini", "provider": "openai",
           "environments": {"dev": {"temperature": 0, "max_tokens": 500}, "prod": {"temperature": 0, "max_tokens": 500}},
           "system_prompt": {"text": "You are terse.", "sha256": hashlib.sha256(b"You are terse.").hexdigest()},
           "retries": {"max": 2}, "timeouts": {"request_s": 30}, "halt_on_error": True, **fields}
    path = tmp / "agent_config.json"
    path.write_text(json.dumps(cfg))
    return path


def test_config_alone_needs_no_database(tmp_path):
    clean = _config(tmp_path)
    r = run_cli("scan", "--config", str(clean), "--format", "json", "--db", str(tmp_path / "none.db"))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["findings"] == []
    risky = _config(tmp_path, environments={"dev": {"temperature": 0}, "prod": {"temperature": 0.7}},
                    parallel_tool_calls=True, halt_on_error=False, retries={"max": 0})
    rules = {f["rule"] for f in json.loads(run_cli("scan", "--config", str(risky), "--format", "json").stdout)["findings"]}
    assert {"temperature_drift/env_mismatch", "race_condition/tool_result_order",
            "api_latency/swallowed_error"} <= rules
    assert run_cli("scan", "--config", str(risky), "--fail-on", "high").returncode == 1


def test_run_checked_against_config(traced):
    run, env, tmp = traced
    run_id = run(label="prod", TEMP="0.7")
    cfg = _config(tmp)
    data = json.loads(run_cli("scan", "--config", str(cfg), "--run", run_id, "--format", "json", env=env).stdout)
    mismatch = [f for f in data["findings"] if f["rule"] == "temperature_drift/env_mismatch"]
    assert mismatch and mismatch[0]["data"] == {"field": "temperature", "pinned": 0, "sent": ["0.7"]}


@pytest.mark.parametrize("content,needle", [
    ("{not json", "is not valid JSON"),
    ('{"provider": "openai"}', "'model' is a required property"),
    ('{"model": "m", "environments": {"prod": {"temperature": "hot"}}}', "field environments/prod/temperature"),
    ('{"model": "m", "colour": 1}', "Additional properties"),
])
def test_bad_config_is_one_line(tmp_path, content, needle):
    path = tmp_path / "c.json"
    path.write_text(content)
    r = run_cli("scan", "--config", str(path))
    assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_missing_config_and_unknown_label(tmp_path):
    r = run_cli("scan", "--config", str(tmp_path / "nope.json"))
    assert r.returncode == 2 and "does not exist" in r.stderr
    from agentprobe.store.db import open_db

    open_db(tmp_path / "ap.db", create=True)
    r = run_cli("scan", "--label", "staging", "--db", str(tmp_path / "ap.db"))
    assert r.returncode == 2 and "no runs labelled" in r.stderr


@pytest.mark.parametrize("fmt, as_json, output, expected", [
    (None, False, None, "table"), ("sarif", False, "x.txt", "sarif"), (None, True, None, "json"),
    (None, False, "t.txt", "table"), (None, False, "a.sarif", "sarif"), (None, False, "a.json", "json"),
    (None, False, "junit-report.xml", "junit"), (None, False, "analysis.xml", "xml"), ("json", True, None, "json"),
])
def test_the_format_follows_format_then_json_then_the_file_name(fmt, as_json, output, expected):
    from pathlib import Path

    from agentprobe.cli.scan import output_format

    assert output_format(fmt, as_json, Path(output) if output else None) == expected


def test_json_and_another_format_conflict():
    from agentprobe.cli.errors import UserError
    from agentprobe.cli.scan import output_format

    with pytest.raises(UserError, match="two formats"):
        output_format("sarif", True, None)
