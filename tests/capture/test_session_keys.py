"""Session keys, the session table and the client-process lookup, without a proxy."""

import os
import socket
import subprocess
import sys

import pytest

from agentprobe.addons.recorder import RunState
from agentprobe.capture.client_process import ProcessFinder, _hex_endpoint, command_line, is_local
from agentprobe.capture.sessions import SessionError, SessionPolicy, SessionTable, clean_name, parse_duration, trace_id


@pytest.mark.parametrize("header, expected", [
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "4bf92f3577b34da6a3ce929d0e0e4736"),
    (" 00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-00 ", "4bf92f3577b34da6a3ce929d0e0e4736"),
    ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future", "4bf92f3577b34da6a3ce929d0e0e4736"),
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", None),  # version 00 has no more fields
    ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None),
    ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", None),
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", None),
    ("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", None),
    ("", None), (None, None), ("garbage", None),
])
def test_trace_id(header, expected):
    assert trace_id(header) == expected


@pytest.mark.parametrize("text, seconds", [("10m", 600), ("30s", 30), ("1h", 3600), ("90", 90), ("1.5m", 90),
                                           ("250ms", 0.25), ("off", None), ("0", None)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "-5m", "10x", "", "0s"])
def test_parse_duration_refuses(text):
    with pytest.raises(SessionError, match="--run-idle"):
        parse_duration(text)


def test_policy_order():
    assert SessionPolicy().order == ("header", "traceparent", "process", "address")
    assert SessionPolicy(trust_headers=False).order == ("traceparent", "process", "address")
    assert SessionPolicy(runs_by="process").order == ("process",)
    assert not SessionPolicy(runs_by="recorder").splits and SessionPolicy(runs_by="recorder", idle_s=5).splits
    with pytest.raises(SessionError, match="--runs-by"):
        SessionPolicy(runs_by="bogus")
    with pytest.raises(SessionError, match="--trust-session-headers"):
        SessionPolicy(runs_by="header", trust_headers=False)


def test_clean_name_keeps_no_key_and_no_control_characters():
    assert clean_name("planner\x1b[31m") == "planner[31m"
    assert clean_name("   ") is None and clean_name(None) is None
    assert "sk-proj-" not in clean_name("agent sk-proj-LEAKEDkeyLEAKED0123456789abcdef")
    assert len(clean_name("x" * 5000)) == 200


class _Table:
    def __init__(self, **kw):
        self.begun, self.ended = [], []
        self.table = SessionTable(self._begin, lambda state, status: self.ended.append((state.run_id, status)), **kw)

    def _begin(self, row):
        self.begun.append(row)
        return RunState(f"run{len(self.begun)}")


def test_table_begins_once_per_key_and_ends_quiet_sessions():
    t = _Table(idle_s=10)
    a = t.table.state_for(("header", "a"), lambda: {"session": "a"})
    assert t.table.state_for(("header", "a"), lambda: pytest.fail("described twice")) is a
    b = t.table.state_for(("header", "b"), lambda: {"session": "b"})
    assert [r["session"] for r in t.begun] == ["a", "b"]
    b.dispatched = 1  # a call in flight keeps its session alive however long it takes
    now = t.table.live[("header", "a")].last_seen
    assert t.table.reap(now + 11) == 1 and t.ended == [("run1", "completed")]
    assert t.table.reap(now + 30) == 0
    b.completed = 1
    assert t.table.reap(now + 39) == 0 and t.table.reap(now + 41) == 1
    assert t.table.state_for(("header", "a"), lambda: {"session": "a"}) is not a  # a new run for the name
    t.table.end_all("interrupted")
    assert t.ended[-1] == ("run3", "interrupted") and not t.table.live


def test_table_ends_a_process_session_when_the_process_is_gone():
    alive = {"p1": True}
    t = _Table(alive=lambda client: alive[client])
    t.table.state_for(("process", 1, "x"), dict, client="p1")
    assert t.table.reap() == 0
    alive["p1"] = False
    assert t.table.reap() == 1 and t.ended == [("run1", "completed")]


def test_is_local():
    assert is_local("127.0.0.1", "127.0.0.1") and is_local("::1", "::1") and is_local("::ffff:127.0.0.1", None)
    assert is_local("10.1.2.3", "10.1.2.3") and is_local("::ffff:10.1.2.3", "10.1.2.3")
    assert not is_local("10.1.2.4", "10.1.2.3") and not is_local("not an ip", "127.0.0.1")


def test_hex_endpoint_is_the_kernels_form():
    assert _hex_endpoint("127.0.0.1", 8080)[2] == "0100007F:1F90"
    assert _hex_endpoint("::ffff:127.0.0.1", 80)[2] == "0100007F:0050"
    assert _hex_endpoint("::1", 443)[2] == "00000000000000000000000001000000:01BB"


def test_command_line_is_scrubbed_and_bounded():
    key = "sk-proj-ARGVkeyARGVkey0123456789abcdef"
    line = command_line(["python", "agent.py", "--api-key", key, "it's"])
    assert key not in line and "agent.py" in line and "'it'\"'\"'s'" in line
    assert command_line([]) is None
    long = command_line(["python", "-c", "x" * 5000, key])
    assert len(long) < 2100 and key not in long


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="Linux /proc")
@pytest.mark.parametrize("family, host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_finder_names_the_process_behind_a_connection(family, host):
    try:
        server = socket.socket(family)
        server.bind((host, 0))
    except OSError:
        pytest.skip(f"no {host} here")
    server.listen()
    port = server.getsockname()[1]
    child = subprocess.Popen([sys.executable, "-c", f"import socket, sys; s = socket.create_connection(('{host}', {port}));"
                              " sys.stdin.read()", "--token", "sk-proj-FINDERkeyFINDER0123456789abcd"],
                             stdin=subprocess.PIPE)
    try:
        conn, peer = server.accept()
        finder = ProcessFinder()
        found = finder.find(peer, conn.getsockname())
        assert found is not None and found.pid == child.pid
        assert "socket.create_connection" in found.command and "sk-proj-FINDER" not in found.command
        assert finder.find(peer, conn.getsockname()) == found  # again, from the recent processes first
        assert finder.alive(found)
        assert finder.find((host, 1), conn.getsockname()) is None  # no such connection
    finally:
        child.communicate(b"", timeout=10)
        server.close()
    assert not finder.alive(found)
