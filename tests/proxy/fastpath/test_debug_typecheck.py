"""mitmproxy's debug-only field type check is left out of the messages it parses."""

from mitmproxy import http

from agentprobe.proxy.fastpath import debug_typecheck


def test_the_check_is_gone_once_patched_and_patching_twice_changes_nothing():
    debug_typecheck.patch()
    assert http.MessageData.__post_init__ is debug_typecheck._no_check
    assert debug_typecheck.patch() is False
    # mitmproxy would have raised TypeError here: port must be an int.
    req = http.Request("example.com", "443", b"GET", b"https", b"example.com", b"/", b"HTTP/1.1",
                       http.Headers(), b"", None, 0.0, None)
    assert req.port == "443"
