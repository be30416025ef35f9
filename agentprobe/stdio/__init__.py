"""Recording MCP servers that speak stdio: a byte-transparent wrapper around the server's process."""
