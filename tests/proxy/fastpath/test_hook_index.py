"""The indexed addon manager calls the same handlers, in the same order, as mitmproxy's own."""

from __future__ import annotations

import asyncio
import logging

import pytest
from mitmproxy import exceptions, hooks
from mitmproxy.addonmanager import AddonManager
from mitmproxy.proxy.layers.http import HttpRequestHook, HttpResponseHook
from mitmproxy.test import taddons, tflow

from agentprobe.proxy.fastpath.hook_index import IndexedAddonManager


class Logged:
    """An addon that notes each hook it gets; `hooks` picks which it defines."""

    def __init__(self, name: str, calls: list, hooks_: tuple = ("request", "response"), *, fail=None):
        self.name = name
        self.calls = calls
        self.fail = fail
        for hook in hooks_:
            setattr(self, hook, self._make(hook))

    def _make(self, hook):
        def handler(*args):
            self.calls.append((self.name, hook))
            if self.fail is not None:
                raise self.fail
        return handler


class AsyncRequest:
    def __init__(self, calls: list) -> None:
        self.calls = calls

    async def request(self, flow):
        await asyncio.sleep(0)
        self.calls.append(("async", "request"))


class Parent:
    """Holds sub-addons that it may swap at any time, as mitmproxy's script loader does."""

    def __init__(self, calls: list) -> None:
        self.addons = [Logged("child-1", calls, ("request",))]


def _run(manager: AddonManager, flow, *events) -> None:
    async def go():
        for event in events:
            await manager.handle_lifecycle(event(flow))
    manager.master.event_loop.run_until_complete(go())


def _both(*make_addons):
    """The same addons under mitmproxy's manager and under ours, on one master: (manager, calls) pairs."""
    with taddons.context(loadcore=False) as ctx:
        for cls in (AddonManager, IndexedAddonManager):
            calls: list = []
            manager = cls(ctx.master)
            manager.add(*[make(calls) for make in make_addons])
            yield manager, calls


def test_same_handlers_in_the_same_order_as_mitmproxy():
    results = []
    for manager, calls in _both(
        lambda c: Logged("a", c),
        lambda c: Logged("none", c, ()),
        AsyncRequest,
        lambda c: Logged("b", c, ("response", "update")),
        Parent,
    ):
        _run(manager, tflow.tflow(resp=True), HttpRequestHook, HttpResponseHook)
        results.append(calls)
    mitmproxy_calls, indexed_calls = results
    assert indexed_calls == mitmproxy_calls
    assert indexed_calls == [
        ("a", "request"), ("async", "request"), ("child-1", "request"), ("b", "update"),
        ("a", "response"), ("b", "response"), ("b", "update"),
    ]


def test_a_failing_addon_is_logged_and_the_rest_still_run(caplog):
    for manager, calls in _both(lambda c: Logged("bad", c, ("request",), fail=ValueError("boom")),
                                lambda c: Logged("good", c, ("request",))):
        with caplog.at_level(logging.ERROR):
            _run(manager, tflow.tflow(), HttpRequestHook)
        assert calls == [("bad", "request"), ("good", "request")]
        assert "Addon error: boom" in caplog.text
        caplog.clear()


def test_addon_halt_stops_the_chain():
    for manager, calls in _both(lambda c: Logged("halt", c, ("request",), fail=exceptions.AddonHalt()),
                                lambda c: Logged("after", c, ("request",))):
        _run(manager, tflow.tflow(), HttpRequestHook)
        assert calls == [("halt", "request")]


def test_options_errors_still_propagate():
    for manager, _calls in _both(lambda c: Logged("opt", c, ("request",), fail=exceptions.OptionsError("bad"))):
        with pytest.raises(exceptions.OptionsError):
            _run(manager, tflow.tflow(), HttpRequestHook)


def test_adding_and_removing_addons_after_dispatch_is_seen():
    calls: list = []
    with taddons.context(loadcore=False) as ctx:
        manager = IndexedAddonManager.adopt(ctx.master.addons)
        first = Logged("first", calls, ("request",))
        manager.add(first)
        _run(manager, tflow.tflow(), HttpRequestHook)
        manager.add(Logged("late", calls, ("request",)))
        _run(manager, tflow.tflow(), HttpRequestHook)
        manager.remove(first)
        _run(manager, tflow.tflow(), HttpRequestHook)
    assert calls == [("first", "request"), ("first", "request"), ("late", "request"), ("late", "request")]


def test_sub_addons_that_change_are_never_cached():
    calls: list = []
    with taddons.context(loadcore=False) as ctx:
        manager = IndexedAddonManager.adopt(ctx.master.addons)
        parent = Parent(calls)
        manager.add(parent)
        _run(manager, tflow.tflow(), HttpRequestHook)
        parent.addons.append(Logged("child-2", calls, ("request",)))
        _run(manager, tflow.tflow(), HttpRequestHook)
    assert calls == [("child-1", "request"), ("child-1", "request"), ("child-2", "request")]


def test_no_update_event_is_built_when_nobody_listens(monkeypatch):
    built = []
    real = hooks.UpdateHook.__init__

    def spy(self, *args, **kwargs):
        built.append(args)
        real(self, *args, **kwargs)

    monkeypatch.setattr(hooks.UpdateHook, "__init__", spy)
    calls: list = []
    with taddons.context(loadcore=False) as ctx:
        manager = IndexedAddonManager.adopt(ctx.master.addons)
        manager.add(Logged("only-request", calls, ("request",)))
        _run(manager, tflow.tflow(), HttpRequestHook)
        assert calls == [("only-request", "request")] and built == []
        manager.add(Logged("listener", calls, ("update",)))
        _run(manager, tflow.tflow(), HttpRequestHook)
    assert len(built) == 1 and calls[-1] == ("listener", "update")


def test_begin_lifecycle_finishes_sync_handlers_on_the_spot():
    calls: list = []
    with taddons.context(loadcore=False) as ctx:
        manager = IndexedAddonManager.adopt(ctx.master.addons)
        manager.add(Logged("a", calls, ("request", "update")), Logged("b", calls, ("request",)))
        assert manager.begin_lifecycle(HttpRequestHook(tflow.tflow())) is None
    assert calls == [("a", "request"), ("b", "request"), ("a", "update")]


def test_begin_lifecycle_hands_back_what_must_wait_and_runs_nothing_twice():
    calls: list = []
    with taddons.context(loadcore=False) as ctx:
        manager = IndexedAddonManager.adopt(ctx.master.addons)
        manager.add(Logged("a", calls, ("request",)), AsyncRequest(calls), Logged("b", calls, ("request", "update")))
        hook = HttpRequestHook(tflow.tflow())
        rest = manager.begin_lifecycle(hook)
        assert rest is not None and calls == [("a", "request")]
        # What inline_hooks does when it cannot finish: the hook's task then only awaits the rest.
        manager.mark_begun(hook, rest)
        ctx.master.event_loop.run_until_complete(manager.handle_lifecycle(hook))
    assert calls == [("a", "request"), ("async", "request"), ("b", "request"), ("b", "update")]
