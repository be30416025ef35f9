"""Align two runs step by step, find the first step where they differ, and say why."""

from __future__ import annotations

import difflib
import json
from dataclasses import asdict, dataclass, field

from ..checks.models import price
from ..util.textdiff import unified
from .sides import Side, Step

PARAMS = ("model", "temperature", "top_p", "max_tokens", "seed", "parallel_tool_calls", "stream")
CLASSES = ("error", "config_change", "prompt_change", "input_change", "nondeterministic_output")
EXPLAIN = {
    "error": "one side failed (or needed retries) where the other did not",
    "config_change": "the model or its parameters changed",
    "prompt_change": "the system prompt or the tool schemas changed",
    "input_change": "the agent sent different messages (or made a call the other run did not)",
    "nondeterministic_output": "the same request got a different answer",
}
TEXT_LIMIT = 2000


@dataclass
class Divergence:
    index: int  # position in the aligned sequence
    kind: str  # one of CLASSES
    summary: str
    a: dict | None
    b: dict | None
    fields: list[dict] = field(default_factory=list)


def align(a: Side, b: Side) -> list[tuple[Step | None, Step | None]]:
    """Pairs of corresponding steps; a step with no counterpart is paired with None."""
    matcher = difflib.SequenceMatcher(None, [s.key for s in a.steps], [s.key for s in b.steps], autojunk=False)
    out: list[tuple[Step | None, Step | None]] = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        left, right = a.steps[i1:i2], b.steps[j1:j2]
        if op in ("equal", "replace"):
            n = min(len(left), len(right))
            out += list(zip(left[:n], right[:n]))
            left, right = left[n:], right[n:]
        out += [(s, None) for s in left] + [(None, s) for s in right]
    return out


def _failed(call: dict) -> bool:
    return bool(call["error_type"]) or call["status"] is None or call["status"] >= 400


def _statuses(step: Step) -> list:
    return [c["status"] if not c["error_type"] or c["status"] else c["error_type"] for c in step.attempts]


def same(x: Step, y: Step) -> bool:
    cx, cy = x.call, y.call
    return (len(x.attempts) == len(y.attempts) and _statuses(x) == _statuses(y)
            and all(cx[k] == cy[k] for k in ("request_sha256", "output_sha256", "finish_reason", "error_type")))


def _ref(step: Step | None) -> dict | None:
    if step is None:
        return None
    c = step.call
    return {"seq": c["seq"], "call_id": c["id"], "model": c["model"], "conversation": step.conversation,
            "turn": c["turn"], "status": c["status"], "attempts": len(step.attempts)}


def _text_diff(a: str | None, b: str | None, name_a: str, name_b: str) -> str:
    text = unified(a or "", b or "", name_a, name_b, context=2)
    return text + "\n" if text else text


def _messages(side: Side, call: dict) -> list:
    body = side.request_json(call) or {}
    messages = body.get("messages") or body.get("input") or body.get("contents") or []
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    # The system prompt is compared on its own; here only what the conversation carried.
    return [m for m in messages if not (isinstance(m, dict) and m.get("role") in ("system", "developer"))]


def _clip(text: str | None) -> str | None:
    if text is None or len(text) <= TEXT_LIMIT:
        return text
    return text[:TEXT_LIMIT] + f"... ({len(text) - TEXT_LIMIT} more characters)"


def fields_at(a: Side, b: Side, x: Step, y: Step) -> list[dict]:
    """Every field that differs between two corresponding steps, with a text diff where it helps."""
    cx, cy = x.call, y.call
    out = []
    if _statuses(x) != _statuses(y):
        out.append({"field": "attempts", "a": _statuses(x), "b": _statuses(y)})
    for k in ("status", "error_type"):
        if cx[k] != cy[k]:
            out.append({"field": k, "a": cx[k], "b": cy[k]})
    for k in PARAMS:
        if cx[k] != cy[k]:
            out.append({"field": k, "a": cx[k], "b": cy[k]})
    if cx["system_prompt_sha256"] != cy["system_prompt_sha256"]:
        ta, tb = a.prompt_text(cx["system_prompt_sha256"]), b.prompt_text(cy["system_prompt_sha256"])
        out.append({"field": "system_prompt", "a": cx["system_prompt_sha256"], "b": cy["system_prompt_sha256"],
                    "diff": _text_diff(ta, tb, f"run A seq {cx['seq']}", f"run B seq {cy['seq']}")})
    if cx["tools_sha256"] != cy["tools_sha256"]:
        ta, tb = a.prompt_text(cx["tools_sha256"]), b.prompt_text(cy["tools_sha256"])
        out.append({"field": "tools", "a": cx["tools_sha256"], "b": cy["tools_sha256"],
                    "diff": _text_diff(_pretty(ta), _pretty(tb), "run A tools", "run B tools")})
    if cx["prompt_sha256"] != cy["prompt_sha256"]:
        ma, mb = _messages(a, cx), _messages(b, cy)
        first = next((i for i in range(max(len(ma), len(mb)))
                      if i >= len(ma) or i >= len(mb) or ma[i] != mb[i]), None)
        if first is not None:
            out.append({"field": "messages", "index": first,
                        "a": _clip(json.dumps(ma[first], ensure_ascii=False)) if first < len(ma) else None,
                        "b": _clip(json.dumps(mb[first], ensure_ascii=False)) if first < len(mb) else None,
                        "count": [len(ma), len(mb)]})
        else:
            out.append({"field": "messages", "a": cx["prompt_sha256"], "b": cy["prompt_sha256"]})
    if cx["request_sha256"] != cy["request_sha256"] and not out:
        out.append({"field": "request", "a": cx["request_sha256"], "b": cy["request_sha256"]})
    if cx["finish_reason"] != cy["finish_reason"]:
        out.append({"field": "finish_reason", "a": cx["finish_reason"], "b": cy["finish_reason"]})
    if cx["output_sha256"] != cy["output_sha256"]:
        ta, tb = a.prompt_text(cx["output_sha256"]), b.prompt_text(cy["output_sha256"])
        ratio = difflib.SequenceMatcher(None, ta or "", tb or "", autojunk=False).ratio()
        out.append({"field": "output", "a": _clip(ta), "b": _clip(tb), "similarity": round(ratio, 3)})
    return out


def _pretty(text: str | None) -> str | None:
    try:
        return json.dumps(json.loads(text), indent=1, sort_keys=True) if text else text
    except ValueError:
        return text


def classify(x: Step | None, y: Step | None, fields: list[dict]) -> str:
    if x is None or y is None:
        only = x or y
        return "error" if any(_failed(c) for c in only.attempts) else "input_change"
    names = {f["field"] for f in fields}
    if names & {"attempts", "status", "error_type"}:
        return "error"
    if names & set(PARAMS):
        return "config_change"
    if names & {"system_prompt", "tools"}:
        return "prompt_change"
    if names & {"messages", "request"}:
        return "input_change"
    return "nondeterministic_output"


def _summary(kind: str, x: Step | None, y: Step | None, fields: list[dict]) -> str:
    if x is None or y is None:
        side, step = ("B", y) if x is None else ("A", x)
        c = step.call
        what = f"status {c['status']}" if not _failed(c) else f"failed ({c['error_type'] or c['status']})"
        return f"run {side} made a call the other did not: seq {c['seq']} ({c['model']}, {what})"
    changed = ", ".join(f["field"] for f in fields)
    return f"{EXPLAIN[kind]}: {changed} differ at A seq {x.call['seq']} / B seq {y.call['seq']}"


def _totals(steps: list[Step]) -> dict:
    calls = [c for s in steps for c in s.attempts]
    cost = 0.0
    priced = True
    for c in calls:
        p = price(c["model"])
        if p is None:
            priced = priced and not (c["input_tokens"] or c["output_tokens"])
            continue
        cost += ((c["input_tokens"] or 0) * p[0] + (c["output_tokens"] or 0) * p[1]) / 1_000_000
    return {"calls": len(calls), "input_tokens": sum(c["input_tokens"] or 0 for c in calls),
            "output_tokens": sum(c["output_tokens"] or 0 for c in calls),
            "errors": sum(_failed(c) for c in calls),
            "latency_ms": round(sum(c["latency_ms"] or 0 for c in calls), 1),
            "cost_usd": round(cost, 6) if priced else None}


def effect(pairs: list, at: int | None) -> dict:
    """Totals before and from the divergence on, per side."""
    cut = len(pairs) if at is None else at
    out = {}
    for name, chunk in (("before", pairs[:cut]), ("after", pairs[cut:])):
        out[name] = {"a": _totals([x for x, _ in chunk if x]), "b": _totals([y for _, y in chunk if y])}
    return out


def diff_runs(a: Side, b: Side) -> dict:
    pairs = align(a, b)
    divergence = None
    for i, (x, y) in enumerate(pairs):
        if x is not None and y is not None and same(x, y):
            continue
        fields = fields_at(a, b, x, y) if x and y else []
        kind = classify(x, y, fields)
        divergence = Divergence(i, kind, _summary(kind, x, y, fields), _ref(x), _ref(y), fields)
        break
    later = [(i, x, y) for i, (x, y) in enumerate(pairs) if divergence and i > divergence.index
             and not (x and y and same(x, y))]
    return {
        "run_a": _run(a), "run_b": _run(b),
        "identical": divergence is None,
        "steps": {"aligned": sum(1 for x, y in pairs if x and y), "only_a": sum(1 for x, y in pairs if not y),
                  "only_b": sum(1 for x, y in pairs if not x)},
        "divergence": asdict(divergence) if divergence else None,
        "later_differences": len(later),
        "effect": effect(pairs, divergence.index if divergence else None),
        "outputs": outputs_changed(a, b, pairs),
    }


def outputs_changed(a: Side, b: Side, pairs: list) -> dict:
    """Of the steps both runs made, how many answers changed, and by how much (token match ratio)."""
    from ..playback.replay import match_ratio

    matched = [(x, y) for x, y in pairs if x is not None and y is not None]
    changed = []
    ratios = []
    for x, y in matched:
        if x.call["output_sha256"] == y.call["output_sha256"]:
            ratios.append(1.0)
            continue
        ratio = match_ratio(a.prompt_text(x.call["output_sha256"]) or "", b.prompt_text(y.call["output_sha256"]) or "",
                            y.call["model"])
        ratios.append(ratio)
        changed.append({"a_seq": x.call["seq"], "b_seq": y.call["seq"], "match": round(ratio, 4)})
    n = len(matched)
    return {"matched": n, "changed": len(changed), "share": round(len(changed) / n, 4) if n else 0.0,
            "mean_match": round(sum(ratios) / n, 4) if n else None,
            "changed_mean_match": round(sum(c["match"] for c in changed) / len(changed), 4) if changed else None,
            "calls": changed}


def _run(side: Side) -> dict:
    r = side.run
    return {"id": r["id"], "label": r["label"], "started_at": r["started_at"],
            "calls": sum(len(s.attempts) for s in side.steps)}
