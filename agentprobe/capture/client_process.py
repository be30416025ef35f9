"""Which local process opened a TCP connection to the proxy: its pid, start time and command line.

A recorder splits its traffic into one run per agent process when nothing else names the
session, so any language gets sessions with no configuration. The kernel knows who holds the
client's end of the connection: on Linux, /proc/net/tcp{,6} maps the connection's two
endpoints to a socket inode, and /proc/PID/fd holds a link to `socket:[INODE]` in the process
that owns it. Elsewhere psutil asks the OS (on macOS it may need privileges, and then the
lookup finds nothing and the caller falls back to the client's address).

This reads the file system: call it once per client connection, off the event loop.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
import socket
from dataclasses import dataclass

from . import redact

PROC = "/proc"
# A command line is kept whole up to this; longer ones (a prompt passed as an argument) are cut.
COMMAND_LIMIT = 2000


@dataclass(frozen=True)
class ClientProcess:
    pid: int
    start: str  # the process's start time (clock ticks since boot, or a timestamp): a pid is reused
    command: str | None  # redacted

    @property
    def key(self) -> tuple:
        return (self.pid, self.start)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address as compared here: the zone dropped, an IPv4-mapped IPv6 address as its IPv4 one."""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def is_local(peer_ip: str, local_ip: str | None) -> bool:
    """Does a connection from peer_ip (to local_ip, the address it reached) come from this host?"""
    peer = _address(peer_ip)
    if peer is None:
        return False
    if peer.is_loopback:
        return True
    local = _address(local_ip) if local_ip is not None else None
    return local is not None and peer == local  # a client on this host that dialled one of its own addresses


class ProcessFinder:
    """Finds the process behind a connection; remembers the processes it found (a client process
    opens many connections, so its file descriptors are searched first next time)."""

    def __init__(self, proc: str = PROC) -> None:
        self.proc = proc
        self._recent: list[int] = []
        self.linux = os.path.exists(os.path.join(proc, "net", "tcp"))

    def find(self, peer: tuple, local: tuple) -> ClientProcess | None:
        """peer: the client's (ip, port); local: the proxy's end of the connection (ip, port)."""
        try:
            if self.linux:
                pid = self._linux_pid(peer, local)
            else:
                pid = _psutil_pid(peer, local)
            if pid is None:
                return None
            return self.describe(pid)
        except (OSError, ValueError):
            return None

    def describe(self, pid: int) -> ClientProcess | None:
        if self.linux:
            try:
                with open(os.path.join(self.proc, str(pid), "stat"), "rb") as f:
                    stat = f.read().decode("utf-8", "replace")
                # The command name in parentheses may hold spaces and ')': fields count from the last one.
                start = stat.rsplit(")", 1)[1].split()[19]
                with open(os.path.join(self.proc, str(pid), "cmdline"), "rb") as f:
                    argv = [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
            except (OSError, IndexError):
                return None
        else:
            try:
                import psutil

                p = psutil.Process(pid)
                start, argv = repr(p.create_time()), p.cmdline()
            except Exception:  # noqa: BLE001 - gone, or not ours to read: no process to name
                return None
        return ClientProcess(pid, start, command_line(argv))

    def alive(self, client: ClientProcess) -> bool:
        """Is that process (that pid, started then) still running?"""
        current = self.describe(client.pid) if self.linux else None
        if self.linux:
            return current is not None and current.start == client.start
        try:
            import psutil

            return repr(psutil.Process(client.pid).create_time()) == client.start
        except Exception:  # noqa: BLE001
            return False

    # -- Linux ------------------------------------------------------------------------------
    def _linux_pid(self, peer: tuple, local: tuple) -> int | None:
        found = self._socket_inode(peer, local)
        if found is None:
            return None
        inode, uid = found
        link = f"socket:[{inode}]"
        for pid in self._candidates(uid):
            if self._holds(pid, link):
                if pid in self._recent:
                    self._recent.remove(pid)
                self._recent.insert(0, pid)
                del self._recent[32:]
                return pid
        return None

    def _socket_inode(self, peer: tuple, local: tuple) -> tuple[str, int] | None:
        """The inode and owner uid of the client's socket: its local end is `peer`, its remote end `local`."""
        want_local = _hex_endpoint(peer[0], peer[1])
        want_remote = _hex_endpoint(local[0], local[1])
        if want_local is None or want_remote is None:
            return None
        table = "tcp6" if len(want_local[0]) == 32 else "tcp"
        with open(os.path.join(self.proc, "net", table), "rb") as f:
            next(f, None)  # the header line
            for line in f:
                fields = line.split()
                if len(fields) < 10:
                    continue
                if fields[1].decode().upper() == want_local[2] and fields[2].decode().upper() == want_remote[2]:
                    return fields[9].decode(), int(fields[7])
        return None

    def _candidates(self, uid: int):
        """Pids to search: the recent finds first, then every process of the socket's owner."""
        yield from list(self._recent)
        recent = set(self._recent)
        for name in os.listdir(self.proc):
            if not name.isdigit():
                continue
            pid = int(name)
            if pid in recent:
                continue
            try:
                if os.stat(os.path.join(self.proc, name)).st_uid != uid:
                    continue  # not the socket's owner (and its fds are not readable anyway)
            except OSError:
                continue
            yield pid

    def _holds(self, pid: int, link: str) -> bool:
        fd_dir = os.path.join(self.proc, str(pid), "fd")
        try:
            names = os.listdir(fd_dir)
        except OSError:
            return False
        for fd in names:
            try:
                if os.readlink(os.path.join(fd_dir, fd)) == link:
                    return True
            except OSError:
                continue
        return False


def _hex_endpoint(ip: str, port: int) -> tuple[str, int, str] | None:
    """An address as /proc/net/tcp{,6} prints it: ADDR:PORT in hex, ADDR in the kernel's word order."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped  # a v4 client of a dual-stack listener: its own socket is a v4 one
    if isinstance(addr, ipaddress.IPv4Address):
        packed = socket.inet_pton(socket.AF_INET, str(addr))
        hexaddr = packed[::-1].hex().upper()  # one little-endian 32-bit word
    else:
        packed = socket.inet_pton(socket.AF_INET6, str(addr))
        hexaddr = "".join(packed[i:i + 4][::-1].hex() for i in range(0, 16, 4)).upper()  # four such words
    return hexaddr, port, f"{hexaddr}:{port:04X}"


def _psutil_pid(peer: tuple, local: tuple) -> int | None:
    import psutil

    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return None
    for c in conns:
        if c.laddr and c.raddr and c.laddr[1] == peer[1] and c.raddr[1] == local[1] and c.pid:
            return c.pid
    return None


def command_line(argv: list[str]) -> str | None:
    """argv as one shell-quoted line, scrubbed of keys as every command agentprobe stores."""
    if not argv:
        return None
    # Scrubbed before it is cut: a key cut in half may no longer look like one.
    line = redact.scrub_command(shlex.join(argv))
    if line and len(line) > COMMAND_LIMIT:
        line = line[:COMMAND_LIMIT] + " …"
    return line
