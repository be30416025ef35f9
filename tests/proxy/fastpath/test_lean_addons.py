"""Which of mitmproxy's default addons `record` loads."""

from mitmproxy.addons import default_addons

from agentprobe.proxy.fastpath.lean_addons import UNUSED_DEFAULT_ADDONS, proxy_addons


def test_the_addons_traffic_needs_stay_and_option_driven_rewriters_go():
    kept = {type(a).__name__ for a in proxy_addons(default_addons())}
    # Listening, TLS, protocol detection, remote-client blocking, DNS, Alt-Svc rewriting in reverse mode.
    assert {"Core", "Proxyserver", "TlsConfig", "NextLayer", "Block", "DnsResolver", "UpdateAltSvc",
            "UpstreamAuth", "DisableH2C"} <= kept
    assert not kept & {"ModifyHeaders", "ModifyBody", "MapRemote", "AntiComp", "ServerPlayback", "Save"}


def test_names_match_this_mitmproxy_and_new_defaults_are_kept():
    names = {type(a).__name__ for a in default_addons()}
    # A rename in a mitmproxy release would silently load the addon again: say so here instead.
    assert UNUSED_DEFAULT_ADDONS <= names

    class SomeFutureAddon:
        pass

    future = SomeFutureAddon()
    assert future in proxy_addons([future])


def test_a_running_proxy_dispatches_through_the_hook_index_and_still_records(tmp_path, tls_ca_bundle,
                                                                             fake_provider_tls):
    from pathlib import Path

    from mitmproxy import http

    from proxy_fixtures import ALL_PATCHES, Recorded

    recorded = Recorded(tmp_path, Path(tls_ca_bundle), fastpath=ALL_PATCHES)

    from agentprobe.proxy.fastpath import debug_typecheck
    from agentprobe.proxy.fastpath.hook_index import IndexedAddonManager

    manager = recorded.recording.proxy.master.addons
    assert isinstance(manager, IndexedAddonManager)
    assert "onboarding" not in manager.lookup
    client = recorded.openai(fake_provider_tls)
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    # The recorder's hooks were looked up once and kept; mitmproxy's request handlers are still there.
    assert recorded.recording.recorder.response in manager.handlers("response")
    assert {type(f.__self__).__name__ for f in manager.handlers("request")} >= {"Recorder", "DisableH2C"}
    assert http.MessageData.__post_init__ is debug_typecheck._no_check
    [call] = recorded.calls()
    assert call["status"] == 200 and call["output_tokens"] == reply.usage.completion_tokens
    assert recorded.db().execute("SELECT fastpath FROM runs").fetchone()[0] == "on"
