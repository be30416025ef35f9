"""Send the proxy's upstream connections through the user's own proxy (see proxy/upstream_proxy.py)."""

from __future__ import annotations

from mitmproxy import http

from ..proxy.upstream_proxy import UpstreamProxy


class ChainUpstream:
    def __init__(self, upstream: UpstreamProxy) -> None:
        self.upstream = upstream
        self.spec = (upstream.scheme, (upstream.host, upstream.port))

    def _route(self, flow: http.HTTPFlow) -> None:
        if not self.upstream.bypasses(flow.request.host, flow.request.port):
            flow.server_conn.via = self.spec

    def http_connect(self, flow: http.HTTPFlow) -> None:  # the tunnel an HTTPS client opens
        self._route(flow)

    def requestheaders(self, flow: http.HTTPFlow) -> None:  # plain HTTP, and requests inside a tunnel
        self._route(flow)

    def http_connect_upstream(self, flow: http.HTTPFlow) -> None:
        # Only on the CONNECT to the upstream proxy: never on a request the provider sees.
        if self.upstream.authorization:
            flow.request.headers["Proxy-Authorization"] = self.upstream.authorization
