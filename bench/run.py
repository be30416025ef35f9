#!/usr/bin/env python
"""agentprobe benchmark: what does recording cost the agent?

    python bench/run.py --quick     # under 2 minutes; what CI runs
    python bench/run.py --full      # by hand; 5 interleaved rounds, scan of 1,000,000 calls

One run measures, side by side on this machine, a load generator talking to the
local fake provider directly, through a bare `mitmdump` (no addon) and through
`agentprobe record`, each in its own process:

1. requests/s and p50/p99 latency at concurrency 1 and 16, JSON and SSE, small
   and 100 KB bodies;
2. time to first SSE event of a streamed response;
3. durability lag: from the end of a response to its row being readable by
   another SQLite connection, idle, under 16 connections of small calls, and
   with both cores saturated by 100 KB streams (reported, not a goal: the writer
   yields the CPU to the agent's traffic there). After every agentprobe load in
   (1) the benchmark also waits for the writer to catch up and reports how far
   behind it was;
4. resident memory of the `record` process after 1,000 and N calls, and during a
   50 MB streamed response;
5. `agentprobe calls --json` over 100,000 synthetic calls, and `scan` over
   100,000 (quick) or 100,000 and 1,000,000 (full) synthetic calls (bench/synth.py).

Each goal prints PASS or FAIL. The exit code reports crashes only (a missed
goal still exits 0), so CI can keep the numbers without flaking on a busy box.
Results: bench/results/<timestamp>.json and bench/results/latest.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import inspect
import json
import os
import platform
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
if str(ROOT) not in sys.path:
    sys.path.insert(1, str(ROOT))

from loadgen import Connection, Scenario, Target, next_id, percentile, run_count, run_load  # noqa: E402

PY = sys.executable
RESULTS = BENCH / "results"

MODES = {
    "quick": {
        "duration": 0.6,
        "warmup": 0.2,
        "rounds": 1,
        "ttft_samples": 60,
        "durability_probes": 60,
        "memory_calls": (1_000, 5_000),
        "stream_mb": 50,
        "calls_json": 100_000,
        "scan_calls": (100_000,),
    },
    "full": {
        "duration": 3.0,
        "warmup": 0.75,
        "rounds": 5,
        "ttft_samples": 300,
        "durability_probes": 300,
        "memory_calls": (1_000, 20_000),
        "stream_mb": 50,
        "calls_json": 100_000,
        "scan_calls": (100_000, 1_000_000),
        "soak_seconds": 180,
    },
}

SCENARIOS = [
    Scenario("json small"),
    Scenario("json 100KB response", response_kb=100),
    Scenario("json 100KB request", request_kb=100),
    Scenario("sse small", stream=True),
    Scenario("sse 100KB response", stream=True, response_kb=100),
]
CONCURRENCY = (1, 16)
# "mitmdump-stream" is mitmdump told to stream every body (stream_large_bodies=1): what a recorder
# has to do so streamed answers reach the agent as they arrive. Bare mitmdump buffers them.
# mitmdump and agentprobe sit side by side in either order, so each round's pair shares its moment
# of machine noise: on a shared 2-core VM one 3-second window can run 20% faster than the next.
TARGETS = ("direct", "mitmdump-stream", "mitmdump", "agentprobe")

GOAL_RPS_RATIO = 0.90
GOAL_ADDED_P50_MS = 1.0
GOAL_TTFT_ADDED_MS = 3.0
GOAL_DURABILITY_P99_S = 1.0
GOAL_MEMORY_GROWTH_MB = 20.0
GOAL_SCAN_1M_S = 30.0


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- processes ---------------------------------------------------------------------------


class Proc:
    """A child process with its stdout/stderr drained by threads (a full pipe would stall it)."""

    def __init__(self, name: str, argv: list[str], env: dict | None = None) -> None:
        self.name = name
        self.argv = argv
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env=env, start_new_session=True)
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
    proc = Proc("fakeprovider", [PY, "-m", "agentprobe.fakeprovider", "--port", "0"])
    url = proc.wait_for(r"listening on (http://\S+)").group(1)
    return proc, url


def start_mitmdump(tmp: Path, name: str = "mitmdump", *extra: str) -> tuple[Proc, int]:
    port = free_port()
    proc = Proc(name, [mitmdump_path(), "-q", "--listen-host", "127.0.0.1", "--listen-port", str(port),
                       "--set", "connection_strategy=lazy", "--set", f"confdir={tmp / 'mitmproxy'}", *extra])
    wait_port(port, proc)
    return proc, port


def start_agentprobe(tmp: Path, name: str) -> tuple[Proc, int, Path]:
    db = tmp / f"{name}.db"
    proc = Proc(name, [PY, "-m", "agentprobe", "record", "--port", "0", "--db", str(db),
                       "--confdir", str(tmp / "agentprobe-conf"), "--label", "bench"])
    m = proc.wait_for(r"recording run \S+ on http://127\.0\.0\.1:(\d+)")
    return proc, int(m.group(1)), db


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


# -- measurements ------------------------------------------------------------------------


def _median(values):
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


async def measure_matrix(targets: dict[str, Target], procs: dict[str, Proc], cfg: dict, ap_db: Path) -> list[dict]:
    """Every scenario x concurrency x target; targets interleaved so machine noise hits all three alike.

    agentprobe's writer runs at the lowest CPU priority, so under a load that keeps
    every core busy it writes little until the load ends. After each agentprobe load
    we wait until every call is written, count how far behind the writer was when the
    load ended, and charge the catch-up CPU to the load: the next target's numbers
    must not pay for it, and CPU per request must include it.
    """
    rows = []
    ap_target = targets["agentprobe"]
    for scenario in SCENARIOS:
        for conc in CONCURRENCY:
            per_target: dict[str, list[dict]] = {t: [] for t in TARGETS}
            for rnd in range(cfg["rounds"]):
                order = TARGETS if rnd % 2 == 0 else tuple(reversed(TARGETS))
                for name in order:
                    proc = procs.get(name)
                    cpu0 = proc.cpu_s() if proc else None
                    own0 = proc.cpu_s(children=False) if proc else None
                    sent0 = ap_target.sent
                    rows0 = count_calls(ap_db) if name == "agentprobe" else 0
                    r = await run_load(targets[name], scenario, conc, duration=cfg["duration"], warmup=cfg["warmup"])
                    if proc:
                        r["own_cpu_s"] = proc.cpu_s(children=False) - own0  # the proxy's process alone
                    if name == "agentprobe":
                        expected = rows0 + ap_target.sent - sent0
                        r["rows_behind_at_end"] = expected - count_calls(ap_db)
                        t0 = time.perf_counter()
                        written = wait_calls(ap_db, expected, timeout=300)
                        r["catch_up_s"] = round(time.perf_counter() - t0, 2)
                        if written < expected:
                            raise RuntimeError(f"{expected - written} calls never written ({scenario.name}, c={conc})")
                    if proc:
                        # The proxy's CPU over the whole load, warm-up included as in "completed",
                        # plus the writer's catch-up.
                        r["cpu_s"] = proc.cpu_s() - cpu0
                    per_target[name].append(r)
            row = {"scenario": scenario.name, "concurrency": conc}
            for name, results in per_target.items():
                row[name] = {
                    "rps": _median(r["rps"] for r in results),
                    "p50_ms": _median(r["p50_ms"] for r in results),
                    "p99_ms": _median(r["p99_ms"] for r in results),
                    "errors": sum(r["errors"] for r in results),
                    "first_error": next((r["first_error"] for r in results if r["first_error"]), None),
                    "rounds": results,
                }
                cpu = [r.get("cpu_s") for r in results if r.get("cpu_s") is not None]
                done = sum(r["completed"] for r in results)
                if cpu and done:
                    row[name]["proxy_cpu_ms_per_req"] = round(1000 * sum(cpu) / done, 3)
                    row[name]["own_cpu_ms_per_req"] = round(1000 * sum(r["own_cpu_s"] for r in results) / done, 3)
                if name == "agentprobe":
                    row[name]["rows_behind_at_end"] = max(r["rows_behind_at_end"] for r in results)
                    row[name]["catch_up_s"] = max(r["catch_up_s"] for r in results)
            ap, mitm = row["agentprobe"], row["mitmdump"]
            # The ratio of each round's adjacent pair, then the median over rounds; the range shows the noise.
            paired = [a["rps"] / m["rps"] for a, m in zip(per_target["agentprobe"], per_target["mitmdump"])
                      if a["rps"] and m["rps"]]
            row["ratio_rps"] = round(statistics.median(paired), 3) if paired else None
            row["ratio_rps_rounds"] = [round(x, 3) for x in paired]
            ms = row["mitmdump-stream"]
            row["ratio_rps_vs_streaming"] = round(ap["rps"] / ms["rps"], 3) if ap["rps"] and ms["rps"] else None
            row["added_p50_ms_vs_mitmdump"] = (round(ap["p50_ms"] - mitm["p50_ms"], 3)
                                                if ap["p50_ms"] is not None and mitm["p50_ms"] is not None else None)
            row["added_p50_ms_vs_direct"] = (round(ap["p50_ms"] - row["direct"]["p50_ms"], 3)
                                              if ap["p50_ms"] is not None and row["direct"]["p50_ms"] is not None
                                              else None)
            log(f"{scenario.name:22} c={conc:<2} req/s direct {row['direct']['rps']:7.1f}  mitmdump "
                f"{mitm['rps']:7.1f}  agentprobe {ap['rps']:7.1f}  ratio {row['ratio_rps']}  "
                f"p50 {mitm['p50_ms']} -> {ap['p50_ms']} ms")
            rows.append(row)
    return rows


async def measure_ttft(targets: dict[str, Target], samples: int) -> dict:
    """Time to the first complete SSE event, one request at a time, targets interleaved."""
    scenario = Scenario("sse ttft", stream=True, words=20, chunk_delay=0.001)
    ttft: dict[str, list[float]] = {t: [] for t in TARGETS}
    conns = {t: Connection(*targets[t].connect) for t in TARGETS}
    for i in range(samples + 10):
        for name in TARGETS:
            r = await conns[name].request(scenario.build(targets[name], next_id()))
            if r.status != 200 or r.ttft is None:
                raise RuntimeError(f"TTFT request via {name} failed: status {r.status}")
            if i >= 10:  # the first few warm connections and caches
                ttft[name].append(r.ttft * 1000)
    for c in conns.values():
        c.close()
    out = {name: {"p50_ms": round(percentile(v, 50), 3), "p99_ms": round(percentile(v, 99), 3)}
           for name, v in ttft.items()}
    out["added_p50_ms_vs_direct"] = round(out["agentprobe"]["p50_ms"] - out["direct"]["p50_ms"], 3)
    out["mitmdump_added_p50_ms_vs_direct"] = round(out["mitmdump"]["p50_ms"] - out["direct"]["p50_ms"], 3)
    out["mitmdump_stream_added_p50_ms_vs_direct"] = round(out["mitmdump-stream"]["p50_ms"] - out["direct"]["p50_ms"], 3)
    out["samples"] = samples
    return out


class RowWatcher(threading.Thread):
    """Polls the DB from its own connection and notes when each probe's row first becomes readable."""

    def __init__(self, db: Path, interval: float = 0.001) -> None:
        super().__init__(daemon=True)
        self.db, self.interval = db, interval
        self.seen: dict[str, float] = {}
        self.stop_flag = threading.Event()

    def run(self) -> None:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5, check_same_thread=False)
        last = conn.execute("SELECT coalesce(max(rowid), 0) FROM calls").fetchone()[0]
        while not self.stop_flag.is_set():
            rows = conn.execute("SELECT rowid, path FROM calls WHERE rowid > ?", (last,)).fetchall()
            now = time.perf_counter()
            for rowid, path in rows:
                last = max(last, rowid)
                m = re.search(r"bench_probe=(\d+)", path or "")
                if m:
                    self.seen.setdefault(m.group(1), now)
            time.sleep(self.interval)
        conn.close()


# Durability phases: (name, background connections, background scenario, counts toward the goal).
# The last keeps both cores busy with 100 KB streams: the writer yields the CPU to the agent's
# traffic until a call has waited a quarter second, then takes its share back to catch up.
DURABILITY_PHASES = (
    ("idle", 0, None, True),
    ("under load (c=16)", 16, Scenario("background"), True),
    ("under a CPU-saturating load (c=16, 100 KB streams)", 16,
     Scenario("background sse 100KB", stream=True, response_kb=100), True),
)


async def measure_durability(target: Target, db: Path, probes: int) -> dict:
    """Probe requests alone, then the same probes while 16 connections load the proxy."""
    out = {}
    for phase, background, scenario, counts in DURABILITY_PHASES:
        watcher = RowWatcher(db)
        watcher.start()
        ended: dict[str, float] = {}
        stop = asyncio.Event()

        async def load() -> None:
            conn = Connection(*target.connect)
            try:
                while not stop.is_set():
                    r = await conn.request(scenario.build(target, next_id()))
                    if r.status != 200:
                        raise RuntimeError(f"background request failed: {r.status}")
            finally:
                conn.close()

        bg = [asyncio.create_task(load()) for _ in range(background)]
        conn = Connection(*target.connect)
        probe = Scenario("probe")
        await asyncio.sleep(0.2 if background else 0)
        for _ in range(probes):
            key = str(next_id())
            r = await conn.request(probe.build(target, int(key), path=f"/v1/chat/completions?bench_probe={key}"))
            if r.status != 200:
                raise RuntimeError(f"probe failed: {r.status}")
            ended[key] = r.end
            await asyncio.sleep(0.01)
        conn.close()
        stop.set()
        await asyncio.gather(*bg)
        deadline = time.perf_counter() + 10
        while len(watcher.seen) < len(ended) and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
        watcher.stop_flag.set()
        watcher.join()
        lags = [(watcher.seen[k] - t) * 1000 for k, t in ended.items() if k in watcher.seen]
        out[phase] = {
            "probes": len(ended),
            "missing": len(ended) - len(lags),
            "p50_ms": round(percentile(lags, 50), 3) if lags else None,
            "p99_ms": round(percentile(lags, 99), 3) if lags else None,
            "max_ms": round(max(lags), 3) if lags else None,
            "goal": counts,
        }
        log(f"durability {phase}: {out[phase]}")
    return out


async def measure_memory(tmp: Path, provider: str, cfg: dict) -> dict:
    """A fresh `record` process: RSS after 1,000 and N calls, then during a 50 MB stream."""
    proc, port, db = start_agentprobe(tmp, "agentprobe-memory")
    try:
        target = Target("agentprobe", ("127.0.0.1", port), provider, True)
        small_json, small_sse = Scenario("json small"), Scenario("sse small", stream=True)
        out: dict = {"idle_mb": round(proc.rss_mb(), 1), "points": []}
        sent = 0
        for goal in cfg["memory_calls"]:
            half = (goal - sent) // 2
            for scenario, n in ((small_json, half), (small_sse, goal - sent - half)):
                r = await run_count(target, scenario, 16, n)
                if r["errors"]:
                    raise RuntimeError(f"memory load: {r['errors']} errors, first: {r['first_error']}")
            sent = goal
            written = wait_calls(db, goal)
            time.sleep(1.0)  # let the writer and allocator settle
            out["points"].append({"calls": goal, "written": written, "rss_mb": round(proc.rss_mb(), 1)})
            log(f"memory after {goal} calls: {out['points'][-1]['rss_mb']} MB RSS ({written} rows)")
        first, last = out["points"][0], out["points"][-1]
        out["growth_mb"] = round(last["rss_mb"] - first["rss_mb"], 1)
        out["growth_calls"] = (first["calls"], last["calls"])
        out["stream"] = await _big_stream(proc, target, provider, cfg["stream_mb"])
        proc.stop()
        out["stats"] = {**run_stats(db), "sent": target.sent}
        return out
    finally:
        proc.stop()


async def _big_stream(proc: Proc, target: Target, provider: str, mb: float) -> dict:
    # The fake provider sends one SSE event per word: size the reply from a small sample.
    direct = Target("direct", _hostport(provider), provider, False)
    sample_words = 2000
    conn = Connection(*direct.connect)
    r = await conn.request(Scenario("calibrate", stream=True, words=sample_words).build(direct, next_id()))
    conn.close()
    words = int(mb * 1024 * 1024 * sample_words / r.body_bytes)
    scenario = Scenario("big stream", stream=True, words=words)
    before = proc.rss_mb()
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                peak[0] = max(peak[0], proc.rss_mb())
            except (OSError, KeyError):
                return
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    conn = Connection(*target.connect)
    t0 = time.perf_counter()
    r = await conn.request(scenario.build(target, next_id()))
    elapsed = time.perf_counter() - t0
    conn.close()
    done.set()
    sampler.join()
    time.sleep(0.5)
    out = {
        "body_mb": round(r.body_bytes / 1024 / 1024, 1),
        "events": words,
        "seconds": round(elapsed, 2),
        "rss_before_mb": round(before, 1),
        "rss_peak_mb": round(peak[0], 1),
        "rss_after_mb": round(proc.rss_mb(), 1),
        "peak_growth_mb": round(peak[0] - before, 1),
        "status": r.status,
    }
    log(f"50 MB stream: {out}")
    return out


def _hostport(url: str) -> tuple[str, int]:
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    return host, int(port)


def measure_calls_json(tmp: Path, n: int) -> dict:
    from synth import make_db

    db = tmp / f"synthetic-{n}.db"
    t0 = time.perf_counter()
    make_db(db, n)
    gen = time.perf_counter() - t0
    t0 = time.perf_counter()
    p = subprocess.Popen([PY, "-m", "agentprobe", "calls", "--db", str(db), "--json"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    elapsed = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode(errors="replace").strip() if p.stderr else ""
    if p.returncode != 0:
        raise RuntimeError(f"calls --json exited {p.returncode}: {err[-500:]}")
    db.unlink(missing_ok=True)
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    out = {"calls": n, "seconds": round(elapsed, 2), "max_rss_mb": round(usage.ru_maxrss / 1024, 1),
           "generate_seconds": round(gen, 2)}
    log(f"calls --json over {n:,} calls: {out}")
    return out


def measure_soak(seconds: int) -> dict:
    """The slow soak test: no call lost, no body mixed up between 64 concurrent streams."""
    t0 = time.perf_counter()
    p = subprocess.run([PY, "-m", "pytest", "-q", "-m", "slow", "-p", "no:cacheprovider",
                        str(ROOT / "tests" / "test_load.py")], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "AGENTPROBE_SOAK_SECONDS": str(seconds)})
    out = {"seconds": seconds, "wall_seconds": round(time.perf_counter() - t0, 1), "passed": p.returncode == 0,
           "summary": (p.stdout.strip().splitlines() or [""])[-1]}
    log(f"soak: {out}")
    return out


def _timed_cli(args: list[str]) -> tuple[float, float]:
    """Seconds and peak RSS (MB) of one `agentprobe` command; a non-zero exit other than 1 (findings) is a crash."""
    t0 = time.perf_counter()
    p = subprocess.Popen([PY, "-m", "agentprobe", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    elapsed = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        err = p.stderr.read().decode(errors="replace").strip() if p.stderr else ""
        raise RuntimeError(f"agentprobe {' '.join(args)} exited {code}: {err[-500:]}")
    return round(elapsed, 2), round(usage.ru_maxrss / 1024, 1)


def measure_scan(tmp: Path, sizes: tuple[int, ...]) -> dict:
    """`scan --all` and `scan` of the latest run over synthetic DBs of four runs (two dev, two prod)."""
    from synth import make_db

    out = {}
    for n in sizes:
        db = tmp / f"scan-{n}.db"
        t0 = time.perf_counter()
        make_db(db, n, runs=4)
        gen = time.perf_counter() - t0
        all_s, all_rss = _timed_cli(["scan", "--db", str(db), "--all", "--format", "json"])
        latest_s, _ = _timed_cli(["scan", "--db", str(db), "--format", "json"])
        out[str(n)] = {"calls": n, "generate_seconds": round(gen, 2), "scan_all_seconds": all_s,
                       "scan_all_max_rss_mb": all_rss, "scan_latest_run_seconds": latest_s}
        log(f"scan over {n:,} calls: {out[str(n)]}")
        for suffix in ("", "-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
    return out


# -- report ------------------------------------------------------------------------------


def goals(results: dict, mode: str) -> list[dict]:
    out = []

    def goal(name: str, ok: bool | None, detail: str) -> None:
        out.append({"goal": name, "status": "SKIP" if ok is None else ("PASS" if ok else "FAIL"), "detail": detail})

    matrix = results.get("matrix") or []
    for conc in CONCURRENCY:
        rows = [r for r in matrix if r["concurrency"] == conc and r["ratio_rps"] is not None]
        if rows:
            worst = min(rows, key=lambda r: r["ratio_rps"])
            # One decimal: a miss by 0.2 points must not print as "90%".
            misses = [f"{r['scenario']} {r['ratio_rps']:.1%}{_range(r)}" for r in rows
                      if r["ratio_rps"] < GOAL_RPS_RATIO]
            vs_stream = min(r["ratio_rps_vs_streaming"] or 0 for r in rows)
            goal(f"agentprobe >= {GOAL_RPS_RATIO:.0%} of mitmdump req/s at concurrency {conc}",
                 not misses, f"worst {worst['scenario']} {worst['ratio_rps']:.1%}{_range(worst)}"
                 + (f"; below: {', '.join(misses)}" if misses else "")
                 + f" (worst against streaming mitmdump: {vs_stream:.0%})")
    rows = [r for r in matrix if r["concurrency"] == 1 and r["added_p50_ms_vs_mitmdump"] is not None]
    if rows:
        worst = max(rows, key=lambda r: r["added_p50_ms_vs_mitmdump"])
        goal(f"added p50 latency over mitmdump <= {GOAL_ADDED_P50_MS:g} ms (concurrency 1)",
             worst["added_p50_ms_vs_mitmdump"] <= GOAL_ADDED_P50_MS,
             f"worst {worst['scenario']} {worst['added_p50_ms_vs_mitmdump']:+.2f} ms")
    ttft = results.get("ttft")
    if ttft:
        goal(f"TTFT added over direct <= {GOAL_TTFT_ADDED_MS:g} ms", ttft["added_p50_ms_vs_direct"] <= GOAL_TTFT_ADDED_MS,
             f"p50 {ttft['direct']['p50_ms']:.2f} -> {ttft['agentprobe']['p50_ms']:.2f} ms "
             f"({ttft['added_p50_ms_vs_direct']:+.2f}; bare mitmdump {ttft['mitmdump_added_p50_ms_vs_direct']:+.2f} "
             f"buffering, {ttft['mitmdump_stream_added_p50_ms_vs_direct']:+.2f} streaming)")
    dur = results.get("durability")
    if dur:
        worst = max((k for k, v in dur.items() if v.get("goal", True)), key=lambda k: dur[k]["p99_ms"] or 0)
        p99 = dur[worst]["p99_ms"] or 0
        missing = sum(v["missing"] for v in dur.values())
        goal(f"durability lag p99 <= {GOAL_DURABILITY_P99_S:g} s (idle, 16 connections of small calls, "
             "16 of 100 KB streams)",
             p99 <= GOAL_DURABILITY_P99_S * 1000 and not missing,
             f"worst p99 {p99:.1f} ms ({worst})" + (f"; {missing} probe rows never appeared" if missing else ""))
    mem = results.get("memory")
    if mem:
        a, b = mem["growth_calls"]
        goal(f"memory growth between {a:,} and {b:,} calls <= {GOAL_MEMORY_GROWTH_MB:g} MB",
             mem["growth_mb"] <= GOAL_MEMORY_GROWTH_MB,
             f"{mem['points'][0]['rss_mb']} -> {mem['points'][-1]['rss_mb']} MB ({mem['growth_mb']:+.1f})"
             + ("" if b >= 20_000 else " [quick mode: fewer calls than the 20,000 of the goal]"))
        s = mem.get("stream")
        if s:
            goal(f"RSS stays flat during a {s['body_mb']:g} MB stream (peak growth <= {GOAL_MEMORY_GROWTH_MB:g} MB)",
                 s["peak_growth_mb"] <= GOAL_MEMORY_GROWTH_MB,
                 f"{s['rss_before_mb']} -> peak {s['rss_peak_mb']} MB ({s['peak_growth_mb']:+.1f})")
    soak = results.get("soak")
    if soak:
        goal(f"64 concurrent streams for {soak['seconds']} s: none lost, none mixed up", soak["passed"],
             soak["summary"])
    scan = results.get("scan") or {}
    big = scan.get("1000000")
    if big:
        goal(f"scan of 1,000,000 calls <= {GOAL_SCAN_1M_S:g} s", big["scan_all_seconds"] <= GOAL_SCAN_1M_S,
             f"{big['scan_all_seconds']:.1f} s")
    elif scan:
        # Quick mode: the same goal scaled linearly to the size measured, to catch regressions early.
        n, r = max((int(k), v) for k, v in scan.items())
        budget = GOAL_SCAN_1M_S * n / 1_000_000
        goal(f"scan of {n:,} calls <= {budget:g} s (the 1,000,000-call goal scaled)", r["scan_all_seconds"] <= budget,
             f"{r['scan_all_seconds']:.1f} s")
    return out


def _range(row: dict) -> str:
    """' (88%-101%)': the range of a cell's per-round ratios, when it had more than one round."""
    rounds = row.get("ratio_rps_rounds") or []
    return f" ({min(rounds):.0%}-{max(rounds):.0%})" if len(rounds) > 1 else ""


def _f(v, fmt="{:.1f}") -> str:
    return "–" if v is None else fmt.format(v)


def markdown(results: dict) -> str:
    env = results["environment"]
    lines = [
        f"agentprobe benchmark, `{results['mode']}` mode, {results['finished_at']}: "
        f"{env['cpu_count']} cores ({env['cpu_model']}), Python {env['python']}, mitmproxy {env['mitmproxy']}, "
        f"agentprobe {env['agentprobe']} ({env['git']}); load average at start {env['loadavg_start']}.",
        "",
    ]
    matrix = results.get("matrix")
    if matrix:
        lines += [
            "| scenario | conc. | req/s direct | req/s mitmdump | req/s mitmdump streaming | req/s agentprobe "
            "| agentprobe / mitmdump, median of rounds (range) | agentprobe / mitmdump streaming "
            "| p50 ms direct / mitmdump / agentprobe | p99 ms direct / mitmdump / agentprobe "
            "| added p50 ms vs mitmdump | CPU ms/req mitmdump / agentprobe proxy / agentprobe proxy + writer "
            "| agentprobe rows unwritten when the load ended (catch-up s) |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for r in matrix:
            d, m, a = r["direct"], r["mitmdump"], r["agentprobe"]
            lines.append(
                f"| {r['scenario']} | {r['concurrency']} | {_f(d['rps'], '{:.0f}')} | {_f(m['rps'], '{:.0f}')} "
                f"| {_f(r['mitmdump-stream']['rps'], '{:.0f}')} | {_f(a['rps'], '{:.0f}')} "
                f"| {_f(r['ratio_rps'], '{:.0%}')}{_range(r)} | {_f(r['ratio_rps_vs_streaming'], '{:.0%}')} "
                f"| {_f(d['p50_ms'], '{:.2f}')} / {_f(m['p50_ms'], '{:.2f}')} / {_f(a['p50_ms'], '{:.2f}')} "
                f"| {_f(d['p99_ms'], '{:.2f}')} / {_f(m['p99_ms'], '{:.2f}')} / {_f(a['p99_ms'], '{:.2f}')} "
                f"| {_f(r['added_p50_ms_vs_mitmdump'], '{:+.2f}')} "
                f"| {_f(m.get('proxy_cpu_ms_per_req'), '{:.2f}')} / {_f(a.get('own_cpu_ms_per_req'), '{:.2f}')} "
                f"/ {_f(a.get('proxy_cpu_ms_per_req'), '{:.2f}')} "
                f"| {_f(a.get('rows_behind_at_end'), '{:,}')} ({_f(a.get('catch_up_s'), '{:.1f}')}) |"
            )
        lines.append("")
    other = ["| measure | result |", "|---|---|"]
    t = results.get("ttft")
    if t:
        other.append(f"| time to first SSE event, p50 (p99) | direct {t['direct']['p50_ms']:.2f} "
                     f"({t['direct']['p99_ms']:.2f}) ms, mitmdump {t['mitmdump']['p50_ms']:.2f} "
                     f"({t['mitmdump']['p99_ms']:.2f}) ms, mitmdump streaming {t['mitmdump-stream']['p50_ms']:.2f} "
                     f"({t['mitmdump-stream']['p99_ms']:.2f}) ms, agentprobe {t['agentprobe']['p50_ms']:.2f} "
                     f"({t['agentprobe']['p99_ms']:.2f}) ms |")
    for phase, v in (results.get("durability") or {}).items():
        other.append(f"| durability lag {phase}, p50 / p99 / max | {_f(v['p50_ms'], '{:.1f}')} / "
                     f"{_f(v['p99_ms'], '{:.1f}')} / {_f(v['max_ms'], '{:.1f}')} ms ({v['probes']} probes"
                     + (f", {v['missing']} missing" if v["missing"] else "") + ") |")
    mem = results.get("memory")
    if mem:
        pts = ", ".join(f"{p['calls']:,} calls {p['rss_mb']} MB" for p in mem["points"])
        other.append(f"| `record` RSS | idle {mem['idle_mb']} MB, {pts}: growth {mem['growth_mb']:+.1f} MB |")
        s = mem.get("stream")
        if s:
            other.append(f"| `record` RSS during a {s['body_mb']:g} MB SSE stream ({s['events']:,} events, "
                         f"{s['seconds']:.1f} s) | {s['rss_before_mb']} MB before, peak {s['rss_peak_mb']} MB, "
                         f"{s['rss_after_mb']} MB after |")
    for key, label in (("stats_throughput", "throughput run"), ("stats_memory", "memory run")):
        st = results.get(key)
        if st:
            other.append(f"| rows written, {label} | {st['calls']:,} calls recorded, {st['calls_lost']} lost, "
                         f"{st['parse_errors']} parse errors (sent {st.get('sent', '?')}) |")
    cj = results.get("calls_json")
    if cj:
        other.append(f"| `agentprobe calls --json`, {cj['calls']:,} calls | {cj['seconds']:.1f} s, "
                     f"max RSS {cj['max_rss_mb']} MB |")
    scan = results.get("scan")
    if scan:
        for r in scan.values():
            other.append(f"| `scan --all` / `scan` (latest run), {r['calls']:,} calls in 4 runs | "
                         f"{r['scan_all_seconds']:.1f} s / {r['scan_latest_run_seconds']:.1f} s, "
                         f"max RSS {r['scan_all_max_rss_mb']} MB |")
    if len(other) > 2:
        lines += other + [""]
    lines.append("| goal | status | measured |")
    lines.append("|---|---|---|")
    for g in results.get("goals", []):
        lines.append(f"| {g['goal']} | **{g['status']}** | {g['detail']} |")
    for err in results.get("errors", []):
        lines.append(f"\nERROR in {err['phase']}: {err['error']}")
    return "\n".join(lines) + "\n"


def environment() -> dict:
    import mitmproxy.version

    import agentprobe

    cpu_model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        git = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                             text=True, timeout=10).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        git = "?"
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "mitmproxy": mitmproxy.version.VERSION,
        "agentprobe": agentprobe.__version__,
        "git": git,
        "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


# -- main --------------------------------------------------------------------------------


async def run_all(mode: str, cfg: dict, tmp: Path, only: set[str] | None) -> dict:
    results: dict = {"mode": mode, "config": {k: v for k, v in cfg.items()}, "environment": environment(),
                     "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "errors": []}
    want = (lambda phase: only is None or phase in only)

    async def phase(name: str, run, title: str | None = None) -> None:
        """Run one wanted phase into results[name]; one phase failing must not hide the others."""
        if not want(name):
            return
        log(f"-- {title or name}")
        try:
            value = run()
            results[name] = await value if inspect.isawaitable(value) else value
        except Exception as e:  # noqa: BLE001
            log(f"{name} crashed: {type(e).__name__}: {e}")
            traceback.print_exc()
            results["errors"].append({"phase": name, "error": f"{type(e).__name__}: {e}"})

    async def memory() -> dict:
        measured = await measure_memory(tmp, provider, cfg)
        results["stats_memory"] = measured.pop("stats")
        return measured

    fake, provider = start_fake()
    procs: dict[str, Proc] = {}
    try:
        log(f"fake provider {provider} (pid {fake.pid})")
        if want("matrix") or want("ttft") or want("durability"):
            mitm, mitm_port = start_mitmdump(tmp)
            mitms, mitms_port = start_mitmdump(tmp, "mitmdump-stream", "--set", "stream_large_bodies=1")
            ap, ap_port, ap_db = start_agentprobe(tmp, "agentprobe")
            procs = {"mitmdump": mitm, "mitmdump-stream": mitms, "agentprobe": ap}
            log(f"mitmdump :{mitm_port} (pid {mitm.pid}), agentprobe record :{ap_port} (pid {ap.pid})")
            targets = {
                "direct": Target("direct", _hostport(provider), provider, False),
                "mitmdump": Target("mitmdump", ("127.0.0.1", mitm_port), provider, True),
                "mitmdump-stream": Target("mitmdump-stream", ("127.0.0.1", mitms_port), provider, True),
                "agentprobe": Target("agentprobe", ("127.0.0.1", ap_port), provider, True),
            }
            await phase("matrix", lambda: measure_matrix(targets, procs, cfg, ap_db))
            await phase("ttft", lambda: measure_ttft(targets, cfg["ttft_samples"]))
            await phase("durability", lambda: measure_durability(targets["agentprobe"], ap_db,
                                                                 cfg["durability_probes"]))
            mitm.stop()
            mitms.stop()
            ap.stop()
            results["stats_throughput"] = {**run_stats(ap_db), "sent": targets["agentprobe"].sent}
        await phase("memory", memory)
    finally:
        for p in procs.values():
            p.stop()
        fake.stop(15)
    await phase("calls_json", lambda: measure_calls_json(tmp, cfg["calls_json"]), "calls --json")
    await phase("scan", lambda: measure_scan(tmp, cfg["scan_calls"]))
    if cfg.get("soak_seconds"):
        await phase("soak", lambda: measure_soak(cfg["soak_seconds"]),
                    f"soak: 64 concurrent streams for {cfg['soak_seconds']} s (tests/test_load.py, marked slow)")
    results["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    results["goals"] = goals(results, mode)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_const", dest="mode", const="quick", help="under 2 minutes (default)")
    group.add_argument("--full", action="store_const", dest="mode", const="full", help="longer, by hand")
    parser.add_argument("--only", help="comma-separated phases: matrix,ttft,durability,memory,calls_json,scan,soak")
    parser.add_argument("--scenario", action="append", choices=[s.name for s in SCENARIOS],
                        help="matrix: only this scenario (repeatable); to chase one cell")
    parser.add_argument("--no-save", action="store_true", help="print the table only; write nothing to bench/results")
    args = parser.parse_args(argv)
    mode = args.mode or "quick"
    only = set(args.only.split(",")) if args.only else None
    if args.scenario:
        SCENARIOS[:] = [s for s in SCENARIOS if s.name in args.scenario]
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="agentprobe-bench-") as tmp:
        results = asyncio.run(run_all(mode, MODES[mode], Path(tmp), only))
    results["wall_seconds"] = round(time.monotonic() - t0, 1)
    table = markdown(results)
    print(table)
    fails = [g for g in results["goals"] if g["status"] == "FAIL"]
    for g in fails:
        print(f"GOAL FAILED: {g['goal']}: {g['detail']}")
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S")
        (RESULTS / f"{stamp}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
        (RESULTS / "latest.md").write_text(table)
        log(f"wrote bench/results/{stamp}.json and bench/results/latest.md ({results['wall_seconds']} s)")
    # Missed goals are reported, not fatal; a crashed phase is.
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
