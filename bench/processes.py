"""The benchmark's processes: the fake provider, mitmdump and `agentprobe record`.

Proc runs a child with its output drained and measures its tree (RSS, CPU); start_fake,
start_mitmdump and start_agentprobe bring one up and return where it listens; count_calls,
wait_calls and run_stats read the rows an agentprobe target has written.

Every child that imports agentprobe (the fake provider, `record`, `calls`, `scan`, the soak
test) runs from this checkout with it first on PYTHONPATH (child_env, ROOT as its working
directory): the benchmark measures the code next to it, not whatever copy the interpreter
has installed (an editable install of another worktree, say). check_checkout() proves it.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PY = sys.executable
FASTPATH_ENV = "AGENTPROBE_FASTPATH"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child that imports agentprobe: this checkout's package first."""
    env = {**os.environ, **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    return env


def check_checkout() -> str:
    """Where this process and its children import agentprobe from; raises unless it is ROOT's package."""
    import agentprobe

    want = (ROOT / "agentprobe" / "__init__.py").resolve()
    here = Path(agentprobe.__file__).resolve()
    p = subprocess.run([PY, "-c", "import agentprobe; print(agentprobe.__file__)"], capture_output=True,
                       text=True, env=child_env(), cwd=ROOT, timeout=60, check=False)
    child = Path(p.stdout.strip()).resolve() if p.returncode == 0 and p.stdout.strip() else None
    for who, got in (("the benchmark", here), ("its children", child)):
        if got != want:
            raise RuntimeError(f"{who} imported agentprobe from {got or p.stderr.strip()[-300:]}, not from {want}")
    return str(want.parent)


class Proc:
    """A child process with its stdout/stderr drained by threads (a full pipe would stall it)."""

    def __init__(self, name: str, argv: list[str], env: dict | None = None, cwd: Path | None = None) -> None:
        self.name = name
        self.argv = argv
        self.fastpath: dict | None = None  # `record` only: what it was asked to run and ran (check_fastpath)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env=env, cwd=cwd, start_new_session=True)
        for stream in (self.popen.stdout, self.popen.stderr):
            threading.Thread(target=self._drain, args=(stream,), daemon=True).start()

    def _drain(self, stream) -> None:
        for line in stream:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                del self.lines[:-200]
                self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 30) -> re.Match:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    m = rx.search(line)
                    if m:
                        return m
                if self.popen.poll() is not None:
                    raise RuntimeError(f"{self.name} exited ({self.popen.returncode}): {self.tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"{self.name} did not print {pattern!r} within {timeout}s: {self.tail()}")
                self._cond.wait(min(left, 0.2))

    def tail(self, n: int = 10) -> str:
        return " | ".join(self.lines[-n:])

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tree(self) -> list[int]:
        """This process and its live descendants: agentprobe's writer runs in a child process."""
        parents = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
                except OSError:
                    continue
        found, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo += [child for child, ppid in parents.items() if ppid == pid]
        return found

    def rss_mb(self) -> float:
        """Resident size of the whole tree (shared pages counted in each: an upper bound)."""
        total = 0
        for pid in self.tree():
            try:
                total += _status_kb(pid, "VmRSS")
            except (OSError, KeyError):
                pass
        return total / 1024

    def cpu_s(self, *, children: bool = True) -> float:
        total = 0
        for pid in (self.tree() if children else [self.popen.pid]):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self, sig: int = 2, timeout: float = 30) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode


def _status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: Proc, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}): {proc.tail()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{proc.name} is not listening on {port} after {timeout}s: {proc.tail()}")


def mitmdump_path() -> str:
    local = Path(PY).parent / "mitmdump"
    found = str(local) if local.exists() else shutil.which("mitmdump")
    if not found:
        raise RuntimeError("mitmdump not found next to this Python or on PATH")
    return found


def start_fake() -> tuple[Proc, str]:
    proc = Proc("fakeprovider", [PY, "-m", "agentprobe.fakeprovider", "--port", "0"], env=child_env(), cwd=ROOT)
    url = proc.wait_for(r"listening on (http://\S+)").group(1)
    return proc, url


def start_mitmdump(tmp: Path, name: str = "mitmdump", *extra: str) -> tuple[Proc, int]:
    port = free_port()
    proc = Proc(name, [mitmdump_path(), "-q", "--listen-host", "127.0.0.1", "--listen-port", str(port),
                       "--set", "connection_strategy=lazy", "--set", f"confdir={tmp / 'mitmproxy'}", *extra])
    wait_port(port, proc)
    return proc, port


def start_agentprobe(tmp: Path, name: str, fastpath: str | None = None) -> tuple[Proc, int, Path]:
    """`agentprobe record` on a free port, recording into tmp/<name>.db.

    It runs with AGENTPROBE_FASTPATH=`fastpath` (None: the caller's value, if any), and must
    have run what that asks for: check_fastpath raises otherwise. proc.fastpath keeps what it
    was asked and what its run row says it ran.
    """
    db = tmp / (re.sub(r"[^\w.-]", "_", name) + ".db")
    value = os.environ.get(FASTPATH_ENV, "") if fastpath is None else fastpath
    proc = Proc(name, [PY, "-m", "agentprobe", "record", "--port", "0", "--db", str(db),
                       "--confdir", str(tmp / "agentprobe-conf"), "--label", "bench"],
                env=child_env({FASTPATH_ENV: value}), cwd=ROOT)
    try:
        m = proc.wait_for(r"recording .*? on http://127\.0\.0\.1:(\d+)")
        proc.fastpath = check_fastpath(proc, db, value)
    except BaseException:
        proc.stop()
        raise
    return proc, int(m.group(1)), db


def expected_fastpath(value: str) -> tuple[frozenset[str], str]:
    """The patches AGENTPROBE_FASTPATH=`value` turns on, and the runs.fastpath that says so.

    Every patch asked for, less any whose prerequisite is not (inline_hooks without hook_index).
    """
    from agentprobe.proxy import fastpath

    asked = fastpath.wanted(value)
    active: set[str] = set()
    for patch in fastpath.PATCHES:
        if patch in asked and all(need in active for need in fastpath.NEEDS.get(patch, ())):
            active.add(patch)
    return frozenset(active), fastpath.Plan(frozenset(active)).describe()


def check_fastpath(proc: Proc, db: Path, value: str, timeout: float = 10) -> dict:
    """What a `record` process ran, from its run row and its log; raises unless it is what `value` asks."""
    active, expected = expected_fastpath(value)
    deadline = time.monotonic() + timeout
    ran: list = []
    while not ran and time.monotonic() < deadline:
        try:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
            try:
                ran = [r[0] for r in conn.execute("SELECT fastpath FROM runs")]
            finally:
                conn.close()
        except sqlite3.OperationalError:  # not created yet
            pass
        if not ran:
            time.sleep(0.05)
    # A patch that plan() allowed but install() could not apply is logged, not written to the run row.
    with proc._cond:
        logged = dict(m.groups() for line in proc.lines if (m := re.search(r"fast path (\w+) is off: (.*?);", line)))
    failed = {patch: why for patch, why in logged.items() if patch in active}
    if ran != [expected] or failed:
        raise RuntimeError(f"{proc.name} was started with {FASTPATH_ENV}={value!r}, which should record "
                           f"runs.fastpath {expected!r}, but its run rows say {ran!r}"
                           + (f" and its log says {failed}" if failed else "") + f": {proc.tail()}")
    return {"asked": f"{FASTPATH_ENV}={value}", "ran": ran[0], "logged_off": logged}


def hostport(url: str) -> tuple[str, int]:
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    return host, int(port)


def count_calls(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute("SELECT count(*) FROM calls").fetchone()[0]
    finally:
        conn.close()


def wait_calls(db: Path, n: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    got = 0
    while time.monotonic() < deadline:
        got = count_calls(db)
        if got >= n:
            return got
        time.sleep(0.05)
    return got


def run_stats(db: Path) -> dict:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        lost = conn.execute("SELECT coalesce(sum(calls_lost), 0) FROM runs").fetchone()[0]
        parse_errors = conn.execute("SELECT count(*) FROM calls WHERE parse_error IS NOT NULL").fetchone()[0]
        return {"calls": conn.execute("SELECT count(*) FROM calls").fetchone()[0], "calls_lost": lost,
                "parse_errors": parse_errors}
    finally:
        conn.close()
