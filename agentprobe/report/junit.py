"""JUnit XML: one testsuite per failure mode, one testcase per rule, a failure per finding."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from ..checks import MODES, Finding

# Rules each mode is known to check, so a clean scan still shows what passed.
KNOWN_RULES = {
    "temperature_drift": ["implicit_default", "env_mismatch", "nondeterministic_output"],
    "context_overflow": ["near_limit", "exceeded"],
    "token_limit": ["truncated"],
    "prompt_drift": ["system_prompt_changed", "tools_changed"],
    "api_latency": ["swallowed_error", "rate_limited", "retry", "stream_cut", "slow"],
    "race_condition": ["completion_inversion", "tool_result_order"],
    "usage": ["mismatch", "missing", "wasted"],
    "recording": ["calls_lost", "bypassed"],
}


def to_junit(findings: list[Finding], meta: dict) -> str:
    root = ET.Element("testsuites", name="agentprobe scan")
    for mode in [*MODES, "usage", "recording"]:
        rules = list(KNOWN_RULES[mode]) + sorted({f.rule.split("/", 1)[1] for f in findings if f.mode == mode}
                                                 - set(KNOWN_RULES[mode]))
        suite = ET.SubElement(root, "testsuite", name=mode)
        failures = 0
        for rule in rules:
            case = ET.SubElement(suite, "testcase", classname=f"agentprobe.{mode}", name=rule)
            for f in (f for f in findings if f.rule == f"{mode}/{rule}"):
                failures += 1
                fail = ET.SubElement(case, "failure", message=f.title, type=f.severity)
                fail.text = f"{f.evidence}\nfix: {f.fix}"
        suite.set("tests", str(len(rules)))
        suite.set("failures", str(failures))
        suite.set("errors", "0")
    root.set("tests", str(sum(int(s.get("tests")) for s in root)))
    root.set("failures", str(sum(int(s.get("failures")) for s in root)))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True)
