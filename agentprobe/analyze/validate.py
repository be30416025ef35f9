"""Check a model's answer against the analysis structure the prompt asks for.

Models wrap XML in prose or code fences and write bare "&" or "< 75%" in text; those are
forgiven. Anything that changes the meaning is not: an unknown mode name, a severity outside
the four, steps or fixes that are not numbered 1..n, an answer cut off before </analysis>.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from typing import Any

from ..checks import MODES, SEVERITIES

_START = re.compile(r"<analysis[\s>]")
_END = "</analysis>"
_BARE_AMP = re.compile(r"&(?!(?:amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);)")
_BARE_LT = re.compile(r"<(?![A-Za-z_/!?])")
MAX_PROBLEMS = 3  # shown on the one error line; the rest are counted


class InvalidAnswer(Exception):
    """The answer does not follow the structure; the message says where, in one line."""


@dataclass
class Verdict:
    name: str
    present: bool
    severity: str | None
    evidence: str
    steps: list[str]
    fix_strategy: str


@dataclass
class Analysis:
    modes: list[Verdict]
    summary: str
    priority_fixes: list[str]
    not_assessed: list[str] = field(default_factory=list)  # modes the answer left out

    @property
    def present(self) -> list[Verdict]:
        return [v for v in self.modes if v.present]

    def to_dict(self) -> dict[str, Any]:
        return {"failure_modes": [asdict(v) for v in self.modes], "summary": self.summary,
                "priority_fixes": self.priority_fixes, "not_assessed": self.not_assessed}


def _text(node: ET.Element | None) -> str:
    return " ".join("".join(node.itertext()).split()) if node is not None else ""


def _numbered(parent: ET.Element | None, tag: str, where: str, problems: list[str]) -> list[str]:
    """The children `tag` of `parent`, in their `order`, which must run 1..n."""
    if parent is None:
        return []
    children = parent.findall(tag)
    orders = []
    for child in children:
        raw = (child.get("order") or "").strip()
        if not raw.isdigit():
            problems.append(f"{where}: a <{tag}> has order={raw!r}, not a number")
            return []
        orders.append(int(raw))
    if sorted(orders) != list(range(1, len(orders) + 1)):
        problems.append(f"{where}: <{tag}> orders are {orders}, not 1..{len(orders)}")
        return []
    ranked = sorted(zip(orders, children), key=lambda pair: pair[0])
    texts = [_text(child) for _, child in ranked]
    if any(not t for t in texts):
        problems.append(f"{where}: a <{tag}> is empty")
    return texts


def _mode(node: ET.Element, index: int, problems: list[str]) -> Verdict | None:
    name = (node.get("name") or "").strip()
    where = f"failure_mode {name or f'#{index}'}"
    if name not in MODES:
        problems.append(f"failure_mode #{index} has name {name!r}, which is not one of the six modes"
                        f" ({', '.join(MODES)})")
        return None
    present = (node.get("present") or "").strip().lower()
    if present not in ("true", "false"):
        problems.append(f"{where}: present={node.get('present')!r}, expected true or false")
        return None
    severity = _text(node.find("severity")).lower() or None
    if (severity or present == "true") and severity not in SEVERITIES:
        problems.append(f"{where}: severity {severity!r} is not one of {', '.join(reversed(SEVERITIES))}")
    verdict = Verdict(name, present == "true", severity, _text(node.find("evidence")),
                      _numbered(node.find("reproduction_steps"), "step", where, problems),
                      _text(node.find("fix_strategy")))
    if verdict.present:
        missing = [tag for tag, value in (("evidence", verdict.evidence), ("reproduction_steps", verdict.steps),
                                          ("fix_strategy", verdict.fix_strategy)) if not value]
        if missing:
            problems.append(f"{where} is present but has no {' or '.join(missing)}")
    return verdict


def _extract(text: str, finish_reason: str | None) -> str:
    # A structurally complete answer that hit the limit is still suspect: say why, not what broke.
    if finish_reason == "length":
        raise InvalidAnswer("the answer was cut off at the model's output limit (finish_reason length);"
                            " raise --max-tokens")
    start = _START.search(text)
    if not start:
        raise InvalidAnswer("the answer has no <analysis> element")
    end = text.rfind(_END)
    if end < start.start():
        raise InvalidAnswer("the answer stops before </analysis>: it was cut off or left unfinished")
    xml = text[start.start(): end + len(_END)]
    return _BARE_LT.sub("&lt;", _BARE_AMP.sub("&amp;", xml))


def parse_answer(text: str, finish_reason: str | None = None) -> Analysis:
    """The answer as an Analysis; InvalidAnswer names what breaks the structure."""
    xml = _extract(text or "", finish_reason)
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise InvalidAnswer(f"the <analysis> XML does not parse: {e}") from None
    problems: list[str] = []
    nodes = root.findall("failure_mode")
    if not nodes:
        raise InvalidAnswer("<analysis> has no <failure_mode> elements")
    verdicts, seen = [], set()
    for index, node in enumerate(nodes, 1):
        verdict = _mode(node, index, problems)
        if verdict is None:
            continue
        if verdict.name in seen:
            problems.append(f"failure_mode {verdict.name} appears more than once")
        seen.add(verdict.name)
        verdicts.append(verdict)
    summary = _text(root.find("summary"))
    if not summary:
        problems.append("<summary> is missing or empty")
    fixes_node = root.find("priority_fixes")
    if fixes_node is None:
        problems.append("<priority_fixes> is missing")
    fixes = _numbered(fixes_node, "fix", "priority_fixes", problems)
    if fixes_node is not None and not fixes and any(v.present for v in verdicts) and not problems:
        problems.append("priority_fixes is empty although some failure modes are present")
    if problems:
        more = f" (and {len(problems) - MAX_PROBLEMS} more)" if len(problems) > MAX_PROBLEMS else ""
        raise InvalidAnswer("; ".join(problems[:MAX_PROBLEMS]) + more)
    order = {name: i for i, name in enumerate(MODES)}
    verdicts.sort(key=lambda v: order[v.name])
    return Analysis(verdicts, summary, fixes, [m for m in MODES if m not in seen])
