"""Leave out mitmproxy's debug-only type check of every parsed request and response.

mitmproxy checks each field of every request and response it builds against
the field's annotation, inside `if __debug__:`: its authors meant it for
development, and `python -O` drops it. It walks twelve fields through
`typing` introspection per message, on the proxy's event loop, for every
request and response. `record` cannot run under -O, which would strip every
assert in every library, so only this one check is dropped. The messages it
checked are the ones mitmproxy's own HTTP parser builds. `bench/run.py
--fastpath each` measures what leaving it out buys.
"""

from __future__ import annotations

from mitmproxy import http


_original = None


def _no_check(self) -> None:
    pass


def check() -> str | None:
    """Why this patch cannot apply to this mitmproxy, or None."""
    if not hasattr(http, "MessageData"):
        return "mitmproxy.http has no MessageData"
    return None


def patch() -> bool:
    """True when the check was there to drop (a mitmproxy that removes it needs nothing)."""
    global _original
    current = getattr(http.MessageData, "__post_init__", _no_check)
    if current is _no_check:
        return False
    _original = current
    http.MessageData.__post_init__ = _no_check
    return True


def unpatch() -> None:
    global _original
    if _original is not None:
        http.MessageData.__post_init__ = _original
        _original = None
