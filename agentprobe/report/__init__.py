"""Renderings of scan findings: console (or its plain text for a file), JSON, SARIF 2.1.0, JUnit XML, and the analyst XML."""

from __future__ import annotations

import json

from ..checks import Finding


def to_json(findings: list[Finding], meta: dict) -> str:
    return json.dumps({**meta, "findings": [f.to_dict() for f in findings]}, indent=2, default=str)


def render(fmt: str, findings: list[Finding], meta: dict) -> str:
    if fmt == "table":
        import io

        from rich.console import Console

        from .console import print_findings

        buffer = io.StringIO()
        print_findings(findings, meta, Console(file=buffer, width=120, color_system=None))
        return buffer.getvalue().rstrip("\n")
    if fmt == "json":
        return to_json(findings, meta)
    if fmt == "sarif":
        from .sarif import to_sarif

        return to_sarif(findings, meta)
    if fmt == "junit":
        from .junit import to_junit

        return to_junit(findings, meta)
    if fmt == "xml":
        from .analysis_xml import to_analysis_xml

        return to_analysis_xml(findings, meta)
    raise ValueError(fmt)
