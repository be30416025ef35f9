"""Which of mitmproxy's default addons `record` loads."""

from mitmproxy.addons import default_addons

from agentprobe.proxy.runner import UNUSED_DEFAULT_ADDONS, proxy_addons


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
