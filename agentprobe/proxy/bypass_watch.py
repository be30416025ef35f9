"""Connections that go around the proxy: a small process watches `trace`'s child and its descendants.

Some clients ignore every proxy setting (Node's fetch before Node 24, aiohttp without
trust_env, a NO_PROXY entry, a base URL pointing elsewhere). Their calls never reach the
recorder, so the run would look clean while it is not. While the traced command runs, this
watcher polls the command's process tree for TCP connections to the watched ports (HTTPS,
HTTP and the local model servers') whose far end is not the proxy, and reports each one at
the end: pid, process name, remote address and port. Command lines are never read or stored.

It is a separate process, not a thread of `trace`: the proxy's event loop runs on a thread
there, and a watcher thread would take the GIL from it on every poll.

Each poll lists the sockets the tree's processes hold (/proc/PID/fd) and reads the kernel's
TCP tables (/proc/net/tcp and tcp6) only when one of them is a TCP socket not seen before;
psutil lists the processes, their parents and names. (Reading the tables costs the same
whatever they hold, ~3 ms for both on the development machine, and psutil's per-process
connection list reads both for every process: polled blindly, that would be 5-10% of a core.)

A poll sees the connections open at that moment: one opened and closed between two polls
(every 50 ms by default) is missed, as is a process that starts and exits between two polls,
or one whose parent exited before either was seen.
Linux only; elsewhere `trace` says the check was not made.

Protocol (the parent is `BypassWatch`): argv gives the ports and the interval; the watcher
prints "ready" once it can poll, reads one JSON line {"pid", "proxy": [host, port]} from stdin,
polls until stdin closes, then prints its report as one JSON line and exits.
"""

from __future__ import annotations

import ipaddress
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

# HTTPS, HTTP, vLLM (and most OpenAI-compatible servers), Ollama, LM Studio.
DEFAULT_PORTS = (443, 80, 8000, 11434, 1234)
PORTS_ENV = "AGENTPROBE_BYPASS_PORTS"
POLL_S = 0.05
MAX_GROUPS = 100  # (process, remote) groups kept in the report; the count covers every connection
READY_TIMEOUT_S = 10
STOP_TIMEOUT_S = 10
SUPPORTED = sys.platform.startswith("linux")

_LISTEN = "0A"  # /proc/net/tcp state of a listening socket


def parse_ports(text: str | None) -> tuple[int, ...] | None:
    """'443,80' (these ports), '+8080' (the defaults and these), 'none' (no check) -> the ports, or None.

    Raises ValueError with a message that says what is wrong and what is accepted.
    """
    if text is None or not text.strip():
        return DEFAULT_PORTS
    text = text.strip()
    if text.lower() in ("none", "off"):
        return None
    extend = text.startswith("+")
    ports: list[int] = list(DEFAULT_PORTS) if extend else []
    for part in text.lstrip("+").split(","):
        part = part.strip()
        if not part.isdigit() or not 1 <= int(part) <= 65535:
            raise ValueError(f"bad bypass port {part!r} in {text!r}: give ports 1-65535 separated by commas"
                             " (e.g. 443,80,8000), +PORT,... to add to the defaults, or none")
        if int(part) not in ports:
            ports.append(int(part))
    return tuple(ports)


# -- classification: pure, unit-tested ------------------------------------------------------
Endpoint = tuple[str, int]  # (ip, port), the ip in its normal text form (IPv4-mapped IPv6 as IPv4)


def normal_ip(ip: str) -> str:
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        return str(addr.ipv4_mapped)
    return str(addr)


class ProxyAddress:
    """Where the proxy listens; a connection there is the proxy doing its job, not a bypass."""

    def __init__(self, host: str, port: int, local_ips: Iterable[str] = ()) -> None:
        self.port = port
        ips = {normal_ip(info[4][0]) for info in _resolve(host, port)}
        wildcard = any(ipaddress.ip_address(ip).is_unspecified for ip in ips)
        # Listening on every address: any address of this machine reaches the proxy.
        self.ips = ips | ({normal_ip(ip) for ip in local_ips} if wildcard else set())
        self.wildcard = wildcard

    def __contains__(self, remote: Endpoint) -> bool:
        ip, port = remote
        if port != self.port:
            return False
        ip = normal_ip(ip)
        if ip in self.ips:
            return True
        return self.wildcard and ipaddress.ip_address(ip).is_loopback


def _resolve(host: str, port: int) -> list:
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return [(None, None, None, None, (host, port))]


@dataclass
class Bypass:
    pid: int
    process: str
    address: str
    port: int
    connections: int = 0


@dataclass
class Tally:
    """Distinct bypassing connections, grouped by (pid, remote address, remote port)."""

    ports: frozenset[int]
    proxy: ProxyAddress | None = None
    seen: set = field(default_factory=set)  # (local, remote) of every connection counted
    groups: dict = field(default_factory=dict)  # (pid, ip, port) -> Bypass

    def is_bypass(self, remote: Endpoint) -> bool:
        return remote[1] in self.ports and not (self.proxy is not None and remote in self.proxy)

    def add(self, pid: int, process: str, local: Endpoint, remote: Endpoint) -> bool:
        """Count one observed connection; False when it is not a bypass or was counted already.

        A TCP connection is its two endpoints: the same socket seen at every poll, or held by a
        parent and its forked child, counts once, under the first process it was seen in.
        """
        remote = (normal_ip(remote[0]), remote[1])
        if not self.is_bypass(remote):
            return False
        key = ((normal_ip(local[0]), local[1]), remote)
        if key in self.seen:
            return False
        self.seen.add(key)
        group = self.groups.get((pid, *remote))
        if group is None:
            group = self.groups[(pid, *remote)] = Bypass(pid, process, remote[0], remote[1])
        group.connections += 1
        return True

    @property
    def connections(self) -> int:
        return len(self.seen)

    def bypasses(self) -> list[Bypass]:
        return sorted(self.groups.values(), key=lambda b: (-b.connections, b.pid, b.address, b.port))


# -- the Linux sampler ------------------------------------------------------------------------
def _decode(hexaddr: str) -> Endpoint:
    """'0100007F:1F90' (an address as /proc/net/tcp prints it) -> ('127.0.0.1', 8080)."""
    ip_hex, port_hex = hexaddr.split(":")
    raw = bytes.fromhex(ip_hex)
    # The kernel prints each 32-bit word of the address in the machine's byte order.
    if sys.byteorder == "little":
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
    return normal_ip(socket.inet_ntop(family, raw)), int(port_hex, 16)


class TcpTable:
    """The machine's TCP tables, read whole: every socket's inode, and the ends of those to a watched port."""

    def __init__(self, ports: Iterable[int], root: Path = Path("/proc/net")) -> None:
        self.port_hex = {f"{p:04X}" for p in ports}
        self.paths = [root / "tcp", root / "tcp6"]

    def read(self) -> tuple[set[int], dict[int, tuple[str, str]]]:
        """(every inode in the tables, inode -> (local, remote) as printed for connections to a watched port)."""
        present, watched = set(), {}
        for path in self.paths:
            try:
                text = path.read_text()
            except OSError:
                continue
            for line in text.splitlines()[1:]:
                fields = line.split(None, 10)
                if len(fields) < 10:
                    continue
                inode = int(fields[9])
                present.add(inode)
                if inode and fields[3] != _LISTEN and fields[2][-4:] in self.port_hex:
                    watched[inode] = (fields[1], fields[2])
        return present, watched


def socket_fds(pid: int) -> dict[int, str]:
    """inode -> /proc path of one descriptor, for every socket the process holds open."""
    base = f"/proc/{pid}/fd"
    out = {}
    try:
        fds = os.listdir(base)
    except OSError:
        return out
    for fd in fds:
        path = f"{base}/{fd}"
        try:
            target = os.readlink(path)
        except OSError:
            continue
        if target.startswith("socket:["):
            out.setdefault(int(target[8:-1]), path)
    return out


def is_tcp(fd_path: str) -> bool | None:
    """Whether the socket behind this descriptor is TCP (the kernel names its protocol); None if it is gone."""
    try:
        return os.getxattr(fd_path, "system.sockprotoname").startswith(b"TCP")
    except OSError:
        return None


class ProcessTree:
    """The root process and every process started below it, as psutil sees them poll by poll.

    A process belongs to the tree if its parent did when it was first seen; it stays in the tree
    after its parent exits. A process whose parent exited before either was seen is missed.
    """

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self.known = self._entries()  # processes that existed before the root: never descendants
        self.members: dict[int, "psutil.Process"] = {}

    @staticmethod
    def _entries() -> set[str]:
        # The names under /proc, pids and others alike: a set difference in C finds the new
        # processes, where psutil.pids() would build and check an int per process at every poll.
        return set(os.listdir("/proc"))

    def follow(self, root: int) -> None:
        try:
            self.members[root] = self._psutil.Process(root)
        except self._psutil.Error:
            pass
        self.known.add(str(root))

    def refresh(self) -> None:
        psutil = self._psutil
        now = self._entries()
        new = now - self.known
        self.known = now  # a pid that disappears and comes back is a new process
        for pid in [p for p in self.members if str(p) not in now]:
            del self.members[pid]
        parents = {}
        for pid in sorted(int(name) for name in new if name.isdigit()):
            try:
                proc = psutil.Process(pid)
                parents[pid] = (proc, proc.ppid())
            except psutil.Error:
                continue
        grew = True
        while grew:  # a new grandchild may come before its new parent in pid order
            grew = False
            for pid, (proc, ppid) in list(parents.items()):
                if ppid in self.members:
                    self.members[pid] = proc
                    del parents[pid]
                    grew = True

    def name(self, pid: int) -> str:
        proc = self.members.get(pid)
        try:
            return proc.name() if proc else "?"
        except self._psutil.Error:
            return "?"


class Watcher:
    """One poll at a time: the tree's new TCP sockets -> their ends in the TCP table -> the tally.

    The TCP tables are costly to read (the kernel walks every bucket of its hash table: about
    3 ms for both on the development machine, whatever the number of connections), so a poll
    reads them only when a process of the tree holds a TCP socket not seen before. Listing a
    process's descriptors costs microseconds.
    """

    # A TCP socket not yet in the table (created, not yet connected) is looked for again at each
    # poll, this many times at most: one that never connects must not cost a table read per poll.
    PENDING_POLLS = 40

    def __init__(self, ports: Iterable[int], interval_s: float = POLL_S, table: TcpTable | None = None) -> None:
        self.ports = ports = tuple(ports)
        self.interval_s = interval_s
        self.tally = Tally(frozenset(ports))
        self.table = table or TcpTable(ports)
        self.tree = ProcessTree()
        self.settled: set[int] = set()  # socket inodes looked at for good
        self.pending: dict[int, list] = {}  # inode -> [pid, polls left]: TCP sockets not yet in the table
        self.polls = 0
        self.table_reads = 0
        self.poll_errors = 0
        self.last_error: str | None = None

    def follow(self, root: int, proxy: ProxyAddress) -> None:
        self.tally.proxy = proxy
        self.tree.follow(root)

    def poll(self) -> None:
        self.polls += 1
        self.tree.refresh()
        held: set[int] = set()
        for pid in list(self.tree.members):
            for inode, path in socket_fds(pid).items():
                held.add(inode)
                if inode in self.settled or inode in self.pending:
                    continue
                tcp = is_tcp(path)
                if tcp:
                    self.pending[inode] = [pid, self.PENDING_POLLS]
                elif tcp is False:  # a Unix or UDP socket: never a TCP connection
                    self.settled.add(inode)
        for inode in [i for i in self.pending if i not in held]:
            del self.pending[inode]  # closed before it showed up in the table
        if not self.pending:
            return
        self.table_reads += 1
        present, watched = self.table.read()
        for inode, entry in list(self.pending.items()):
            pid = entry[0]
            if inode in watched:
                local, remote = (_decode(end) for end in watched[inode])
                self.tally.add(pid, self.tree.name(pid), local, remote)
            elif inode not in present:
                entry[1] -= 1
                if entry[1] > 0:
                    continue
            self.settled.add(inode)  # its ends never change: counted, or not to a watched port
            del self.pending[inode]

    def safe_poll(self) -> None:
        """A poll that fails (a bug, an unreadable /proc) is counted in the report; the next one still runs."""
        try:
            self.poll()
        except Exception as e:  # noqa: BLE001 - one bad poll must not end the whole check
            self.poll_errors += 1
            self.last_error = f"{type(e).__name__}: {e}"[:200]

    def report(self, cpu_s: float) -> dict:
        bypasses = self.tally.bypasses()
        return {"checked": True, "ports": list(self.ports), "interval_ms": round(self.interval_s * 1000),
                "polls": self.polls, "table_reads": self.table_reads, "cpu_s": round(cpu_s, 3), "connections": self.tally.connections,
                "bypasses": [asdict(b) for b in bypasses[:MAX_GROUPS]],
                "groups_left_off": max(0, len(bypasses) - MAX_GROUPS),
                **({"poll_errors": self.poll_errors, "last_error": self.last_error} if self.poll_errors else {})}


def watcher_main(argv: list[str]) -> int:
    """The watcher process: argv = [ports (comma list), interval_s]."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the process group; the parent decides
    ports = [int(p) for p in argv[0].split(",")]
    interval = float(argv[1])
    watcher = Watcher(ports, interval)
    start_cpu = time.process_time()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    line = sys.stdin.readline()
    if not line.strip():
        sys.stdout.write(json.dumps({"checked": False, "reason": "no command was started"}) + "\n")
        return 0
    order = json.loads(line)
    host, port = order["proxy"]
    import psutil

    local_ips = [a.address for addrs in psutil.net_if_addrs().values() for a in addrs
                 if a.family in (socket.AF_INET, socket.AF_INET6)]
    watcher.follow(int(order["pid"]), ProxyAddress(host, int(port), local_ips))
    stdin = sys.stdin.fileno()
    next_poll = time.monotonic()
    while True:
        watcher.safe_poll()
        next_poll += interval
        wait = next_poll - time.monotonic()
        if wait < 0:  # behind (a slow poll, or the machine was busy): no catching-up burst
            next_poll, wait = time.monotonic(), 0
        ready, _, _ = select.select([stdin], [], [], wait)
        if ready and not os.read(stdin, 4096):
            break  # the parent closed the pipe: stop
    watcher.safe_poll()  # what is still open at the end
    sys.stdout.write(json.dumps(watcher.report(time.process_time() - start_cpu)) + "\n")
    sys.stdout.flush()
    return 0


# -- the parent's side -------------------------------------------------------------------------
def not_checked(reason: str) -> dict:
    return {"checked": False, "reason": reason}


class BypassWatch:
    """`trace`'s handle on the watcher: start() early, ready() before the child starts, follow(pid), stop()."""

    def __init__(self, ports: tuple[int, ...] | None, interval_s: float = POLL_S) -> None:
        self.ports = ports
        self.interval_s = interval_s
        self._proc: subprocess.Popen | None = None
        self._result: dict | None = None
        if ports is None:
            self._result = not_checked(f"the check is switched off ({PORTS_ENV}=none)")
        elif not SUPPORTED:
            self._result = not_checked(f"agentprobe watches for them on Linux only, not on {sys.platform}")

    def start(self) -> "BypassWatch":
        if self._result is not None:
            return self
        package_root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root,
                                                                        os.environ.get("PYTHONPATH")]))}
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "agentprobe.proxy.bypass_watch", ",".join(map(str, self.ports)),
                 str(self.interval_s)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
        except OSError as e:
            self._result = not_checked(f"the watcher did not start: {e}")
        return self

    def ready(self) -> bool:
        """Wait until the watcher can poll, so the child's first connections are not missed."""
        if self._proc is None:
            return False
        ready, _, _ = select.select([self._proc.stdout], [], [], READY_TIMEOUT_S)
        if not ready or self._proc.stdout.readline().strip() != "ready":
            self._fail(f"it was not ready within {READY_TIMEOUT_S} s")
            return False
        return True

    def follow(self, pid: int, proxy: tuple[str, int]) -> None:
        if self._proc is None:
            return
        try:
            self._proc.stdin.write(json.dumps({"pid": pid, "proxy": list(proxy)}) + "\n")
            self._proc.stdin.flush()
        except OSError as e:
            self._fail(str(e))

    def stop(self) -> dict:
        """The report: {"checked": True, "connections", "bypasses", ...} or {"checked": False, "reason"}."""
        if self._result is not None:
            return self._result
        proc, self._proc = self._proc, None
        try:
            proc.stdin.close()  # the watcher's signal to poll once more and report
        except OSError:
            pass
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        # Read after it exited (its report fits the pipe), through the same buffered reader ready() used.
        out, err = proc.stdout.read(), proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
        lines = [line for line in out.splitlines() if line.strip() and line.strip() != "ready"]
        try:
            self._result = json.loads(lines[-1])
        except (IndexError, ValueError):
            last = (err.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
            self._result = not_checked(f"the watcher failed: {last}")
        return self._result

    def _fail(self, why: str) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            _, err = self._proc.communicate()
            if self._proc.returncode not in (0, -9) and err.strip():
                why = err.strip().splitlines()[-1]  # its own last word says more than our timeout
        self._proc = None
        self._result = not_checked(f"the watcher failed: {why}")


def run_columns(report: dict) -> dict:
    """The run row's bypassed_connections (NULL when not checked) and bypass_detail (JSON)."""
    return {"bypassed_connections": report.get("connections") if report.get("checked") else None,
            "bypass_detail": json.dumps(report)}


if __name__ == "__main__":
    sys.exit(watcher_main(sys.argv[1:]))
