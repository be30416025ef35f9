"""The benchmark's measurements, one function per phase of bench/run.py.

matrix (req/s, latency and proxy CPU per scenario, concurrency and target), ttft (time to
the first SSE event), durability (from a response's end to its row being readable),
memory (RSS of a fresh `record` process), calls_json and scan (the read side over synthetic
databases, bench/synth.py) and soak (tests/test_load.py). Each returns what run.py stores
under the phase's name in the results.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import statistics
import subprocess
import threading
import time
from pathlib import Path

from loadgen import Connection, Scenario, Target, next_id, percentile, run_count, run_load
from processes import (
    PY,
    ROOT,
    Proc,
    child_env,
    count_calls,
    hostport,
    log,
    run_stats,
    start_agentprobe,
    wait_calls,
)


def _f(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def _median(values):
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


async def measure_matrix(targets: dict[str, Target], procs: dict[str, Proc], cfg: dict, dbs: dict[str, Path], *,
                         scenarios: list[Scenario], concurrency: tuple[int, ...]) -> list[dict]:
    """Every scenario x concurrency x target; targets interleaved so machine noise hits them all alike.

    `targets` run in their order in even rounds, in reverse in odd ones. `dbs` holds the
    database of each agentprobe target: "agentprobe", and with --fastpath each its variants
    (every other agentprobe target), each compared round by round with "agentprobe".

    agentprobe's writer runs at the lowest CPU priority, so under a load that keeps
    every core busy it writes little until the load ends. After each agentprobe load
    we wait until every call is written, count how far behind the writer was when the
    load ended, and charge the catch-up CPU to the load: the next target's numbers
    must not pay for it, and CPU per request must include it.
    """
    rows = []
    names = tuple(targets)
    variants = [name for name in dbs if name != "agentprobe"]
    for scenario in scenarios:
        for conc in concurrency:
            per_target: dict[str, list[dict]] = {t: [] for t in names}
            for rnd in range(cfg["rounds"]):
                order = names if rnd % 2 == 0 else tuple(reversed(names))
                for name in order:
                    proc = procs.get(name)
                    cpu0 = proc.cpu_s() if proc else None
                    own0 = proc.cpu_s(children=False) if proc else None
                    db = dbs.get(name)
                    sent0 = targets[name].sent
                    rows0 = count_calls(db) if db else 0
                    r = await run_load(targets[name], scenario, conc, duration=cfg["duration"], warmup=cfg["warmup"])
                    if proc:
                        r["own_cpu_s"] = proc.cpu_s(children=False) - own0  # the proxy's process alone
                    if db:
                        expected = rows0 + targets[name].sent - sent0
                        r["rows_behind_at_end"] = expected - count_calls(db)
                        t0 = time.perf_counter()
                        written = wait_calls(db, expected, timeout=300)
                        r["catch_up_s"] = round(time.perf_counter() - t0, 2)
                        if written < expected:
                            raise RuntimeError(f"{expected - written} calls never written by {name} "
                                               f"({scenario.name}, c={conc})")
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
                if name in dbs:
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
            if variants:
                # Each variant against everything on, paired round by round as agentprobe is with mitmdump.
                row["fastpath_vs_on"] = {}
                for name in variants:
                    pairs = [v["rps"] / a["rps"] for v, a in zip(per_target[name], per_target["agentprobe"])
                             if v["rps"] and a["rps"]]
                    row["fastpath_vs_on"][name] = {
                        "ratio_rps": round(statistics.median(pairs), 3) if pairs else None,
                        "ratio_rps_rounds": [round(x, 3) for x in pairs],
                    }
            log(f"{scenario.name:22} c={conc:<2} req/s direct {row['direct']['rps']:7.1f}  mitmdump "
                f"{mitm['rps']:7.1f}  agentprobe {ap['rps']:7.1f}  ratio {row['ratio_rps']}  "
                f"p50 {mitm['p50_ms']} -> {ap['p50_ms']} ms")
            if variants:
                log(f"{'':22} {'':4} fast path: agentprobe {ap['rps']:.1f} req/s "
                    f"{_f(ap.get('own_cpu_ms_per_req'))} ms CPU/req; "
                    + ", ".join(f"{name} {row[name]['rps']:.1f} {_f(row[name].get('own_cpu_ms_per_req'))}"
                                for name in variants))
            rows.append(row)
    return rows


async def measure_ttft(targets: dict[str, Target], samples: int) -> dict:
    """Time to the first complete SSE event, one request at a time, targets interleaved (in their order)."""
    scenario = Scenario("sse ttft", stream=True, words=20, chunk_delay=0.001)
    ttft: dict[str, list[float]] = {t: [] for t in targets}
    conns = {t: Connection(*targets[t].connect) for t in targets}
    for i in range(samples + 10):
        for name, target in targets.items():
            r = await conns[name].request(scenario.build(target, next_id()))
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
        if str(self.db).startswith("postgresql://"):  # bench/pg_phase.py: a recorder writing to PostgreSQL
            self._run_pg()
            return
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5, check_same_thread=False)
        sql = "SELECT rowid, path FROM calls WHERE rowid > ?"  # rowid is commit order
        last = conn.execute("SELECT coalesce(max(rowid), 0) FROM calls").fetchone()[0]
        while not self.stop_flag.is_set():
            rows = conn.execute(sql, [last]).fetchall()
            now = time.perf_counter()
            for rowid, path in rows:
                last = max(last, rowid)
                self._note(path, now)
            time.sleep(self.interval)
        conn.close()

    def _note(self, path: str | None, now: float) -> None:
        m = re.search(r"bench_probe=(\d+)", path or "")
        if m:
            self.seen.setdefault(m.group(1), now)

    def _run_pg(self) -> None:
        """seq is dispatch order, not commit order, and a poll must cost the server next to nothing (it
        shares the CPU being measured): each poll asks for the seqs past the highest seen and for the
        holes below it (dispatched earlier, still committing), by the index on (run_id, seq)."""
        from agentprobe.store.db import open_db

        conn = open_db(str(self.db)).conn
        [(run_id,)] = conn.execute("SELECT id FROM runs").fetchall()  # the recorder's one run
        top = conn.execute("SELECT coalesce(max(seq), 0) FROM calls WHERE run_id = ?", [run_id]).fetchone()[0]
        holes: set[int] = set()
        while not self.stop_flag.is_set():
            wanted = sorted(holes)[-2000:]  # a call lost for good leaves a hole; keep the recent ones
            rows = conn.execute("SELECT seq, path FROM calls WHERE run_id = ? AND (seq > ? OR seq IN"
                                " (SELECT CAST(jsonb_array_elements_text(CAST(? AS jsonb)) AS bigint)))",
                                [run_id, top, json.dumps(wanted)]).fetchall()
            now = time.perf_counter()
            got = {seq for seq, _ in rows}
            new_top = max([top, *got])
            holes = (set(wanted) | set(range(top + 1, new_top))) - got
            top = new_top
            for _, path in rows:
                self._note(path, now)
            time.sleep(0.002)
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
        # This phase's probes: the PostgreSQL watcher looks back over earlier rows, earlier phases' probes too.
        while any(k not in watcher.seen for k in ended) and time.perf_counter() < deadline:
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
            "counts_toward_goal": counts,
        }
        log(f"durability {phase}: {out[phase]}")
    return out


async def measure_memory(tmp: Path, provider: str, cfg: dict, fastpath: str | None = None) -> dict:
    """A fresh `record` process: RSS after 1,000 and N calls, then during a 50 MB stream.

    It runs with AGENTPROBE_FASTPATH=`fastpath` (see start_agentprobe); out["fastpath"] says what it ran.
    """
    proc, port, db = start_agentprobe(tmp, "agentprobe-memory", fastpath)
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
        out["fastpath"] = proc.fastpath
        return out
    finally:
        proc.stop()


async def _big_stream(proc: Proc, target: Target, provider: str, mb: float) -> dict:
    # The fake provider sends one SSE event per word: size the reply from a small sample.
    direct = Target("direct", hostport(provider), provider, False)
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


def measure_calls_json(tmp: Path, n: int) -> dict:
    from synth import make_db

    db = tmp / f"synthetic-{n}.db"
    t0 = time.perf_counter()
    make_db(db, n)
    gen = time.perf_counter() - t0
    t0 = time.perf_counter()
    p = subprocess.Popen([PY, "-m", "agentprobe", "calls", "--db", str(db), "--json"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=child_env(), cwd=ROOT)
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
                       env=child_env({"AGENTPROBE_SOAK_SECONDS": str(seconds)}))
    out = {"seconds": seconds, "wall_seconds": round(time.perf_counter() - t0, 1), "passed": p.returncode == 0,
           "summary": (p.stdout.strip().splitlines() or [""])[-1]}
    log(f"soak: {out}")
    return out


def _timed_cli(args: list[str]) -> tuple[float, float]:
    """Seconds and peak RSS (MB) of one `agentprobe` command; a non-zero exit other than 1 (findings) is a crash."""
    t0 = time.perf_counter()
    p = subprocess.Popen([PY, "-m", "agentprobe", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         env=child_env(), cwd=ROOT)
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
