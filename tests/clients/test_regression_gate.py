"""The seed's prompt regression suite: `trace --cases` for the old and the new prompt, `diff --max-changed`."""

from __future__ import annotations

import json

import pytest
import sqlite_utils

from proxy_fixtures import run_cli
from test_oneshot import oneshot, varying_provider, write_config  # noqa: F401 - fixture

CASES = [{"id": f"case-{i}", "prompt": f"Classify ticket {i}: my parcel is late"} for i in range(1, 11)]


def write_cases(tmp_path, cases=CASES, name="cases.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(c) + "\n" for c in cases))
    return path


def suite(tmp_path, tls_ca_bundle, provider, config, *args):
    out = oneshot(tmp_path, tls_ca_bundle, provider, "--config", str(config), "--cases",
                  str(write_cases(tmp_path)), *args)
    assert out.returncode == 0, out.stderr
    db = sqlite_utils.Database(tmp_path / "a.db")
    return next(db.query("SELECT id FROM runs ORDER BY id DESC LIMIT 1"))["id"], out


def gate(tmp_path, old, new, *args):
    return run_cli("diff", old, new, "--db", str(tmp_path / "a.db"), *args)


def test_a_prompt_change_that_changes_no_output_passes_the_gate(tmp_path, tls_ca_bundle, varying_provider):
    old_cfg = write_config(tmp_path)
    old, out = suite(tmp_path, tls_ca_bundle, varying_provider, old_cfg)
    assert "[case-1] Fake reply to: Classify ticket 1" in out.stdout and "[case-10]" in out.stdout
    calls = list(sqlite_utils.Database(tmp_path / "a.db").query("SELECT * FROM calls WHERE run_id = ?", [old]))
    assert len(calls) == 10 and len({c["system_prompt_sha256"] for c in calls}) == 1
    new_cfg = tmp_path / "new_config.json"
    new_cfg.write_text(json.dumps({**json.loads(old_cfg.read_text()),
                                   "system_prompt": {"text": "Answer in one short, polite sentence."}}))
    new, _ = suite(tmp_path, tls_ca_bundle, varying_provider, new_cfg)
    r = gate(tmp_path, old, new, "--max-changed", "10%")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "outputs changed: 0.0% (0 of 10 matched call(s))" in r.stdout and "pass" in r.stdout
    assert "prompt_change" in r.stdout  # the first divergence is still shown
    plain = gate(tmp_path, old, new)
    assert plain.returncode == 1  # without the gate, diff says the runs diverge


def test_outputs_that_move_fail_the_gate_with_the_share_and_the_match(tmp_path, tls_ca_bundle, varying_provider):
    config = write_config(tmp_path)
    old, _ = suite(tmp_path, tls_ca_bundle, varying_provider, config)
    new, _ = suite(tmp_path, tls_ca_bundle, varying_provider, config, "--env", "prod")  # temperature 0.9: they vary
    r = gate(tmp_path, old, new, "--max-changed", "10%", "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    result = json.loads(r.stdout)
    o = result["outputs"]
    assert o["matched"] == 10 and o["changed"] > 1 and o["share"] == o["changed"] / 10
    assert 0 < o["changed_mean_match"] < 1 and result["gate"] == {"max_changed": 0.1, "passed": False}
    text = gate(tmp_path, old, new, "--max-changed", "10%")
    assert f"outputs changed: {o['share']:.1%} ({o['changed']} of 10 matched call(s))" in text.stdout
    assert "FAIL" in text.stdout
    assert gate(tmp_path, old, new, "--max-changed", "100%").returncode == 0


@pytest.mark.parametrize("content,message", [
    ('{"id": "a", "prompt": "x"}\n{"id": "b", "prompt": \n', "cases.jsonl:2: not JSON"),
    ('{"id": "a"}\n', "cases.jsonl:1: 'prompt' must be a non-empty string"),
    ('["a"]\n', "cases.jsonl:1: expected a JSON object"),
    ('{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n', "id 'a' appears twice"),
    ("\n\n", "holds no cases"),
])
def test_a_malformed_cases_file_is_one_line(tmp_path, tls_ca_bundle, varying_provider, content, message):
    (tmp_path / "cases.jsonl").write_text(content)
    out = oneshot(tmp_path, tls_ca_bundle, varying_provider, "--config", str(write_config(tmp_path)), "--cases",
                  str(tmp_path / "cases.jsonl"))
    assert out.returncode == 2
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert varying_provider.count() == 0


def test_bad_max_changed_is_one_line(tmp_path):
    r = run_cli("diff", "a", "b", "--max-changed", "lots", "--db", str(tmp_path / "a.db"))
    assert r.returncode == 2 and "--max-changed 'lots'" in r.stderr
