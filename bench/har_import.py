"""Peak memory and time of `agentprobe import` on a generated HAR of small chat calls.

    .venv/bin/python bench/har_import.py                 # 100,000 entries
    .venv/bin/python bench/har_import.py --entries 20000

The HAR is written entry by entry into a temporary directory (never kept), then imported by a
fresh `python -m agentprobe import` whose peak RSS is read from the kernel (ru_maxrss of the child).
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from synthetic import write_har  # noqa: E402


def measure(entries: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="agentprobe-har-bench-") as tmp:
        har = write_har(Path(tmp) / "big.har", entries)
        db = Path(tmp) / "bench.db"
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "agentprobe", "import", str(har), "--db", str(db)],
                              capture_output=True, text=True, cwd=ROOT)
        wall = time.monotonic() - started
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if proc.returncode != 0:
            raise SystemExit(f"import failed ({proc.returncode}): {proc.stderr.strip()}")
        calls = sqlite3.connect(db).execute("SELECT count(*) FROM calls").fetchone()[0]
        return {"entries": entries, "har_bytes": har.stat().st_size, "calls_imported": calls,
                "peak_rss_mb": round(peak_kb / 1024, 1), "wall_s": round(wall, 1),
                "stderr_lines": len(proc.stderr.splitlines())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    print(json.dumps(measure(parser.parse_args().entries), indent=1))


if __name__ == "__main__":
    main()
