"""The README's scan table names every rule the checks can report, so a new rule is never undocumented."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _rules_in_checks() -> set[str]:
    found = set()
    for source in (ROOT / "agentprobe" / "checks").glob("*.py"):
        found |= set(re.findall(r'"((?:[a-z_]+)/(?:[a-z_]+))"', source.read_text()))
    return {r for r in found if r.split("/")[0] in {
        "temperature_drift", "context_overflow", "token_limit", "prompt_drift", "api_latency", "race_condition",
        "usage", "recording"}}


def test_every_rule_is_in_the_readme_table():
    readme = (ROOT / "README.md").read_text()
    table = [line for line in readme.splitlines() if line.startswith("| ")]
    rules = _rules_in_checks()
    assert len(rules) >= 25  # the search above still finds the rules
    missing = []
    for rule in sorted(rules):
        mode, name = rule.split("/")
        rows = [row for row in table if row.split("|")[1].strip().split(" ")[0] in (mode, mode.split("_")[0])
                or (mode in ("usage", "recording") and row.startswith("| usage / recording"))]
        if not any(f"`{name}`" in row for row in rows):
            missing.append(rule)
    assert missing == [], f"rules missing from the README's scan table: {missing}"
