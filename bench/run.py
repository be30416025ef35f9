#!/usr/bin/env python
"""agentprobe benchmark: what does recording cost the agent?

    python bench/run.py --quick     # under 2 minutes; what CI runs
    python bench/run.py --full      # by hand; 5 interleaved rounds, scan of 1,000,000 calls
    python bench/run.py --fastpath each --only matrix,ttft   # what each patch of mitmproxy buys

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
   100,000 (quick) or 100,000 and 1,000,000 (full) synthetic calls (bench/synth.py);
6. PostgreSQL (bench/pg_phase.py): the writer's calls/s into PG against SQLite, and `scan --all`
   over 20,000 (quick) or 1,000,000 (full) synthetic calls copied into PG.

`--fastpath off` runs `record` with AGENTPROBE_FASTPATH=0 (plain mitmproxy); `--fastpath each`
adds, in the matrix and the TTFT phase, `record` with every patch off and with each patch
alone off, and a table of what each patch buys. The goals judge the all-on target (with
`off`, the one there is, and say so). Each `record` must run what it was asked to: its run
row (`runs.fastpath`) goes into the results, and a mismatch stops the run.

Each goal prints PASS or FAIL. The exit code reports crashes only (a missed
goal still exits 0), so CI can keep the numbers without flaking on a busy box.
Results: bench/results/<timestamp>.json and bench/results/latest.md.

Here: the settings (modes, scenarios, targets), the command line and the order of the
phases. The phases themselves are in bench/phases.py, the processes they measure in
bench/processes.py, the goals and the table in bench/report.py.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import inspect
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
if str(ROOT) not in sys.path:
    sys.path.insert(1, str(ROOT))

from loadgen import Scenario, Target  # noqa: E402
from phases import (  # noqa: E402
    measure_calls_json,
    measure_durability,
    measure_matrix,
    measure_memory,
    measure_scan,
    measure_soak,
    measure_ttft,
)
from pg_phase import measure_postgres  # noqa: E402
from processes import (  # noqa: E402
    Proc,
    check_checkout,
    hostport,
    log,
    run_stats,
    start_agentprobe,
    start_fake,
    start_mitmdump,
)
from report import environment, goals, markdown  # noqa: E402

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
        "pg_writer_calls": 2_000,
        "pg_scan_calls": 20_000,
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
        "pg_writer_calls": 20_000,
        "pg_scan_calls": 1_000_000,
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
FASTPATH_CHOICES = ("on", "off", "each")


def fastpath_targets(choice: str) -> dict[str, str]:
    """The agentprobe targets of --fastpath `choice`, each with its AGENTPROBE_FASTPATH value.

    "agentprobe" is the one compared with mitmdump and judged by the goals: everything on, or
    with `off` everything off. `each` adds, after it in the interleaved rounds of the matrix
    and the TTFT phase, one target with everything off and one per patch with that patch
    alone off (agentprobe/proxy/fastpath PATCHES).
    """
    if choice == "off":
        return {"agentprobe": "0"}
    out = {"agentprobe": "1"}
    if choice == "each":
        from agentprobe.proxy.fastpath import PATCHES

        out["agentprobe[off]"] = "0"
        out.update({f"agentprobe[-{patch}]": f"-{patch}" for patch in PATCHES})
    return out


async def run_all(mode: str, cfg: dict, tmp: Path, only: set[str] | None, fastpath: str = "on") -> dict:
    source = check_checkout()  # before anything is measured: the code measured is this checkout's
    results: dict = {"mode": mode, "config": {k: v for k, v in cfg.items()},
                     "environment": {**environment(), "agentprobe_path": source},
                     "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "errors": []}
    want = (lambda phase: only is None or phase in only)
    switch = fastpath_targets(fastpath)
    # What each agentprobe process was asked to run and what its run row says it ran (start_agentprobe
    # raises when the two differ): the report shows it, and the goals are judged on "agentprobe".
    results["fastpath"] = {"mode": fastpath, "variants": [], "targets": {}}

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
        measured = await measure_memory(tmp, provider, cfg, switch["agentprobe"])
        results["stats_memory"] = measured.pop("stats")
        results["fastpath"]["targets"]["agentprobe-memory"] = measured.pop("fastpath")
        return measured

    fake, provider = start_fake()
    procs: dict[str, Proc] = {}
    try:
        log(f"fake provider {provider} (pid {fake.pid})")
        if want("matrix") or want("ttft") or want("durability"):
            # Each process joins procs as soon as it is up, so a later one failing to start stops it too.
            mitm, mitm_port = start_mitmdump(tmp)
            procs["mitmdump"] = mitm
            mitms, mitms_port = start_mitmdump(tmp, "mitmdump-stream", "--set", "stream_large_bodies=1")
            procs["mitmdump-stream"] = mitms
            connect = {"direct": hostport(provider), "mitmdump": ("127.0.0.1", mitm_port),
                       "mitmdump-stream": ("127.0.0.1", mitms_port)}
            dbs: dict[str, Path] = {}
            # The variants only run in the matrix and the TTFT phase.
            started = switch if want("matrix") or want("ttft") else {"agentprobe": switch["agentprobe"]}
            for name, value in started.items():
                procs[name], port, dbs[name] = start_agentprobe(tmp, name, value)
                connect[name] = ("127.0.0.1", port)
                results["fastpath"]["targets"][name] = procs[name].fastpath
                log(f"{name} record :{port} (pid {procs[name].pid}): runs.fastpath {procs[name].fastpath['ran']!r}")
            variants = [name for name in dbs if name != "agentprobe"]
            results["fastpath"]["variants"] = variants
            ap, ap_db = procs["agentprobe"], dbs["agentprobe"]
            log(f"mitmdump :{mitm_port} (pid {mitm.pid}), agentprobe record :{connect['agentprobe'][1]} "
                f"(pid {ap.pid})")
            # In TARGETS order, then the variants: the order the matrix and the TTFT phase interleave them in.
            targets = {name: Target(name, connect[name], provider, name != "direct") for name in (*TARGETS, *variants)}
            await phase("matrix", lambda: measure_matrix(targets, procs, cfg, dbs, scenarios=SCENARIOS,
                                                         concurrency=CONCURRENCY))
            await phase("ttft", lambda: measure_ttft(targets, cfg["ttft_samples"]))
            for name in variants:
                procs[name].stop()
                results["fastpath"]["targets"][name]["stats"] = {**run_stats(dbs[name]), "sent": targets[name].sent}
                del targets[name]
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
    await phase("postgres", lambda: measure_postgres(tmp, cfg["pg_writer_calls"], cfg["pg_scan_calls"],
                                                     cfg["durability_probes"]),
                "PostgreSQL: the writer against SQLite's, scan --all (a server started for the phase)")
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
    parser.add_argument("--only", help="comma-separated phases: matrix,ttft,durability,memory,calls_json,scan,"
                                       "postgres,soak")
    parser.add_argument("--scenario", action="append", choices=[s.name for s in SCENARIOS],
                        help="matrix: only this scenario (repeatable); to chase one cell")
    parser.add_argument("--no-save", action="store_true", help="print the table only; write nothing to bench/results")
    parser.add_argument("--fastpath", choices=FASTPATH_CHOICES, default="on",
                        help="agentprobe's patches of mitmproxy: on (default), off (AGENTPROBE_FASTPATH=0), or each: "
                             "also agentprobe with all off and with each patch alone off, in the matrix and TTFT "
                             "phases, and a table of what each patch buys (the goals judge the all-on target)")
    args = parser.parse_args(argv)
    mode = args.mode or "quick"
    only = set(args.only.split(",")) if args.only else None
    if args.scenario:
        SCENARIOS[:] = [s for s in SCENARIOS if s.name in args.scenario]
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="agentprobe-bench-") as tmp:
        results = asyncio.run(run_all(mode, MODES[mode], Path(tmp), only, args.fastpath))
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
