"""A pydantic-ai agent (model: the fake provider over OpenAI chat completions; tools: an MCP server
over streamable HTTP through pydantic-ai's MCPToolset, itself built on fastmcp's client).

  python pydantic_ai_agent.py MODEL_BASE_URL MCP_URL

The model asks for slow_lookup and fast_lookup in one turn; pydantic-ai runs the two at once.
Prints one JSON line: the final output and the tool results in the order pydantic-ai returned them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys

from pydantic_ai import Agent
from pydantic_ai.mcp import MCPToolset
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

CALLS = [("slow_lookup", {"city": "Oslo"}), ("fast_lookup", {"city": "Lima"})]


async def main() -> None:
    base_url, mcp_url = sys.argv[1:3]
    names = ",".join(n for n, _ in CALLS)
    args = base64.urlsafe_b64encode(json.dumps([a for _, a in CALLS]).encode()).decode().rstrip("=")
    model = OpenAIChatModel("gpt-4o-mini", provider=OpenAIProvider(base_url=base_url,
                                                                   api_key="sk-test-agent-0000000000000000"))
    agent = Agent(model, toolsets=[MCPToolset(mcp_url)], instructions="Look cities up with the tools.",
                  model_settings={"parallel_tool_calls": True, "temperature": 0})
    async with agent:
        result = await agent.run(f"Look up Oslo and Lima. [fake tool_names={names} tool_args_b64={args}]")
    returned = [part.tool_name for m in result.all_messages() for part in m.parts
                if type(part).__name__ == "ToolReturnPart"]
    print(json.dumps({"final": result.output, "returned": returned}))


if __name__ == "__main__":
    asyncio.run(main())
