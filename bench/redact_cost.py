#!/usr/bin/env python
"""What redaction costs the writer on 100 KB bodies that hold no secret.

    python bench/redact_cost.py
    git show COMMIT:agentprobe/capture/redact.py > /tmp/old_redact.py
    python bench/redact_cost.py --before /tmp/old_redact.py      # side by side, interleaved

Each line times one body the way rows.py redacts it: prose and source code as text, an agent's
chat request (a system prompt, prose and code in its messages, tool calls with their JSON
arguments) as parsed JSON with its raw text, a JSON answer, and an SSE answer of 6-character
deltas. The best of several rounds is shown, since the machine may be busy; with --before, the
old module (loaded from a file: it needs only the standard library) is timed in the same rounds.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import timeit
from pathlib import Path

from agentprobe.capture import redact

WORDS = ("the agent reads a file then calls a tool and writes the answer to the user who asked about "
         "deployment logs configuration values retries latency budget model context window").split()


def prose(rng: random.Random, size: int) -> str:
    out, n = [], 0
    while n < size:
        word = rng.choice(WORDS)
        out.append(word)
        n += len(word) + 1
    return " ".join(out)[:size]


def bodies() -> dict[str, str]:
    rng = random.Random(1)
    source = (Path(redact.__file__).parent / "rows.py").read_text()
    code = (source * (100_000 // len(source) + 1))[:100_000]
    messages: list[dict] = [{"role": "system", "content": "You are a careful coding agent."}]
    for i in range(24):
        messages.append({"role": "user", "content": prose(rng, 1500) + "\n```python\n" + code[i * 900:(i + 1) * 900]
                         + "\n```"})
        messages.append({"role": "assistant", "content": None, "tool_calls": [{
            "id": f"call_{i}", "type": "function", "function": {
                "name": "read_file", "arguments": json.dumps({"path": f"src/mod_{i}.py", "lines": [1, 80]})}}]})
        messages.append({"role": "tool", "tool_call_id": f"call_{i}", "content": prose(rng, 1000)})
    request = json.dumps({"model": "gpt-4o-mini", "max_tokens": 500, "temperature": 0.2, "messages": messages})
    answer = prose(rng, 100_000)
    response = json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini", "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": answer, "refusal": None}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1}})
    events, size, at = [], 0, 0
    while size < 100_000:
        chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
                 "choices": [{"index": 0, "delta": {"content": answer[at:at + 6]}, "finish_reason": None}]}
        events.append(f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n")
        size, at = size + len(events[-1]), at + 6
    stream = "".join(events) + "data: [DONE]\n\n"
    return {"prose": prose(rng, 100_000), "code": code, "request": request, "response": response, "stream": stream}


def cases(module, b: dict[str, str], secrets: list[str]) -> dict[str, object]:
    """The calls rows.py makes for each body, in this version of the module (or an older one)."""
    parsed = json.loads(b["request"])
    new = hasattr(module, "scrub_json_value")

    def stream():
        text = b["stream"]
        if new and module.has_side_channels(text):
            text = module.scrub_stream(text, secrets)
        return module.scrub_text(text, secrets)

    return {
        "text: 100 KB of prose": lambda: module.scrub_text(b["prose"], secrets),
        "text: 100 KB of Python source": lambda: module.scrub_text(b["code"], secrets),
        f"request: {len(b['request']) // 1000} KB agent chat body": (
            (lambda: module.scrub_json_value(parsed, b["request"], secrets)) if new
            else (lambda: module.scrub_json(parsed, secrets))),
        f"answer: {len(b['response']) // 1000} KB JSON": (
            (lambda: module.scrub_body(b["response"], secrets)) if new
            else (lambda: module.scrub_text(b["response"], secrets))),
        f"answer: {len(b['stream']) // 1000} KB SSE stream": stream,
    }


def best(fn, rounds: int) -> float:
    return min(timeit.repeat(fn, number=5, repeat=rounds)) / 5 * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, help="an older redact.py to time side by side")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    b = bodies()
    secrets = ["sk-proj-abcdefghijklmnopqrstuvwx"]  # the request's own key, in none of the bodies
    modules = {"now": redact}
    if args.before:
        spec = importlib.util.spec_from_file_location("redact_before", args.before)
        old = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)
        modules = {"before": old, **modules}
    timed = {name: cases(m, b, secrets) for name, m in modules.items()}
    print(f"{'body':45s}" + "".join(f"{name:>12s}" for name in modules))
    for case in timed["now"]:
        results = {name: [] for name in modules}
        for _ in range(3):  # interleaved, so that a busy moment hits both
            for name in modules:
                results[name].append(best(timed[name][case], args.rounds))
        print(f"{case:45s}" + "".join(f"{min(results[name]):9.3f} ms" for name in modules))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
