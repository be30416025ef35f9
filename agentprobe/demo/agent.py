"""A small agent that behaves like real ones do, warts included.

It uses the real openai SDK against whatever OPENAI_BASE_URL points at (the
bundled fake provider in the demo). The fake provider reads `x-fake` headers to
act out production trouble: a rate limit, a server error, slow answers.
"""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import openai

MODEL = os.environ.get("DEMO_MODEL", "gpt-4o-mini")
SYSTEM = "You are a careful research assistant. Answer briefly and cite the tool results you used."
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup_revenue",
            "description": "Quarterly revenue for a company, in millions of USD.",
            "parameters": {
                "type": "object",
                "properties": {"company": {"type": "string"}, "quarter": {"type": "string"}},
                "required": ["company", "quarter"],
            },
        },
    }
]


def say(step: str) -> None:
    print(f"[demo agent] {step}", flush=True)


def conversation(client: openai.OpenAI) -> None:
    say("three-turn conversation with a tool call")
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "How did ACME do in Q3 compared with Q2?"},
    ]
    first = client.chat.completions.create(
        model=MODEL, messages=messages, tools=TOOLS, temperature=0,
        extra_headers={"x-fake": "tool_calls=2"},
    )
    calls = first.choices[0].message.tool_calls or []
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    # Tool results go back in reverse order: exactly the kind of reordering a
    # parallel tool executor produces, and one scan reports.
    for call in reversed(calls):
        messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps({"revenue": 412})})
    second = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, temperature=0)
    messages.append({"role": "assistant", "content": second.choices[0].message.content})
    messages.append({"role": "user", "content": "Summarise that in one sentence."})
    client.chat.completions.create(model=MODEL, messages=messages, temperature=0)


def streams(client: openai.OpenAI) -> None:
    say("streamed answers, with and without usage reporting")
    for include_usage in (True, False):
        extra = {"stream_options": {"include_usage": True}} if include_usage else {}
        stream = client.chat.completions.create(
            model=MODEL, stream=True, messages=[{"role": "user", "content": "Stream a short status report."}], **extra
        )
        "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)


def rate_limited(client: openai.OpenAI) -> None:
    say("a 429 with retry-after, which the SDK retries")
    client.chat.completions.create(
        model=MODEL, temperature=0, messages=[{"role": "user", "content": "Classify this ticket."}],
        extra_headers={"x-fake": "status=429; retry_after=0.2; fail_times=1"},
    )


def parallel(client: openai.OpenAI) -> None:
    say("four parallel calls whose answers come back in reverse order")

    def ask(i: int) -> str:
        delay = 0.1 * (4 - i)
        r = client.chat.completions.create(
            model=MODEL, temperature=0, messages=[{"role": "user", "content": f"Summarise document {i}."}],
            extra_headers={"x-fake": f"delay={delay}"},
        )
        return r.choices[0].message.content

    with ThreadPoolExecutor(4) as pool:
        futures = []
        for i in range(4):
            futures.append(pool.submit(ask, i))
            time.sleep(0.02)  # dispatch order is well defined
        [f.result() for f in futures]


def truncated(client: openai.OpenAI) -> None:
    say("an answer cut off by max_tokens")
    client.chat.completions.create(
        model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "Write a detailed plan."}],
        extra_headers={"x-fake": "words=40"},
    )


def swallowed(client: openai.OpenAI) -> None:
    say("a server error the agent ignores and carries on")
    try:
        client.with_options(max_retries=0).chat.completions.create(
            model=MODEL, temperature=0, messages=[{"role": "user", "content": "Fetch the latest numbers."}],
            extra_headers={"x-fake": "status=500"},
        )
    except openai.APIStatusError:
        pass  # the bug: no retry, no halt, no report
    client.chat.completions.create(
        model=MODEL, temperature=0, messages=[{"role": "user", "content": "Write the report anyway."}]
    )


def main() -> int:
    client = openai.OpenAI(api_key=os.environ.get("OPENAI_API_KEY", "sk-demo-not-a-real-key-000000"))
    for step in (conversation, streams, rate_limited, parallel, truncated, swallowed):
        step(client)
    say("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
