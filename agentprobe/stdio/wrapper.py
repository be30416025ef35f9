"""`agentprobe mcp -- SERVER COMMAND`: run a stdio MCP server, pass its bytes through, record its calls.

The client's bytes go to the server's stdin and the server's stdout comes back exactly as
read (unbuffered, chunk by chunk); stderr is the server's own, inherited. A copy of each
chunk is queued, with its time, for a recording thread that splits lines, pairs requests
with answers and hands each call to a sink. Standalone, no byte waits for that. Under a
trace, a chunk that ends a line is passed on only once its notices are at the proxy (see
ProxySink), within SETTLE_TIMEOUT_S; past that the wrapper says so and stops waiting. The
exit code is the server's. Recording problems are said on stderr and never stop the traffic.
"""

from __future__ import annotations

import os
import queue
import shlex
import signal
import subprocess
import threading
import time

from ..util.say import warn
from .pairing import LineSplitter, Pairing
from .sinks import PROXY_ENV, RUN_ENV, OwnRunSink, ProxySink

READ_BYTES = 65536
SETTLE_TIMEOUT_S = 2.0
_CLIENT, _SERVER, _END = "client", "server", "end"


class Settling:
    """Whether lines wait for their notices, shared by both directions; off for good after one timeout."""

    def __init__(self, on: bool) -> None:
        self.on = on

    def wait(self, settled: threading.Event) -> None:
        if self.on and not settled.wait(SETTLE_TIMEOUT_S):
            self.on = False
            warn(f"the trace's proxy took over {SETTLE_TIMEOUT_S:g} s to take a stdio notice; the wrapper stops "
                 "waiting for it, so this server's calls may be numbered after calls they caused")


def _pump(src: int, dst: int, direction: str, record, on_eof) -> None:
    """Copy src to dst until EOF, handing every chunk to record() before it is passed on."""
    try:
        while True:
            try:
                data = os.read(src, READ_BYTES)
            except OSError:
                data = b""
            if not data:
                break
            record(direction, time.time(), data)
            view = memoryview(data)
            while view:
                written = os.write(dst, view)
                view = view[written:]
    except OSError:
        pass  # the other side went away: nothing more can pass
    finally:
        on_eof()


class _Recorder:
    """Lines -> pairing -> sink: on a thread of its own (standalone), or in the pump that read them (settling)."""

    def __init__(self, sink, settling: Settling) -> None:
        self.sink = sink
        self.settling = settling
        self.splitters = {_CLIENT: LineSplitter(), _SERVER: LineSplitter()}
        self.pairing = Pairing(sink.dispatch, sink.complete)
        self.lock = threading.Lock()  # the two pumps, under settling, take lines in one order
        self.tap: queue.Queue = queue.Queue()
        self.broken = False
        self.thread = threading.Thread(target=self._run, name="agentprobe-stdio-recorder", daemon=True)
        self.thread.start()

    def record(self, direction: str, at: float, data: bytes) -> None:
        if not self.settling.on:
            self.tap.put((direction, at, data))
            return
        with self.lock:
            self._take(direction, at, data)
            if b"\n" not in data:
                return
            settled = threading.Event()
            try:
                self.sink.barrier(settled.set)
            except Exception:  # noqa: BLE001 - never hold the traffic for a recording fault
                return
        self.settling.wait(settled)

    def _take(self, direction: str, at: float, data: bytes) -> None:
        if self.broken:
            return
        try:
            for line in self.splitters[direction].feed(data):
                if direction == _CLIENT:
                    self.pairing.client_line(line, at)
                else:
                    self.pairing.server_line(line, at)
        except Exception as e:  # noqa: BLE001 - a recorder bug must not touch the traffic
            self.broken = True
            warn(f"the stdio wrapper stopped recording: {type(e).__name__}: {e}")

    def _run(self) -> None:
        while True:
            direction, at, data = self.tap.get()
            if direction == _END:
                break
            with self.lock:
                self._take(direction, at, data)
        try:
            with self.lock:
                # An unterminated last answer line still counts, when it is one.
                rest = self.splitters[_SERVER].rest()
                if rest:
                    self.pairing.server_line(rest, time.time())
                self.pairing.close(time.time())
        except Exception as e:  # noqa: BLE001
            warn(f"the stdio wrapper could not finish recording: {type(e).__name__}: {e}")

    def finish(self) -> None:
        self.tap.put((_END, 0.0, b""))
        self.thread.join(30)


def trace_env() -> tuple[str | None, str | None]:
    """The run and proxy of the trace we run under: from our environment, else from the nearest ancestor's.

    MCP clients start stdio servers with a filtered environment (the Python SDK passes on only HOME,
    PATH, SHELL, TERM, USER and LOGNAME), so the trace's variables often do not reach us directly;
    the agent process above us still has them.
    """
    run_id, proxy_url = os.environ.get(RUN_ENV), os.environ.get(PROXY_ENV)
    if run_id and proxy_url:
        return run_id, proxy_url
    if run_id == "":
        return None, None  # set empty on purpose: a run of its own, whatever the ancestors say
    try:
        import psutil

        for parent in psutil.Process().parents():
            try:
                env = parent.environ()
            except (psutil.Error, OSError):
                continue
            if env.get(RUN_ENV) and env.get(PROXY_ENV):
                return env[RUN_ENV], env[PROXY_ENV]
    except Exception:  # noqa: BLE001 - no psutil, no /proc: standalone then
        pass
    return None, None


def open_sink(command: str, db, label: str | None):
    """The trace's run when there is one, else a run of our own (None if that cannot be had)."""
    run_id, proxy_url = trace_env()
    if run_id and proxy_url:
        return ProxySink(proxy_url, run_id, command)
    try:
        return OwnRunSink(db, command, label)
    except Exception as e:  # noqa: BLE001 - a database we cannot write must not keep the server from running
        warn(f"the stdio wrapper records nothing: {e}")
        return None


def run(argv: list[str], db=None, label: str | None = None) -> int:
    command = shlex.join(argv)
    try:
        child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    except OSError as e:
        warn(f"cannot start the MCP server {argv[0]!r}: {e}")
        return 127
    sink = open_sink(command, db, label)
    settling = Settling(isinstance(sink, ProxySink))
    recorder = _Recorder(sink, settling) if sink is not None else None
    record = recorder.record if recorder else _discard

    def forward(signum, _frame) -> None:
        try:
            child.send_signal(signum)
        except OSError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        try:
            signal.signal(sig, forward)
        except (OSError, ValueError):
            pass

    def close_server_stdin() -> None:
        try:
            child.stdin.close()
        except OSError:
            pass

    upstream = threading.Thread(target=_pump, args=(0, child.stdin.fileno(), _CLIENT, record, close_server_stdin),
                                name="agentprobe-stdio-in", daemon=True)
    downstream = threading.Thread(target=_pump, args=(child.stdout.fileno(), 1, _SERVER, record, lambda: None),
                                  name="agentprobe-stdio-out", daemon=True)
    upstream.start()
    downstream.start()
    while True:
        try:
            code = child.wait()
            break
        except InterruptedError:
            continue
    downstream.join()  # everything the server wrote has been passed on
    if recorder is not None:
        recorder.finish()
        try:
            sink.close(code) if isinstance(sink, OwnRunSink) else sink.close()
        except Exception as e:  # noqa: BLE001
            warn(f"the stdio wrapper could not close its recording: {e}")
    return code if code >= 0 else 128 - code


def _discard(_direction: str, _at: float, _data: bytes) -> None:
    pass
