"""Send every LLM API request to another server (the offline `serve` backend).

Used by `trace --serve`: the agent keeps its real base URLs, and the proxy
answers them from a recording instead of the provider, so nothing reaches the
network and nothing is spent.
"""

from __future__ import annotations

from mitmproxy import http

from ..providers import detect


class Redirect:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    def request(self, flow: http.HTTPFlow) -> None:
        req = flow.request
        if detect(req.method, req.host, req.path, req.raw_content) is None:
            return
        flow.metadata["agentprobe.redirected_from"] = req.pretty_host
        req.scheme, req.host, req.port = "http", self.host, self.port
