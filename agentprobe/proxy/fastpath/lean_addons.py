"""Leave out the mitmproxy default addons `record` never uses.

mitmproxy offers every hook of every flow to every addon, whether or not it implements it.
These defaults only act on options, commands or UIs that `record` never sets or offers
(replay, maps, body and header rewriting, saving flows, scripts, the browser, comments,
history, the mitm.it onboarding site: `agentprobe ca` hands out the CA instead), so they are
not loaded. Every other default, including any a newer mitmproxy adds, still is. AntiComp's
absence also guarantees the agent's own Accept-Encoding passes through untouched, and it is
the one default that could change traffic: `record` never sets its option, so with the fast
path off it is loaded but idle. `bench/run.py --fastpath each` measures what leaving them out buys.
"""

from __future__ import annotations

UNUSED_DEFAULT_ADDONS = frozenset({
    "AntiCache", "AntiComp", "Browser", "BlockList", "ClientPlayback", "CommandHistory", "Comment", "Cut",
    "Export", "MapLocal", "MapRemote", "ModifyBody", "ModifyHeaders", "Onboarding", "ProxyAuth", "Save", "SaveHar",
    "ScriptLoader", "ServerPlayback", "StickyAuth", "StickyCookie",
})


def check() -> str | None:
    return None  # nothing internal: addons are told apart by their public class names


def proxy_addons(defaults: list) -> list:
    return [a for a in defaults if type(a).__name__ not in UNUSED_DEFAULT_ADDONS]
