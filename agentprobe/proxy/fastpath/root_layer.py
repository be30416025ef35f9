"""What agentprobe puts between each mitmproxy connection handler and its root layer."""

from __future__ import annotations

from mitmproxy.proxy import server
from mitmproxy.proxy.mode_servers import ProxyConnectionHandler

from . import inline_hooks
from .coalesce import coalesce_sends
from .hook_index import IndexedAddonManager


def _unmerged(cmds):
    return cmds


class Features:
    """Which of the root layer's two jobs are on; set by fastpath.install()."""

    merge_writes = False
    inline_hooks = False


class RootLayer:
    """Stands in for a handler's root layer: its writes merged (coalesce), its hooks finished inline.

    Everything but handle_event passes through to the real layer.
    """

    __slots__ = ("_layer", "_hooks", "_merge")

    def __init__(self, layer, hooks: IndexedAddonManager | None, merge) -> None:
        self._layer = layer
        self._hooks = hooks
        self._merge = merge

    def handle_event(self, event):
        if self._hooks is None:
            return self._merge(self._layer.handle_event(event))
        return inline_hooks.handle_event(self._layer, self._hooks, event, self._merge)

    def __getattr__(self, name):
        return getattr(self._layer, name)

    def __repr__(self) -> str:
        return repr(self._layer)


def _inline_hooks_for(handler) -> IndexedAddonManager | None:
    # Only where the hook's task is known to be exactly "run the handlers, then wait for resume":
    # a live proxy connection, not a replay or any handler of another kind.
    if not Features.inline_hooks or type(handler) is not ProxyConnectionHandler:
        return None
    hooks = getattr(getattr(handler, "master", None), "addons", None)
    return hooks if isinstance(hooks, IndexedAddonManager) else None


def check() -> str | None:
    if "layer" in vars(server.ConnectionHandler) and not isinstance(vars(server.ConnectionHandler)["layer"],
                                                                     _LayerProperty):
        return "mitmproxy's ConnectionHandler already defines `layer`"
    if not hasattr(server.ConnectionHandler, "server_event"):
        return "mitmproxy's ConnectionHandler has no server_event"
    return None


class _LayerProperty(property):
    """Marks the property as ours, so patch() and unpatch() can tell it from mitmproxy's own."""


def patch() -> None:
    """Wrap the root layer of every connection handler from now on.

    A property rather than a wrapped __init__: mitmproxy assigns handler.layer twice (a
    NextLayer in __init__, then the mode's top layer in handle_stream), and every assignment
    must be wrapped. tests/proxy/fastpath/test_root_layer.py fails on a release that moved it.
    """
    if isinstance(vars(server.ConnectionHandler).get("layer"), _LayerProperty):
        return

    def get_layer(handler):
        return handler.__dict__["_agentprobe_root"]

    def set_layer(handler, layer) -> None:
        if not isinstance(layer, RootLayer):
            merge = coalesce_sends if Features.merge_writes else _unmerged
            layer = RootLayer(layer, _inline_hooks_for(handler), merge)
        handler.__dict__["_agentprobe_root"] = layer

    server.ConnectionHandler.layer = _LayerProperty(get_layer, set_layer)


def unpatch() -> None:
    if isinstance(vars(server.ConnectionHandler).get("layer"), _LayerProperty):
        del server.ConnectionHandler.layer
