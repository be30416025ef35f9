"""Through the real proxy: hooks that need not wait finish inline; the ones that must wait still do."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from mitmproxy.proxy import server

from agentprobe.proxy.fastpath import root_layer
from agentprobe.proxy.fastpath.hook_index import IndexedAddonManager

from proxy_fixtures import ALL_PATCHES, Recorded
from tcp_server import RawServer

FLOW_HOOKS = {"requestheaders", "request", "responseheaders", "response"}


def _answer(conn) -> None:
    body = json.dumps({
        "id": "c1", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }).encode()
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                 b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))


class Counting:
    """A plain addon: its request hook adds a header the provider must see."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def requestheaders(self, flow) -> None:
        self.calls.append("requestheaders")

    def request(self, flow) -> None:
        self.calls.append("request")
        flow.request.headers["x-sync"] = "1"

    def response(self, flow) -> None:
        self.calls.append("response")


class Waiting:
    """An async hook and an intercepted flow: both must hold the request back until they are done."""

    def __init__(self) -> None:
        self.held_s: list[float] = []

    async def requestheaders(self, flow) -> None:
        await asyncio.sleep(0.05)
        flow.request.headers["x-async"] = "1"

    def request(self, flow) -> None:
        flow.intercept()
        start = time.monotonic()

        def resume():
            self.held_s.append(time.monotonic() - start)
            flow.request.headers["x-resumed"] = "1"
            flow.resume()

        asyncio.get_running_loop().call_later(0.2, resume)


def _hook_tasks(monkeypatch) -> list[str]:
    started: list[str] = []
    original = server.ConnectionHandler.hook_task

    async def hook_task(self, hook):
        started.append(hook.name)
        return await original(self, hook)

    monkeypatch.setattr(server.ConnectionHandler, "hook_task", hook_task)
    return started


def _call(rec: Recorded, upstream: RawServer) -> str:
    client = rec.openai(upstream, max_retries=0)
    reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    return reply.choices[0].message.content


def test_plain_hooks_finish_inline_with_their_effects(tmp_path, tls_ca_bundle, monkeypatch):
    upstream, counting = RawServer(_answer), Counting()
    rec = Recorded(tmp_path, Path(tls_ca_bundle), addons=[counting], fastpath=ALL_PATCHES)
    started = _hook_tasks(monkeypatch)  # after start: the fast path checks hook_task's source when it installs
    try:
        assert _call(rec, upstream) == "ok"
        assert _call(rec, upstream) == "ok"
        assert isinstance(rec.recording.proxy.master.addons, IndexedAddonManager)
        calls = rec.calls()  # stops the proxy: every hook has run
        assert [c["status"] for c in calls] == [200, 200] and calls[0]["output_tokens"] == 1
        # No flow hook went through a task of its own, each handler ran once per call, in order,
        # and the request left only after its request hook had changed it.
        assert not FLOW_HOOKS & set(started), started
        assert counting.calls == ["requestheaders", "request", "response"] * 2
        assert [r.count(b"x-sync: 1") for r in upstream.requests] == [1, 1]
    finally:
        rec.stop()
        upstream.close()


def test_hooks_that_must_wait_still_hold_the_request(tmp_path, tls_ca_bundle, monkeypatch):
    upstream, counting, waiting = RawServer(_answer), Counting(), Waiting()
    rec = Recorded(tmp_path, Path(tls_ca_bundle), addons=[counting, waiting], fastpath=ALL_PATCHES)
    started = _hook_tasks(monkeypatch)
    try:
        assert _call(rec, upstream) == "ok"
        [sent] = upstream.requests
        assert b"x-sync: 1" in sent and b"x-async: 1" in sent and b"x-resumed: 1" in sent
        assert waiting.held_s and waiting.held_s[0] >= 0.19
        [call] = rec.calls()  # stops the proxy: every hook has run
        assert call["status"] == 200
        # Those two took mitmproxy's own path; the handlers that had already run did not run again.
        assert {"requestheaders", "request"} <= set(started)
        assert counting.calls == ["requestheaders", "request", "response"]
    finally:
        rec.stop()
        upstream.close()


def test_patch_takes_effect_on_this_mitmproxy_and_unpatch_undoes_it():
    # A mitmproxy upgrade that renames these internals must fail here, not silently slow every call.
    assert root_layer.check() is None
    root_layer.patch()
    assert isinstance(server.ConnectionHandler.__dict__.get("layer"), property)
    root_layer.unpatch()
    assert "layer" not in server.ConnectionHandler.__dict__
