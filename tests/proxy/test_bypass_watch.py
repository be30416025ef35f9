"""The bypass watcher: what counts as a connection around the proxy, and the real watcher process on real sockets."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import threading

import pytest

from agentprobe.proxy import bypass_watch
from agentprobe.proxy.bypass_watch import (DEFAULT_PORTS, BypassWatch, ProxyAddress, Tally, TcpTable, _decode,
                                           parse_ports, run_columns)

linux_only = pytest.mark.skipif(not bypass_watch.SUPPORTED, reason="the watcher runs on Linux only")


# -- the watched ports ----------------------------------------------------------------------
@pytest.mark.parametrize("text,ports", [
    (None, DEFAULT_PORTS),
    ("", DEFAULT_PORTS),
    ("443", (443,)),
    (" 443, 8080 ,443", (443, 8080)),
    ("+9000,443", (*DEFAULT_PORTS, 9000)),
    ("none", None),
    ("OFF", None),
])
def test_parse_ports(text, ports):
    assert parse_ports(text) == ports


@pytest.mark.parametrize("text", ["http", "443,,80", "0", "65536", "-1", "443;80", "+", "4 43"])
def test_bad_ports_say_what_is_accepted(text):
    with pytest.raises(ValueError, match="ports 1-65535 separated by commas"):
        parse_ports(text)


# -- classification ---------------------------------------------------------------------------
def test_the_proxy_address_is_not_a_bypass():
    tally = Tally(frozenset({443, 8080}), ProxyAddress("127.0.0.1", 8080))
    assert not tally.add(10, "node", ("127.0.0.1", 50000), ("127.0.0.1", 8080))
    assert not tally.add(10, "node", ("::ffff:127.0.0.1", 50001), ("::ffff:127.0.0.1", 8080))  # IPv4-mapped
    # The proxy's port on another address, and another port on the proxy's address, are bypasses.
    assert tally.add(10, "node", ("10.0.0.5", 50002), ("10.0.0.9", 8080))
    assert tally.add(10, "node", ("127.0.0.1", 50003), ("127.0.0.1", 443))
    assert tally.connections == 2


def test_a_proxy_on_every_address_is_reached_through_any_local_one():
    proxy = ProxyAddress("0.0.0.0", 8080, local_ips=["192.168.1.20", "fe80::1%eth0"])
    assert ("127.0.0.1", 8080) in proxy and ("127.0.0.2", 8080) in proxy and ("::1", 8080) in proxy
    assert ("192.168.1.20", 8080) in proxy and ("fe80::1", 8080) in proxy
    assert ("192.168.1.21", 8080) not in proxy and ("127.0.0.1", 8081) not in proxy


def test_only_watched_ports_count():
    tally = Tally(frozenset({443}), ProxyAddress("127.0.0.1", 8080))
    assert not tally.add(1, "python", ("10.0.0.5", 40000), ("10.0.0.9", 5432))  # a database, say
    assert tally.add(1, "python", ("10.0.0.5", 40001), ("104.18.6.192", 443))
    assert tally.connections == 1


def test_the_same_socket_seen_twice_is_one_connection():
    tally = Tally(frozenset({443}))
    ends = (("10.0.0.5", 40000), ("104.18.6.192", 443))
    assert tally.add(7, "node", *ends)
    assert not tally.add(7, "node", *ends)  # the next poll
    assert not tally.add(8, "node", *ends)  # a forked child holding the same socket
    assert tally.add(7, "node", ("10.0.0.5", 40001), ("104.18.6.192", 443))  # a second connection
    assert tally.connections == 2
    [group] = tally.bypasses()
    assert (group.pid, group.process, group.address, group.port, group.connections) == (7, "node", "104.18.6.192",
                                                                                       443, 2)


def test_groups_are_per_process_and_remote():
    tally = Tally(frozenset({443, 8000}))
    tally.add(7, "node", ("10.0.0.5", 1), ("104.18.6.192", 443))
    tally.add(7, "node", ("10.0.0.5", 2), ("127.0.0.1", 8000))
    tally.add(9, "curl", ("10.0.0.5", 3), ("104.18.6.192", 443))
    assert {(b.pid, b.address, b.port, b.connections) for b in tally.bypasses()} == {
        (7, "104.18.6.192", 443, 1), (7, "127.0.0.1", 8000, 1), (9, "104.18.6.192", 443, 1)}


def test_kernel_addresses_decode():
    if sys.byteorder != "little":
        pytest.skip("the samples are as a little-endian kernel prints them")
    assert _decode("0100007F:1F90") == ("127.0.0.1", 8080)
    assert _decode("C0A80114:01BB") == ("20.1.168.192", 443)
    assert _decode("00000000000000000000000001000000:2CAB") == ("::1", 11435)
    assert _decode("0000000000000000FFFF00000100007F:0050") == ("127.0.0.1", 80)  # IPv4-mapped


def test_the_tcp_table_keeps_connections_to_watched_ports(tmp_path):
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    rows = [
        "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 100 1",  # listen
        "   1: 0100007F:C350 C0A80114:01BB 01 00000000:00000000 00:00000000 00000000     0        0 101 1",  # 443
        "   2: 0100007F:C351 C0A80114:1538 01 00000000:00000000 00:00000000 00000000     0        0 102 1",  # 5432
        "   3: 0100007F:C352 C0A80114:01BB 06 00000000:00000000 00:00000000 00000000     0        0 0 1",  # TIME_WAIT
        "   4: 0100007F:C353 C0A80114:01BB 02 00000000:00000000 00:00000000 00000000     0        0 104 1",  # SYN_SENT
    ]
    (tmp_path / "tcp").write_text(header + "\n".join(rows) + "\n")
    (tmp_path / "tcp6").write_text(header)
    present, watched = TcpTable([443], root=tmp_path).read()
    assert present == {100, 101, 102, 0, 104}
    assert set(watched) == {101, 104}
    assert watched[101] == ("0100007F:C350", "C0A80114:01BB")


def test_run_columns_store_no_count_when_not_checked():
    assert run_columns({"checked": False, "reason": "x"})["bypassed_connections"] is None
    cols = run_columns({"checked": True, "connections": 0, "bypasses": []})
    assert cols["bypassed_connections"] == 0 and json.loads(cols["bypass_detail"])["checked"] is True


def test_other_platforms_are_not_checked_and_do_not_crash(monkeypatch):
    monkeypatch.setattr(bypass_watch, "SUPPORTED", False)
    monkeypatch.setattr(bypass_watch.sys, "platform", "darwin")
    watch = BypassWatch(DEFAULT_PORTS).start()
    assert watch.ready() is False
    watch.follow(12345, ("127.0.0.1", 8080))
    report = watch.stop()
    assert report == {"checked": False, "reason": "agentprobe watches for them on Linux only, not on darwin"}


def test_switched_off():
    assert BypassWatch(None).start().stop()["reason"].startswith("the check is switched off")


# -- the watcher process on real sockets ---------------------------------------------------------
class Listener:
    """A local TCP server that accepts and holds connections, standing for a provider or the proxy."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def listeners():
    made = []

    def make() -> Listener:
        made.append(Listener())
        return made[-1]

    yield make
    for listener in made:
        listener.close()


def watch_child(code: str, ports, proxy_port: int, *args) -> tuple[dict, str]:
    """Run `code` as a child under the real watcher process; (the watcher's report, the child's stdout)."""
    watch = BypassWatch(tuple(ports), interval_s=0.05).start()
    assert watch.ready()
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                             stdout=subprocess.PIPE, text=True)
    watch.follow(child.pid, ("127.0.0.1", proxy_port))
    out, _ = child.communicate(timeout=30)
    assert child.returncode == 0
    return watch.stop(), out


HOLD = """
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
time.sleep(float(sys.argv[2]))
"""


@linux_only
def test_a_grandchild_is_watched_too(listeners):
    provider, proxy = listeners(), listeners()
    report, out = watch_child(f"""
        import subprocess, sys
        grandchild = subprocess.Popen([sys.executable, "-c", {HOLD!r}, sys.argv[1], "0.5"])
        print(grandchild.pid)
        assert grandchild.wait() == 0
    """, [provider.port], proxy.port, provider.port)
    assert report["checked"] and report["connections"] == 1, report
    [b] = report["bypasses"]
    assert b["pid"] == int(out) and b["address"] == "127.0.0.1" and b["port"] == provider.port
    assert b["process"].startswith("python")


@linux_only
def test_connections_to_the_proxy_and_of_other_processes_are_not_bypasses(listeners):
    proxy = listeners()
    mine = socket.create_connection(("127.0.0.1", proxy.port))  # this process is not the child's tree
    try:
        # The proxy's port is watched here, so only the proxy address rule keeps these out.
        report, _ = watch_child(f"""
            import socket, time
            held = [socket.create_connection(("127.0.0.1", {proxy.port})) for _ in range(3)]
            time.sleep(0.4)
        """, [proxy.port], proxy.port)
    finally:
        mine.close()
    assert report["checked"] and report["connections"] == 0 and report["bypasses"] == [], report


@linux_only
def test_one_socket_held_across_polls_and_a_fork_counts_once(listeners):
    provider, proxy = listeners(), listeners()
    report, out = watch_child(f"""
        import os, socket, time
        s = socket.create_connection(("127.0.0.1", {provider.port}))
        pid = os.fork()
        if pid == 0:  # the forked child holds the same socket
            time.sleep(0.6)
            os._exit(0)
        time.sleep(0.6)
        os.waitpid(pid, 0)
        print(os.getpid())
    """, [provider.port], proxy.port)
    assert report["polls"] >= 8, report  # seen at many polls, by two processes
    assert report["connections"] == 1, report
    assert [(b["pid"], b["connections"]) for b in report["bypasses"]] == [(int(out), 1)]


@linux_only
def test_distinct_connections_are_each_counted(listeners):
    provider, other, proxy = listeners(), listeners(), listeners()
    report, _ = watch_child(f"""
        import socket, time
        held = [socket.create_connection(("127.0.0.1", {provider.port})) for _ in range(3)]
        held.append(socket.create_connection(("127.0.0.1", {other.port})))
        time.sleep(0.3)
    """, [provider.port, other.port], proxy.port)
    assert report["connections"] == 4
    assert sorted((b["port"], b["connections"]) for b in report["bypasses"]) == sorted(
        [(provider.port, 3), (other.port, 1)])


@linux_only
def test_a_failed_poll_is_counted_and_the_next_one_runs(monkeypatch):
    watcher = bypass_watch.Watcher([443])
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise PermissionError("/proc/net/tcp")

    monkeypatch.setattr(watcher, "poll", flaky)
    watcher.safe_poll()
    watcher.safe_poll()
    report = watcher.report(0.0)
    assert len(calls) == 2 and report["poll_errors"] == 1 and "PermissionError" in report["last_error"]
    assert "some may not have been seen" in bypass_lines_of(report)


def bypass_lines_of(report: dict) -> str:
    from agentprobe.report.console import bypass_lines

    return "\n".join(bypass_lines(report))


@linux_only
def test_a_watcher_that_dies_says_why_and_trace_goes_on():
    # A watcher that exits before it is ready: the report says why, and nothing raises.
    watch = BypassWatch((443,))
    watch.ports = ("not-a-port",)  # its argv parse fails with ValueError
    watch.start()
    assert watch.ready() is False
    watch.follow(1, ("127.0.0.1", 8080))
    report = watch.stop()
    assert report["checked"] is False and "ValueError" in report["reason"], report
