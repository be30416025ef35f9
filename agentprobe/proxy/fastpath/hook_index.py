"""Call each mitmproxy hook only on the addons that define it.

mitmproxy's AddonManager offers every event to every addon in the chain: for
each one it starts a coroutine, walks the addon's children, looks the hook up
by name and enters an error-catching context manager, and for every flow event
it then sends a second, `update` event the same way. With a dozen addons and
eight flow events per request, all of it runs on the proxy's event loop before
the request can leave and before the response headers can reach the agent.
`bench/run.py --fastpath each` measures what it buys (switching it off also
switches off inline_hooks, which needs it).

Here the handlers of each hook are looked up once and kept until the chain
changes (add, remove, register, clear). Order, error isolation (an addon that
raises is logged and the rest still run) and AddonHalt are as in mitmproxy.
An addon with sub-addons (`.addons`) may change them at any time, so while one
is in the chain nothing is kept and every event is looked up afresh.
"""

from __future__ import annotations

import inspect
import logging
import types
from collections.abc import Awaitable, Coroutine

from mitmproxy import exceptions, flow, hooks
from mitmproxy.addonmanager import AddonManager, safecall, traverse

log = logging.getLogger("agentprobe.proxy")

_BEGUN = "_agentprobe_begun"  # on a hook whose handlers already ran: what is left to await, or None
_NOT_BEGUN = object()


def check() -> str | None:
    missing = [name for name in ("trigger_event", "handle_lifecycle", "register", "add", "remove", "clear")
               if not callable(getattr(AddonManager, name, None))]
    if missing:
        return f"mitmproxy's AddonManager has no {', '.join(missing)}"
    return None


class IndexedAddonManager(AddonManager):
    def __init__(self, master) -> None:
        super().__init__(master)
        self._index: dict[str, tuple] = {}

    @classmethod
    def adopt(cls, manager: AddonManager) -> "IndexedAddonManager":
        """Turn the manager mitmproxy's Master built for itself into one of these, in place."""
        manager.__class__ = cls
        manager._index = {}
        return manager  # type: ignore[return-value]

    def handlers(self, name: str) -> tuple:
        try:
            return self._index[name]
        except KeyError:
            pass
        found = []
        cacheable = True
        for addon in traverse(self.chain):
            if hasattr(addon, "addons"):
                cacheable = False
            func = getattr(addon, name, None)
            if not func:
                continue
            if callable(func):
                found.append(func)
            elif not isinstance(func, types.ModuleType):  # a module named like a hook is skipped quietly
                log.error("Addon handler %s (%s) not callable", name, addon)
        result = tuple(found)
        if cacheable:
            self._index[name] = result
        return result

    def _changed(self) -> None:
        self._index = {}

    def register(self, addon):
        try:
            return super().register(addon)
        finally:
            self._changed()

    def add(self, *addons) -> None:
        try:
            super().add(*addons)
        finally:
            self._changed()

    def remove(self, addon) -> None:
        try:
            super().remove(addon)
        finally:
            self._changed()

    def clear(self) -> None:
        try:
            super().clear()
        finally:
            self._changed()

    def _call(self, funcs: tuple, args: tuple) -> Coroutine | None:
        """Call handlers in order until one returns an awaitable; then return a coroutine for the rest."""
        for i, func in enumerate(funcs):
            try:
                with safecall():
                    res = func(*args)
                    if res is not None and inspect.isawaitable(res):
                        return self._await_then_call(res, funcs[i + 1:], args)
            except exceptions.AddonHalt:
                return None
        return None

    async def _await_then_call(self, res: Awaitable, funcs: tuple, args: tuple) -> None:
        try:
            with safecall():
                await res
        except exceptions.AddonHalt:
            return
        rest = self._call(funcs, args)
        if rest is not None:
            await rest

    async def trigger_event(self, event: hooks.Hook) -> None:
        funcs = self.handlers(event.name)
        if funcs:
            rest = self._call(funcs, event.args())
            if rest is not None:
                await rest

    def begin_lifecycle(self, event: hooks.Hook) -> Coroutine | None:
        """handle_lifecycle as far as it goes without waiting: None when it is done, else the rest."""
        args = event.args()
        message = args[0] if args else None
        update = self.handlers("update") if isinstance(message, flow.Flow) else ()
        rest = self._call(self.handlers(event.name), args)
        if rest is None:
            return self._call(update, hooks.UpdateHook([message]).args()) if update else None
        return self._then_update(rest, message) if update else rest

    async def _then_update(self, rest: Coroutine, message: flow.Flow) -> None:
        await rest
        await self.trigger_event(hooks.UpdateHook([message]))

    @staticmethod
    def mark_begun(event: hooks.Hook, rest: Coroutine | None) -> None:
        """The handlers of `event` already ran (see inline_hooks): its task only awaits `rest`."""
        event.__dict__[_BEGUN] = rest

    async def handle_lifecycle(self, event: hooks.Hook) -> None:
        begun = event.__dict__.pop(_BEGUN, _NOT_BEGUN)
        rest = self.begin_lifecycle(event) if begun is _NOT_BEGUN else begun
        if rest is not None:
            await rest
