"""The PostgreSQL phase: the writer into PostgreSQL against the SQLite writer, and `scan --all` on PG.

1. Writer throughput: the recorder's own Writer (the code its writer process runs: row building,
   redaction, token counting, batched inserts) fed the same synthetic chat calls, once into a
   SQLite file and once into a PostgreSQL database, in alternating order. The goal is the ratio
   PG/SQLite >= 0.9, taken as the matrix takes its ratios: per round (the two runs side by side),
   then the median over rounds. This VM's speed drifts by up to 1.6x within a minute, and a ratio
   of the two bests compared one lucky window with another.
2. Proxy throughput: `record --db postgresql://...` against `record --db file.db`, the same closed
   loop (c=16, small chat calls) through each, alternating, the same median of paired ratios; every call
   answered must be a row. The writer is a separate process, so the goal is the matrix's:
   PostgreSQL's req/s >= 0.9 of SQLite's.
3. Durability lag through `record --db postgresql://...`: the durability phase's probes, each
   timed from the end of its response to its row being readable from another connection to PG;
4. `scan --all` over a synthetic database (bench/synth.py, four runs) copied into PostgreSQL with
   `agentprobe copy`, timed as a user runs it.

The server is a real one started for the phase (tests/pg_server.py), with fsync on and
synchronous_commit off: a commit is safe from a crash of PostgreSQL (not of the machine), as
SQLite's WAL with synchronous=NORMAL is for the SQLite writer.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "tests"))

from processes import log  # noqa: E402


def _captures(n: int, start: float) -> list:
    from agentprobe.capture.exchange import Capture
    from agentprobe.providers import detect

    path = "/v1/chat/completions"
    out = []
    for i in range(n):
        body = json.dumps({"model": "gpt-4o-mini", "temperature": 0, "max_tokens": 64, "messages": [
            {"role": "system", "content": "You are a terse assistant that answers in one sentence."},
            {"role": "user", "content": f"question {i}: " + "what does the recorder write? " * 8}]}).encode()
        answer = json.dumps({"id": f"chatcmpl-{i}", "object": "chat.completion", "model": "gpt-4o-mini",
                             "choices": [{"index": 0, "message": {"role": "assistant", "content": f"answer {i} " * 20},
                                          "finish_reason": "stop"}],
                             "usage": {"prompt_tokens": 80, "completion_tokens": 40, "total_tokens": 120}}).encode()
        t = start + i * 0.01
        out.append(Capture(seq=i + 1, completion_seq=i + 1, started_at=t, ended_at=t + 0.2, method="POST",
                           scheme="https", host="api.openai.com", port=443, path=path,
                           request_headers=[("content-type", "application/json")], request_body=body,
                           dialect=detect("POST", "api.openai.com", path, body), first_byte_at=t + 0.1, status=200,
                           response_headers=[("content-type", "application/json")], response_body=answer))
    return out


def _writer_rate(target, n: int) -> float:
    """Calls per second one Writer takes from submit to committed, for n calls."""
    from agentprobe.capture.rows import RowBuilder
    from agentprobe.store.db import resolve_path
    from agentprobe.util.clock import new_id, now_iso

    run = {"id": new_id(), "started_at": now_iso()}
    captures = _captures(n, time.time())
    writer_target = resolve_path(target)
    from agentprobe.store.writer import Writer

    writer = Writer(writer_target, run, RowBuilder(run["id"]).build)
    writer.start()
    t0 = time.perf_counter()
    for cap in captures:
        writer.submit(cap)
    writer.close(ended_at=now_iso())
    elapsed = time.perf_counter() - t0
    if writer.calls_written != n:
        raise RuntimeError(f"the writer wrote {writer.calls_written} of {n} calls ({writer.last_error})")
    return n / elapsed


async def _durability(tmp: Path, url: str, probes: int) -> dict:
    """measure_durability's probes (idle, under load, CPU-saturating) through a `record --db URL`."""
    from loadgen import Target
    from phases import measure_durability
    from processes import PY, ROOT, Proc, child_env, start_fake

    fake, provider = start_fake()
    proc = Proc("agentprobe-pg", [PY, "-m", "agentprobe", "record", "--port", "0", "--db", url, "--confdir",
                                  str(tmp / "agentprobe-pg-conf"), "--label", "bench", "--runs-by", "recorder"],
                # one run: the probes are read back from the recorder's own run
                env=child_env(), cwd=ROOT)
    try:
        port = int(proc.wait_for(r"recording .*? on http://127\.0\.0\.1:(\d+)").group(1))
        target = Target("agentprobe-pg", ("127.0.0.1", port), provider, True)
        return await measure_durability(target, url, probes)
    finally:
        proc.stop()
        fake.stop(15)


def _start_recorder(tmp: Path, name: str, db: str):
    from processes import PY, ROOT, Proc, child_env

    proc = Proc(name, [PY, "-m", "agentprobe", "record", "--port", "0", "--db", db, "--confdir",
                       str(tmp / "agentprobe-pg-conf"), "--label", "bench", "--runs-by", "recorder"],
                env=child_env(), cwd=ROOT)
    port = int(proc.wait_for(r"recording .*? on http://127\.0\.0\.1:(\d+)").group(1))
    return proc, port


def _rows(db: str) -> int:
    from agentprobe.store.db import open_db

    conn = open_db(db)
    try:
        return conn.execute("SELECT count(*) FROM calls").fetchone()[0]
    finally:
        conn.close()


async def _proxy_rates(tmp: Path, url: str, rounds: int, duration: float, warmup: float) -> dict:
    """req/s through a recorder writing to PostgreSQL and through one writing to SQLite, alternating."""
    from loadgen import Scenario, Target, run_load
    from processes import start_fake

    fake, provider = start_fake()
    stores = {"sqlite": str(tmp / "proxy-sqlite.db"), "postgres": url}
    procs = {name: _start_recorder(tmp, f"agentprobe-{name}", db) for name, db in stores.items()}
    try:
        rates: dict[str, list[float]] = {name: [] for name in stores}
        completed = dict.fromkeys(stores, 0)
        scenario = Scenario("json small")
        for rnd in range(rounds):
            for name, (_, port) in (list(procs.items()) if rnd % 2 == 0 else list(procs.items())[::-1]):
                target = Target(f"agentprobe-{name}", ("127.0.0.1", port), provider, True)
                r = await run_load(target, scenario, 16, duration=duration, warmup=warmup)
                if r["errors"]:
                    raise RuntimeError(f"{name}: {r['errors']} errors, first {r['first_error']}")
                rates[name].append(r["rps"])
                completed[name] += r["completed"]
        out = {f"{name}_rps": round(statistics.median(v), 1) for name, v in rates.items()}
        out["rounds"] = {name: [round(x) for x in v] for name, v in rates.items()}
        out["ratio_rounds"] = [round(p / q, 3) for p, q in zip(rates["postgres"], rates["sqlite"])]
        out["ratio"] = round(statistics.median(out["ratio_rounds"]), 3)
    finally:
        for proc, _ in procs.values():
            proc.stop()
        fake.stop(15)
    # Stopped: every call is committed or counted by now.
    out["rows"] = {name: _rows(db) for name, db in stores.items()}
    out["answered"] = completed
    log(f"proxy req/s recording into PostgreSQL {out['postgres_rps']} vs SQLite {out['sqlite_rps']}"
        f" (ratio {out['ratio']:.2f}; rounds {out['rounds']}); rows {out['rows']} of {completed} answered")
    return out


async def measure_postgres(tmp: Path, writer_calls: int, scan_calls: int, probes: int = 60,
                           rounds: int = 5, proxy_duration: float = 3.0,
                           writer_rounds: int = 5) -> dict:
    from pg_server import PgServer, find_bindir, new_database

    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError("no PostgreSQL server binaries (apt-get install postgresql)")
    server = PgServer(bindir, durable=True)
    try:
        out: dict = {"server": str(bindir), "writer_calls": writer_calls, "rounds": writer_rounds}
        _writer_rate(tmp / "warmup.db", 200)  # the tokenizer's first load is no backend's cost
        sqlite_rates, pg_rates = [], []
        for r in range(writer_rounds):
            pair = [lambda r=r: sqlite_rates.append(_writer_rate(tmp / f"writer-{r}.db", writer_calls)),
                    lambda: pg_rates.append(_writer_rate(new_database(server.base_url()), writer_calls))]
            for step in (pair if r % 2 == 0 else pair[::-1]):
                step()
        out["sqlite_calls_per_s"] = round(statistics.median(sqlite_rates), 1)
        out["postgres_calls_per_s"] = round(statistics.median(pg_rates), 1)
        out["writer_ratio_rounds"] = [round(p / q, 3) for p, q in zip(pg_rates, sqlite_rates)]
        out["writer_ratio"] = round(statistics.median(out["writer_ratio_rounds"]), 3)
        log(f"writer: SQLite {out['sqlite_calls_per_s']} calls/s, PostgreSQL {out['postgres_calls_per_s']}"
            f" calls/s (median ratio {out['writer_ratio']:.2f}, per round {out['writer_ratio_rounds']};"
            f" rounds {[round(x) for x in sqlite_rates]} / {[round(x) for x in pg_rates]})")
        out["proxy"] = await _proxy_rates(tmp, new_database(server.base_url()), rounds, proxy_duration, 0.5)
        out["durability"] = await _durability(tmp, new_database(server.base_url()), probes)

        from phases import _timed_cli
        from synth import make_db

        from agentprobe.store.transfer import copy_runs

        db = tmp / f"pg-scan-{scan_calls}.db"
        run_ids = make_db(db, scan_calls, runs=4)
        url = new_database(server.base_url())
        t0 = time.perf_counter()
        copy_runs(run_ids, db, url)
        copy_s = time.perf_counter() - t0
        # Fresh statistics, as autovacuum would have them on a database that grew by recording.
        from agentprobe.store.db import open_db

        pg = open_db(url)
        pg.execute("ANALYZE")
        pg.close()
        all_s, all_rss = _timed_cli(["scan", "--db", url, "--all", "--format", "json"])
        sqlite_s, _ = _timed_cli(["scan", "--db", str(db), "--all", "--format", "json"])
        out["scan"] = {"calls": scan_calls, "copy_seconds": round(copy_s, 2), "scan_all_seconds": all_s,
                       "scan_all_max_rss_mb": all_rss, "sqlite_scan_all_seconds": sqlite_s}
        log(f"PostgreSQL scan --all over {scan_calls:,} calls: {out['scan']}")
        for suffix in ("", "-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
        return out
    finally:
        server.destroy()
