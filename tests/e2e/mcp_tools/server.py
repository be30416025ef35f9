"""The MCP server the e2e tests record, written with the official SDK (mcp 2.x `MCPServer`).

Tools: slow_lookup (answers after SLOW_S), fast_lookup (at once), broken (a result with isError).

  python server.py http --port PORT     streamable HTTP at /mcp
  python server.py sse --port PORT      the legacy HTTP+SSE transport (/sse + /messages/)
  python server.py stdio                newline-delimited JSON on stdin/stdout

Binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio

from mcp.server.mcpserver import Context, MCPServer
from mcp_types import CallToolResult, TextContent

SLOW_S = 0.6

server = MCPServer("probe-tools", version="1.0.0")


@server.tool()
async def slow_lookup(city: str, ctx: Context) -> str:
    """Look a city up, slowly (with progress, to a client that asks for it: then the answer is a stream)."""
    await ctx.report_progress(0, 1, "started")
    await asyncio.sleep(SLOW_S)
    return f"slow answer for {city}"


@server.tool()
async def fast_lookup(city: str) -> str:
    """Look a city up at once."""
    return f"fast answer for {city}"


@server.tool()
def broken(reason: str) -> CallToolResult:
    """Always fails, reporting it in the result (isError)."""
    return CallToolResult(content=[TextContent(type="text", text=f"broken: {reason}")], is_error=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("transport", choices=["http", "sse", "stdio"])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.transport == "stdio":
        server.run("stdio")
    elif args.transport == "sse":
        server.run("sse", host="127.0.0.1", port=args.port)
    else:
        server.run("streamable-http", host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
