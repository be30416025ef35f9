#!/usr/bin/env python
"""Profile `agentprobe record` under one benchmark load with py-spy.

    pip install py-spy
    python bench/profile.py "sse 100KB response" --concurrency 1 --seconds 10
    python bench/profile.py "json small" --format raw -o /tmp/prof.txt   # collapsed stacks

Starts the fake provider and `agentprobe record`, attaches `py-spy record`
(all threads and the writer process, next to the event loop) for the
duration of the load, and prints the hottest functions by own time and by
total time. The scenario names are those of bench/run.py.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import Target, run_load  # noqa: E402
from processes import start_agentprobe, start_fake  # noqa: E402
from run import SCENARIOS  # noqa: E402


def summarize(collapsed: Path, top: int) -> str:
    own: collections.Counter = collections.Counter()
    total: collections.Counter = collections.Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        count = int(n)
        samples += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    out = [f"{samples} samples"]
    for title, counter in (("own time", own), ("total time", total)):
        out.append(f"\n-- top {top} by {title}")
        for frame, count in counter.most_common(top):
            out.append(f"{100 * count / samples:5.1f}%  {frame}")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=[s.name for s in SCENARIOS])
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--idle", action="store_true", help="include idle frames (waiting on locks, select)")
    parser.add_argument("--gil", action="store_true", help="only the thread holding the GIL (where CPU goes)")
    parser.add_argument("-o", "--output", type=Path, help="keep the collapsed stacks here")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    scenario = next(s for s in SCENARIOS if s.name == args.scenario)
    with tempfile.TemporaryDirectory(prefix="agentprobe-profile-") as tmp:
        tmp = Path(tmp)
        fake, provider = start_fake()
        ap, port, db = start_agentprobe(tmp, "agentprobe")
        out = args.output or tmp / "stacks.txt"
        try:
            target = Target("agentprobe", ("127.0.0.1", port), provider, True)
            cmd = [spy, "record", "--pid", str(ap.pid), "--rate", str(args.rate), "--format", "raw",
                   "-o", str(out), "--threads", "--subprocesses", "--duration", str(int(args.seconds + 1))]
            if args.idle:
                cmd.append("--idle")
            if args.gil:
                cmd.append("--gil")
            spy_proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(0.5)
            r = asyncio.run(run_load(target, scenario, args.concurrency, duration=args.seconds, warmup=0.2))
            print(f"{scenario.name} c={args.concurrency}: {r['rps']:.0f} req/s, p50 {r['p50_ms']} ms", flush=True)
            spy_proc.wait(60)
        finally:
            ap.stop()
            fake.stop()
        print(summarize(out, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
