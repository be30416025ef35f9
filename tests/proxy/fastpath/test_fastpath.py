"""The fast path's one switch, its version gate, its shape checks, and a proxy with it off."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mitmproxy import http
from mitmproxy.proxy import server
from mitmproxy.proxy.layers.http import _http1

from agentprobe.proxy import fastpath
from agentprobe.proxy.fastpath import coalesce, debug_typecheck, hook_index
from proxy_fixtures import Recorded

ALL = frozenset(fastpath.PATCHES)


@pytest.fixture(autouse=True)
def _restore():
    yield
    fastpath.install(ALL)  # the state every other test in this process expects


@pytest.mark.parametrize("value, expected", [
    ("", ALL), ("1", ALL), ("on", ALL), ("0", frozenset()), ("off", frozenset()), ("false", frozenset()),
    ("coalesce,hook_index", {"coalesce", "hook_index"}),
    ("-inline_hooks", ALL - {"inline_hooks"}),
    ("-inline_hooks, -coalesce", ALL - {"inline_hooks", "coalesce"}),
])
def test_switch_values(value, expected):
    assert fastpath.wanted(value) == expected


@pytest.mark.parametrize("value, message", [("turbo", "names no patch 'turbo'"), ("coalesce,-hook_index", "mixes")])
def test_a_bad_switch_says_what_is_known(value, message):
    with pytest.raises(fastpath.SwitchError, match=message):
        fastpath.wanted(value)


def test_the_environment_is_the_default_switch(monkeypatch):
    monkeypatch.setenv("AGENTPROBE_FASTPATH", "0")
    assert fastpath.wanted() == frozenset()
    assert fastpath.plan().describe() == "off"


def test_this_mitmproxy_is_a_tested_one_and_every_patch_applies():
    p = fastpath.plan(ALL)
    assert p.active == ALL and p.skipped == {} and p.describe() == "on"


def test_an_untested_mitmproxy_gets_plain_mitmproxy_with_one_line_each(monkeypatch, caplog):
    monkeypatch.setattr(fastpath, "_version", lambda: (13, 0, 0))
    p = fastpath.install(ALL)
    assert p.active == frozenset() and fastpath.applied() == frozenset()
    assert p.describe().startswith("off (mitmproxy 13.0.0 is not a tested version")
    assert "layer" not in vars(server.ConnectionHandler)
    assert not isinstance(_http1.make_body_reader(None), coalesce._JoiningChunkedReader)
    assert http.MessageData.__post_init__ is not debug_typecheck._no_check
    assert sum("fast path" in r.message for r in caplog.records) == len(ALL)


def test_a_patch_whose_internal_moved_is_left_out_and_what_needs_it_too(monkeypatch):
    monkeypatch.setattr(hook_index, "check", lambda: "AddonManager has no trigger_event")
    p = fastpath.install(ALL)
    assert "hook_index" not in p.active and "inline_hooks" not in p.active
    assert p.skipped["hook_index"] == "AddonManager has no trigger_event"
    assert p.skipped["inline_hooks"] == "needs hook_index"
    assert {"coalesce", "debug_typecheck", "lean_addons"} <= p.active
    assert p.describe() == "partial: lean_addons,coalesce,debug_typecheck"


def test_a_failing_patch_never_raises_and_leaves_plain_mitmproxy(monkeypatch):
    def broken():
        raise RuntimeError("boom")

    monkeypatch.setattr(coalesce, "patch", broken)
    p = fastpath.install(ALL)
    assert p.active == frozenset() and "RuntimeError: boom" in p.skipped["coalesce"]
    assert "layer" not in vars(server.ConnectionHandler)


def test_off_then_on_again_in_one_process():
    fastpath.install(frozenset())
    assert "layer" not in vars(server.ConnectionHandler)
    fastpath.install(ALL)
    assert isinstance(_http1.make_body_reader(None), coalesce._JoiningChunkedReader)
    assert isinstance(vars(server.ConnectionHandler)["layer"], property)


def test_a_proxy_with_the_fast_path_off_records_the_same_and_says_so(tmp_path, tls_ca_bundle, fake_provider_tls):
    rec = Recorded(tmp_path, Path(tls_ca_bundle), fastpath=frozenset())
    try:
        assert fastpath.applied() == frozenset()
        manager = rec.recording.proxy.master.addons
        assert not isinstance(manager, hook_index.IndexedAddonManager)
        assert "onboarding" in manager.lookup  # every default addon, as in plain mitmproxy
        client = rec.openai(fake_provider_tls)
        stream = client.chat.completions.create(model="gpt-4o-mini", stream=True,
                                                stream_options={"include_usage": True},
                                                messages=[{"role": "user", "content": "Count to three."}])
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        db = rec.db()
        [call] = db.query("SELECT * FROM calls")
        assert call["stream_complete"] == 1 and call["output_tokens"] > 0
        assert db.execute("SELECT text FROM prompts WHERE sha256 = ?", [call["output_sha256"]]).fetchone()[0] == text
        assert db.execute("SELECT fastpath FROM runs").fetchone()[0] == "off"
        [sent] = fake_provider_tls.requests
        assert json.loads(sent["body"])["messages"][0]["content"] == "Count to three."
    finally:
        rec.stop()


def test_inline_hooks_turn_off_when_mitmproxy_changes_what_they_stand_in_for(monkeypatch):
    from agentprobe.proxy.fastpath import inline_hooks

    monkeypatch.setitem(inline_hooks.KNOWN_SOURCES, "ConnectionHandler.hook_task", {"0000000000000000"})
    p = fastpath.plan(ALL)
    assert "inline_hooks" not in p.active
    assert p.skipped["inline_hooks"] == "mitmproxy's ConnectionHandler.hook_task is not the one this patch was written for"


def test_the_run_row_says_what_the_proxy_really_ran(tmp_path, tls_ca_bundle, monkeypatch):
    def broken():
        raise RuntimeError("boom")

    monkeypatch.setattr(coalesce, "patch", broken)  # the plan says on; installing it fails
    rec = Recorded(tmp_path, Path(tls_ca_bundle), fastpath=ALL)
    rec.stop()
    assert rec.db().execute("SELECT fastpath FROM runs").fetchone()[0].startswith("off (RuntimeError: boom")
