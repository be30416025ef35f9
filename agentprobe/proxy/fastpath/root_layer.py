"""What agentprobe puts between each mitmproxy connection handler and its root layer."""

from __future__ import annotations

import logging

from mitmproxy.proxy import server
from mitmproxy.proxy.mode_servers import ProxyConnectionHandler

from . import inline_hooks
from .coalesce import coalesce_sends
from .hook_index import IndexedAddonManager

log = logging.getLogger("agentprobe.proxy")

_installed = False


class RootLayer:
    """Stands in for a handler's root layer: its writes merged (coalesce), its hooks finished inline.

    Everything but handle_event passes through to the real layer.
    """

    __slots__ = ("_layer", "_hooks")

    def __init__(self, layer, hooks: IndexedAddonManager | None) -> None:
        self._layer = layer
        self._hooks = hooks

    def handle_event(self, event):
        if self._hooks is None:
            return coalesce_sends(self._layer.handle_event(event))
        return inline_hooks.handle_event(self._layer, self._hooks, event)

    def __getattr__(self, name):
        return getattr(self._layer, name)

    def __repr__(self) -> str:
        return repr(self._layer)


def _inline_hooks_for(handler) -> IndexedAddonManager | None:
    # Only where the hook's task is known to be exactly "run the handlers, then wait for resume":
    # a live proxy connection, not a replay or any handler of another kind.
    if type(handler) is not ProxyConnectionHandler:
        return None
    hooks = getattr(getattr(handler, "master", None), "addons", None)
    return hooks if isinstance(hooks, IndexedAddonManager) else None


def install() -> None:
    """Wrap the root layer of every connection handler from now on.

    A property rather than a wrapped __init__: mitmproxy assigns handler.layer
    twice (a NextLayer in __init__, then the mode's top layer in handle_stream),
    and every assignment must be wrapped. This touches a mitmproxy internal; if
    a release moves it, traffic flows as in plain mitmproxy (slower, never
    broken) and the log says so. tests/test_root_layer.py fails on such a release.
    """
    global _installed
    if _installed:
        return
    _installed = True
    if "layer" in vars(server.ConnectionHandler) or not hasattr(server.ConnectionHandler, "server_event"):
        log.warning("agentprobe: this mitmproxy's connection handler is not the one we know; "
                    "streamed writes are not merged and hooks take mitmproxy's own path")
        return

    def get_layer(handler):
        return handler.__dict__["_agentprobe_root"]

    def set_layer(handler, layer) -> None:
        if not isinstance(layer, RootLayer):
            layer = RootLayer(layer, _inline_hooks_for(handler))
        handler.__dict__["_agentprobe_root"] = layer

    server.ConnectionHandler.layer = property(get_layer, set_layer)
