"""Every change agentprobe makes to mitmproxy's internals, behind one switch.

Plain mitmproxy records everything correctly; these patches only make it cheaper per call
(what each one buys is measured by `bench/run.py --fastpath each`). They touch internals that
a mitmproxy release may change, so they apply only to the mitmproxy versions CI has tested
(TESTED_MITMPROXY, the one place that says so), only after each patch has checked the shape of
what it touches, and never by raising: anything unexpected leaves plain mitmproxy running and
says why in one log line.

The switch: `AGENTPROBE_FASTPATH=0` (or `record/trace --no-fastpath`) turns every patch off;
`AGENTPROBE_FASTPATH=coalesce,hook_index` turns on only those; `AGENTPROBE_FASTPATH=-inline_hooks`
turns on all but that one. The run row records the outcome (`runs.fastpath`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

log = logging.getLogger("agentprobe.proxy")

# [lowest, first untested): the mitmproxy releases whose internals these patches were written for.
TESTED_MITMPROXY = ((12, 3, 0), (12, 4, 0))

# In the order they are applied. inline_hooks finishes hooks through hook_index's manager, so it
# needs hook_index; coalesce and inline_hooks both work through root_layer's wrapper.
PATCHES = ("lean_addons", "hook_index", "inline_hooks", "coalesce", "debug_typecheck")
NEEDS = {"inline_hooks": ("hook_index",)}
ENV = "AGENTPROBE_FASTPATH"

_OFF = {"0", "off", "false", "no", "none"}
_ON = {"", "1", "on", "true", "yes", "all"}


class SwitchError(ValueError):
    """An AGENTPROBE_FASTPATH value that names no patch."""


@dataclass(frozen=True)
class Plan:
    active: frozenset[str]
    skipped: dict[str, str] = field(default_factory=dict)  # patch -> why it is not applied

    def describe(self) -> str:
        """What the run row says: on, off, or the patches that are on."""
        if self.active == frozenset(PATCHES):
            return "on"
        if not self.active:
            reasons = sorted(set(self.skipped.values()))
            return "off" + (f" ({'; '.join(reasons)})" if reasons and reasons != ["switched off"] else "")
        return "partial: " + ",".join(p for p in PATCHES if p in self.active)


def wanted(value: str | None = None) -> frozenset[str]:
    """The patches a switch value asks for (default: $AGENTPROBE_FASTPATH, else all)."""
    raw = (os.environ.get(ENV, "") if value is None else value).strip().lower()
    if raw in _OFF:
        return frozenset()
    if raw in _ON:
        return frozenset(PATCHES)
    names = [n.strip() for n in raw.split(",") if n.strip()]
    unknown = [n.lstrip("-") for n in names if n.lstrip("-") not in PATCHES]
    if unknown:
        raise SwitchError(f"{ENV}={raw!r} names no patch {unknown[0]!r}; known: {', '.join(PATCHES)}, or 0/1")
    if all(n.startswith("-") for n in names):
        return frozenset(PATCHES) - {n[1:] for n in names}
    if any(n.startswith("-") for n in names):
        raise SwitchError(f"{ENV}={raw!r} mixes patches to keep and to drop; give one kind")
    return frozenset(names)


def _version() -> tuple[int, ...] | None:
    try:
        from mitmproxy.version import VERSION

        return tuple(int(p) for p in VERSION.split(".")[:3] if p.isdigit())
    except Exception:  # noqa: BLE001 - an unreadable version is an untested one
        return None


def _modules():
    from . import coalesce, debug_typecheck, hook_index, inline_hooks, lean_addons, root_layer

    return {"lean_addons": lean_addons, "hook_index": hook_index, "inline_hooks": inline_hooks,
            "coalesce": coalesce, "debug_typecheck": debug_typecheck, "root_layer": root_layer}


def plan(asked: frozenset[str] | None = None) -> Plan:
    """Which patches would apply here, and why the others would not. Touches nothing."""
    asked = wanted() if asked is None else asked
    skipped = {p: "switched off" for p in PATCHES if p not in asked}
    if not asked:
        return Plan(frozenset(), skipped)
    version = _version()
    low, high = TESTED_MITMPROXY
    if version is None or not low <= version < high:
        shown = ".".join(map(str, version)) if version else "unknown"
        why = f"mitmproxy {shown} is not a tested version ({'.'.join(map(str, low))} to below {'.'.join(map(str, high))})"
        return Plan(frozenset(), {**skipped, **{p: why for p in asked}})
    try:
        modules = _modules()
        wrapper = modules["root_layer"].check()
    except Exception as e:  # noqa: BLE001 - an import that fails here is a reorganised mitmproxy
        return Plan(frozenset(), {**skipped, **{p: f"{type(e).__name__}: {e}" for p in asked}})
    active = set()
    for name in PATCHES:
        if name not in asked:
            continue
        try:
            why = modules[name].check()
        except Exception as e:  # noqa: BLE001
            why = f"{type(e).__name__}: {e}"
        if why is None and name in ("coalesce", "inline_hooks") and wrapper:
            why = wrapper
        if why is None and any(n not in active for n in NEEDS.get(name, ())):
            why = f"needs {', '.join(NEEDS[name])}"
        if why is None:
            active.add(name)
        else:
            skipped[name] = why
    return Plan(frozenset(active), skipped)


_applied: frozenset[str] = frozenset()


def install(asked: frozenset[str] | None = None) -> Plan:
    """Apply exactly the patches `plan` allows (undoing any others applied before); never raises."""
    global _applied
    p = plan(asked)
    try:
        _apply(p.active)
    except Exception as e:  # noqa: BLE001 - whatever went wrong, plain mitmproxy must be what runs
        try:
            _apply(frozenset())
        except Exception:  # noqa: BLE001
            log.exception("agentprobe: could not undo the fast path")
        p = Plan(frozenset(), {name: f"{type(e).__name__}: {e}" for name in PATCHES})
    for name, why in sorted(p.skipped.items()):
        if why != "switched off":
            log.warning("agentprobe: fast path %s is off: %s; traffic takes mitmproxy's own path", name, why)
    return p


def _apply(active: frozenset[str]) -> None:
    global _applied
    modules = _modules()
    features = modules["root_layer"].Features
    features.merge_writes = "coalesce" in active
    features.inline_hooks = "inline_hooks" in active
    for name in ("coalesce", "debug_typecheck"):
        (modules[name].patch if name in active else modules[name].unpatch)()
    if active & {"coalesce", "inline_hooks"}:
        modules["root_layer"].patch()
    else:
        modules["root_layer"].unpatch()
    _applied = active


def applied() -> frozenset[str]:
    return _applied


def default_addons(defaults: list) -> list:
    """mitmproxy's default addons as `record` loads them."""
    if "lean_addons" not in _applied:
        return defaults
    from .lean_addons import proxy_addons

    return proxy_addons(defaults)


def adopt(master) -> None:
    """Give a new master the indexed addon manager, when hook_index is on."""
    if "hook_index" in _applied:
        from .hook_index import IndexedAddonManager

        IndexedAddonManager.adopt(master.addons)
