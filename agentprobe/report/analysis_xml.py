"""The analyst's XML structure (<analysis>, one <failure_mode> per mode), filled from measured evidence."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from ..checks import MODES, Finding, severity_rank

# How to make each mode show up again on purpose, in the user's own setup.
REPRODUCE = {
    "temperature_drift": ["Send the flagged prompt several times at the production temperature.",
                          "Compare the output hashes (agentprobe replay RUN --times 5)."],
    "context_overflow": ["Replay the flagged conversation to the turn named in the evidence.",
                         "Keep adding turns and watch input tokens against the window (agentprobe calls --json)."],
    "token_limit": ["Resend the flagged request with the same max_tokens.",
                    "Check that finish_reason is length / max_tokens and the answer ends mid-way."],
    "prompt_drift": ["Record one run with each prompt version under the same inputs.",
                     "Run agentprobe diff on the two runs to see the first divergence."],
    "api_latency": ["Point the agent at a provider that returns the recorded error (429/5xx or a cut stream).",
                    "Watch whether the agent stops, retries to success, or carries on without the answer."],
    "race_condition": ["Run the parallel step with answers delayed in reverse order.",
                       "Check whether results are matched to calls by arrival or by call index."],
}


def to_analysis_xml(findings: list[Finding], meta: dict) -> str:
    root = ET.Element("analysis")
    for mode in MODES:
        mine = [f for f in findings if f.mode == mode]
        node = ET.SubElement(root, "failure_mode", name=mode, present="true" if mine else "false")
        ET.SubElement(node, "evidence").text = (
            "\n".join(f"[{f.rule}] {f.title}: {f.evidence}" for f in mine) if mine
            else "No recorded call or config setting showed this failure mode.")
        worst = max(mine, key=lambda f: severity_rank(f.severity)) if mine else None
        ET.SubElement(node, "severity").text = worst.severity if worst else "low"
        steps = ET.SubElement(node, "reproduction_steps")
        for i, step in enumerate(REPRODUCE[mode] if mine else [], 1):
            ET.SubElement(steps, "step", order=str(i)).text = step
        ET.SubElement(node, "fix_strategy").text = (
            " ".join(dict.fromkeys(f.fix for f in mine)) if mine else "Nothing to fix for this mode.")
    present = [m for m in MODES if any(f.mode == m for f in findings)]
    ET.SubElement(root, "summary").text = (
        f"{len(findings)} finding(s) across {len(present)} of 6 failure modes"
        + (f" ({', '.join(present)})" if present else "") + f" in {', '.join(meta.get('runs') or ['the config'])}.")
    fixes = ET.SubElement(root, "priority_fixes")
    ranked = sorted(findings, key=lambda f: -severity_rank(f.severity))
    for i, fix in enumerate(dict.fromkeys(f"[{f.severity}] {f.rule}: {f.fix}" for f in ranked), 1):
        ET.SubElement(fixes, "fix", order=str(i)).text = fix
    ET.indent(root)
    return ET.tostring(root, encoding="unicode")
