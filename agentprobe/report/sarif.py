"""SARIF 2.1.0, for GitHub code scanning and other static-analysis dashboards."""

from __future__ import annotations

import json

from .. import __version__
from ..checks import Finding

_LEVEL = {"critical": "error", "high": "error", "medium": "warning", "low": "note"}
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def to_sarif(findings: list[Finding], meta: dict) -> str:
    rules = sorted({f.rule for f in findings})
    results = []
    for f in findings:
        locations = [{
            "logicalLocations": [{
                "fullyQualifiedName": f"run/{c.get('run_id')}/call/{c.get('seq')}",
                "name": f"call {c.get('seq')}", "kind": "function",
            }]} for c in f.calls[:10]]
        if not locations and meta.get("config"):
            locations = [{"physicalLocation": {"artifactLocation": {"uri": meta["config"]}}}]
        results.append({
            "ruleId": f.rule,
            "ruleIndex": rules.index(f.rule),
            "level": _LEVEL[f.severity],
            "message": {"text": f"{f.title}. {f.evidence} Fix: {f.fix}"},
            "locations": locations,
            "properties": {"severity": f.severity, "runId": f.run_id, "data": f.data},
        })
    doc = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "agentprobe", "version": __version__,
                "rules": [{"id": r, "name": r.replace("/", "_"),
                           "shortDescription": {"text": r.replace("/", ": ").replace("_", " ")}} for r in rules],
            }},
            "results": results,
        }],
    }
    return json.dumps(doc, indent=2, default=str)
