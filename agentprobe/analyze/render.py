"""The analyst prompt: a versioned template shipped in the package, filled in one pass."""

from __future__ import annotations

import re
from importlib import resources

PROMPT_VERSION = "analyst-v1"
TEMPLATE = "prompt_v1.md"
PLACEHOLDERS = ("architecture", "scenario", "evidence")

_HEADER = re.compile(r"\A\s*<!--.*?-->\s*", re.DOTALL)
_SLOT = re.compile(r"\{\{(\w+)\}\}")

NO_EVIDENCE = (
    "<measured_evidence>\n"
    "None: no recorded run or agent config was supplied, so every judgement rests on the architecture"
    " and the scenario alone. Mark such conclusions as inferred.\n"
    "</measured_evidence>"
)


def template() -> str:
    """The template as sent, minus its maintainer comment."""
    text = resources.files(__package__).joinpath(TEMPLATE).read_text(encoding="utf-8")
    return _HEADER.sub("", text, count=1).rstrip() + "\n"


def render(architecture: str, scenario: str, evidence: str | None = None) -> str:
    values = {"architecture": architecture.strip(), "scenario": scenario.strip(),
              "evidence": (evidence or NO_EVIDENCE).strip()}

    def fill(match: re.Match) -> str:
        name = match.group(1)
        if name not in values:
            raise KeyError(f"{TEMPLATE} has an unknown placeholder {{{{{name}}}}}")
        return values[name]

    # One pass, so a user's text that happens to contain "{{evidence}}" is never expanded.
    return _SLOT.sub(fill, template()).rstrip()
