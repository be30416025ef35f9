"""A small tool-using agent: the openai SDK for the model, the official mcp SDK's Client for the tools.

  python sdk_agent.py MODEL_BASE_URL http URL        streamable HTTP server
  python sdk_agent.py MODEL_BASE_URL sse URL         legacy HTTP+SSE server
  python sdk_agent.py MODEL_BASE_URL stdio CMD...    stdio server started with CMD

The model (the fake provider) asks for slow_lookup, fast_lookup and broken in one turn. The agent
runs the three at once (started 50 ms apart, in the model's order), and, as careless agents do, appends each result as it arrives, so the
results reach the model in completion order (fast first), not in the order the model asked. It
ignores broken's isError and goes on to the final answer. It prints one JSON line of what it saw.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time

import openai
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters

CALLS = [("slow_lookup", {"city": "Oslo"}), ("fast_lookup", {"city": "Lima"}), ("broken", {"reason": "on purpose"})]


def directive() -> str:
    names = ",".join(name for name, _ in CALLS)
    args = base64.urlsafe_b64encode(json.dumps([a for _, a in CALLS]).encode()).decode().rstrip("=")
    return f"[fake tool_names={names} tool_args_b64={args}]"


async def main() -> None:
    base_url, transport, *rest = sys.argv[1:]
    if transport == "http":
        target = rest[0]
    elif transport == "sse":
        target = sse_client(rest[0])
    else:
        target = StdioServerParameters(command=rest[0], args=rest[1:])
    model = openai.AsyncOpenAI(base_url=base_url, api_key="sk-test-agent-0000000000000000", max_retries=0)
    async with Client(target) as client:
        listed = await client.list_tools()
        tools = [{"type": "function", "function": {"name": t.name, "description": t.description or "",
                                                   "parameters": t.input_schema}} for t in listed.tools]
        messages = [{"role": "system", "content": "You look cities up with the tools."},
                    {"role": "user", "content": f"Look up Oslo and Lima. {directive()}"}]
        first = await model.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=tools,
                                                    temperature=0)
        asked = first.choices[0].message.tool_calls
        messages.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}
            for c in asked]})
        order = []

        async def run(call):
            result = await client.call_tool(call.function.name, json.loads(call.function.arguments))
            text = " ".join(getattr(block, "text", "") for block in result.content)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": text})  # as it arrives
            order.append((call.function.name, bool(result.is_error), time.time()))

        tasks = []
        for call in asked:  # dispatched in the model's order, 50 ms apart, so the order is the test's to know
            tasks.append(asyncio.create_task(run(call)))
            await asyncio.sleep(0.05)
        await asyncio.gather(*tasks)
        final = await model.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=tools,
                                                    temperature=0)
    print(json.dumps({"asked": [c.function.name for c in asked], "completed": [o[0] for o in order],
                      "errors": [o[0] for o in order if o[1]], "final": final.choices[0].message.content}))


if __name__ == "__main__":
    asyncio.run(main())
