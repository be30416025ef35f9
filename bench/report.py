"""What a benchmark run reports: the goals it judges, the markdown table, the machine it ran on."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from pathlib import Path

from processes import ROOT

GOAL_RPS_RATIO = 0.90
GOAL_ADDED_P50_MS = 1.0
GOAL_TTFT_ADDED_MS = 3.0
GOAL_DURABILITY_P99_S = 1.0
GOAL_MEMORY_GROWTH_MB = 20.0
GOAL_SCAN_1M_S = 30.0
GOAL_PG_WRITER_RATIO = 0.9


def goals(results: dict, mode: str) -> list[dict]:
    out = []

    def goal(name: str, ok: bool | None, detail: str) -> None:
        out.append({"goal": name, "status": "SKIP" if ok is None else ("PASS" if ok else "FAIL"), "detail": detail})

    # The goals judge the "agentprobe" target: everything on, except with --fastpath off.
    fp = " [agentprobe's fast path off]" if (results.get("fastpath") or {}).get("mode") == "off" else ""
    matrix = results.get("matrix") or []
    for conc in sorted({r["concurrency"] for r in matrix}):
        rows = [r for r in matrix if r["concurrency"] == conc and r["ratio_rps"] is not None]
        if rows:
            worst = min(rows, key=lambda r: r["ratio_rps"])
            # One decimal: a miss by 0.2 points must not print as "90%".
            misses = [f"{r['scenario']} {r['ratio_rps']:.1%}{_range(r)}" for r in rows
                      if r["ratio_rps"] < GOAL_RPS_RATIO]
            vs_stream = min(r["ratio_rps_vs_streaming"] or 0 for r in rows)
            goal(f"agentprobe >= {GOAL_RPS_RATIO:.0%} of mitmdump req/s at concurrency {conc}{fp}",
                 not misses, f"worst {worst['scenario']} {worst['ratio_rps']:.1%}{_range(worst)}"
                 + (f"; below: {', '.join(misses)}" if misses else "")
                 + f" (worst against streaming mitmdump: {vs_stream:.0%})")
    rows = [r for r in matrix if r["concurrency"] == 1 and r["added_p50_ms_vs_mitmdump"] is not None]
    if rows:
        worst = max(rows, key=lambda r: r["added_p50_ms_vs_mitmdump"])
        goal(f"added p50 latency over mitmdump <= {GOAL_ADDED_P50_MS:g} ms (concurrency 1){fp}",
             worst["added_p50_ms_vs_mitmdump"] <= GOAL_ADDED_P50_MS,
             f"worst {worst['scenario']} {worst['added_p50_ms_vs_mitmdump']:+.2f} ms")
    ttft = results.get("ttft")
    if ttft:
        goal(f"TTFT added over direct <= {GOAL_TTFT_ADDED_MS:g} ms{fp}",
             ttft["added_p50_ms_vs_direct"] <= GOAL_TTFT_ADDED_MS,
             f"p50 {ttft['direct']['p50_ms']:.2f} -> {ttft['agentprobe']['p50_ms']:.2f} ms "
             f"({ttft['added_p50_ms_vs_direct']:+.2f}; bare mitmdump {ttft['mitmdump_added_p50_ms_vs_direct']:+.2f} "
             f"buffering, {ttft['mitmdump_stream_added_p50_ms_vs_direct']:+.2f} streaming)")
    dur = results.get("durability")
    if dur:
        worst = max((k for k, v in dur.items() if v.get("counts_toward_goal", v.get("goal", True))), key=lambda k: dur[k]["p99_ms"] or 0)
        p99 = dur[worst]["p99_ms"] or 0
        missing = sum(v["missing"] for v in dur.values())
        goal(f"durability lag p99 <= {GOAL_DURABILITY_P99_S:g} s (idle, 16 connections of small calls, "
             f"16 of 100 KB streams){fp}",
             p99 <= GOAL_DURABILITY_P99_S * 1000 and not missing,
             f"worst p99 {p99:.1f} ms ({worst})" + (f"; {missing} probe rows never appeared" if missing else ""))
    mem = results.get("memory")
    if mem:
        a, b = mem["growth_calls"]
        goal(f"memory growth between {a:,} and {b:,} calls <= {GOAL_MEMORY_GROWTH_MB:g} MB{fp}",
             mem["growth_mb"] <= GOAL_MEMORY_GROWTH_MB,
             f"{mem['points'][0]['rss_mb']} -> {mem['points'][-1]['rss_mb']} MB ({mem['growth_mb']:+.1f})"
             + ("" if b >= 20_000 else " [quick mode: fewer calls than the 20,000 of the goal]"))
        s = mem.get("stream")
        if s:
            goal(f"RSS stays flat during a {s['body_mb']:g} MB stream "
                 f"(peak growth <= {GOAL_MEMORY_GROWTH_MB:g} MB){fp}",
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
    pg = results.get("postgres")
    if pg:
        goal(f"PostgreSQL writer >= {GOAL_PG_WRITER_RATIO:.0%} of the SQLite writer's calls/s", pg["writer_ratio"]
             >= GOAL_PG_WRITER_RATIO, f"{pg['postgres_calls_per_s']:.0f} vs {pg['sqlite_calls_per_s']:.0f} calls/s"
             f" ({pg['writer_ratio']:.0%}{_span(pg.get('writer_ratio_rounds'))}, median of {pg['rounds']} paired"
             f" rounds of {pg['writer_calls']:,} calls)")
        proxy = pg.get("proxy")
        if proxy:
            lost = {k: proxy["answered"][k] - proxy["rows"][k] for k in proxy["rows"]}
            goal(f"proxy req/s recording into PostgreSQL >= {GOAL_RPS_RATIO:.0%} of recording into SQLite, every"
                 " call a row", proxy["ratio"] >= GOAL_RPS_RATIO and not any(lost.values()),
                 f"{proxy['postgres_rps']:.0f} vs {proxy['sqlite_rps']:.0f} req/s ({proxy['ratio']:.0%}, c=16,"
                 f" median of {len(proxy['rounds']['postgres'])} paired rounds{_span(proxy.get('ratio_rounds'), ', ')});"
                 f" rows short of calls answered: {lost}")
        dur = pg.get("durability") or {}
        if dur:
            worst = max(dur, key=lambda k: dur[k]["p99_ms"] or 0)
            missing = sum(v["missing"] for v in dur.values())
            goal(f"durability lag p99 <= {GOAL_DURABILITY_P99_S:g} s recording into PostgreSQL",
                 (dur[worst]["p99_ms"] or 0) <= GOAL_DURABILITY_P99_S * 1000 and not missing,
                 f"worst p99 {dur[worst]['p99_ms'] or 0:.1f} ms ({worst})"
                 + (f"; {missing} probe rows never appeared" if missing else ""))
        s = pg["scan"]
        if s["calls"] >= 1_000_000:
            goal(f"scan --all of {s['calls']:,} calls on PostgreSQL <= {GOAL_SCAN_1M_S:g} s",
                 s["scan_all_seconds"] <= GOAL_SCAN_1M_S,
                 f"{s['scan_all_seconds']:.1f} s (SQLite {s['sqlite_scan_all_seconds']:.1f} s)")
        else:
            # Quick mode: too few calls for the 1M goal scaled down (starting the command is most of the
            # time); PostgreSQL within twice SQLite's time on the same calls catches a rule gone quadratic.
            goal(f"scan --all of {s['calls']:,} calls on PostgreSQL <= 2x SQLite's (quick mode; the goal is"
                 f" {GOAL_SCAN_1M_S:g} s at 1,000,000)", s["scan_all_seconds"] <= 2 * s["sqlite_scan_all_seconds"],
                 f"{s['scan_all_seconds']:.1f} s (SQLite {s['sqlite_scan_all_seconds']:.1f} s)")
    return out


def _span(ratios: list | None, sep: str = " ") -> str:
    """' (88%-101%)' for a list of per-round ratios (benchmark results from before they were kept: '')."""
    if not ratios or len(ratios) < 2:
        return ""
    return f"{sep}({min(ratios):.0%}-{max(ratios):.0%})" if sep == " " else f"{sep}{min(ratios):.0%}-{max(ratios):.0%}"


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
    ran = (results.get("fastpath") or {}).get("targets") or {}
    if ran:
        lines += ["agentprobe's fast path, as each `record` process's run row (`runs.fastpath`) says it ran: "
                  + ", ".join(f"{name} `{v['ran']}`" for name, v in ran.items()) + ".", ""]
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
    pg = results.get("postgres")
    if pg:
        other.append(f"| writer calls/s, SQLite / PostgreSQL ({pg['writer_calls']:,} calls) | "
                     f"{pg['sqlite_calls_per_s']:.0f} / {pg['postgres_calls_per_s']:.0f} ({pg['writer_ratio']:.0%}) |")
        if pg.get("proxy"):
            other.append(f"| proxy req/s recording into SQLite / PostgreSQL (c=16, small chat calls) | "
                         f"{pg['proxy']['sqlite_rps']:.0f} / {pg['proxy']['postgres_rps']:.0f}"
                         f" ({pg['proxy']['ratio']:.0%}) |")
        s = pg["scan"]
        other.append(f"| `scan --all` on PostgreSQL, {s['calls']:,} calls in 4 runs"
                     f" (copied in {s['copy_seconds']:.0f} s) | "
                     f"{s['scan_all_seconds']:.1f} s (SQLite {s['sqlite_scan_all_seconds']:.1f} s) |")
    scan = results.get("scan")
    if scan:
        for r in scan.values():
            other.append(f"| `scan --all` / `scan` (latest run), {r['calls']:,} calls in 4 runs | "
                         f"{r['scan_all_seconds']:.1f} s / {r['scan_latest_run_seconds']:.1f} s, "
                         f"max RSS {r['scan_all_max_rss_mb']} MB |")
    if len(other) > 2:
        lines += other + [""]
    lines += fastpath_table(results)
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


def fastpath_table(results: dict) -> list[str]:
    """What each patch buys (--fastpath each): every variant against agentprobe with everything on.

    Per matrix cell: req/s with the variant (the median of its per-round ratio to all-on, measured
    in the same interleaved rounds) and the CPU per request of the proxy process alone (the
    writer's is left out: no patch touches it), then their medians over the cells, then TTFT.
    """
    fp = results.get("fastpath") or {}
    variants = fp.get("variants") or []
    matrix = [r for r in results.get("matrix") or [] if r.get("fastpath_vs_on")]
    ttft = results.get("ttft") or {}
    if not variants or not (matrix or all(v in ttft for v in variants)):
        return []
    ran = fp.get("targets") or {}
    rounds = max((len(r["agentprobe"]["rounds"]) for r in matrix), default=0)
    lines = [
        "What each patch buys: agentprobe with everything on against the same with one patch off "
        "(`AGENTPROBE_FASTPATH=-name`) or all off, in the same interleaved rounds"
        + (f" ({rounds} per cell)" if matrix else "") + ". Each cell: req/s (change against all on, the median of "
        "per-round ratios) · CPU ms per request of the proxy process alone (change).",
        "",
        "| scenario | conc. | all on | " + " | ".join(_variant_label(v, variants, ran) for v in variants) + " |",
        "|---|--:|--:|" + "--:|" * len(variants),
    ]
    changes: dict[str, list[tuple[float | None, float | None]]] = {v: [] for v in variants}
    for r in matrix:
        on = r["agentprobe"]
        cells = []
        for v in variants:
            off = r[v]
            ratio = r["fastpath_vs_on"][v]["ratio_rps"]
            cpu = _diff(off.get("own_cpu_ms_per_req"), on.get("own_cpu_ms_per_req"))
            changes[v].append((ratio, cpu))
            cells.append(f"{_f(off['rps'], '{:.0f}')} ({_f(None if ratio is None else ratio - 1, '{:+.0%}')}) "
                         f"· {_f(off.get('own_cpu_ms_per_req'), '{:.2f}')} ({_f(cpu, '{:+.2f}')})")
        lines.append(f"| {r['scenario']} | {r['concurrency']} | {_f(on['rps'], '{:.0f}')} "
                     f"· {_f(on.get('own_cpu_ms_per_req'), '{:.2f}')} | " + " | ".join(cells) + " |")
    if len(matrix) > 1:
        cells = []
        for v in variants:
            ratio = _median([c[0] for c in changes[v]])
            cpu = _median([c[1] for c in changes[v]])
            cells.append(f"{_f(None if ratio is None else ratio - 1, '{:+.0%}')} · {_f(cpu, '{:+.2f}')}")
        lines.append("| median of the cells | | | " + " | ".join(cells) + " |")
    if ttft and all(v in ttft for v in variants):
        on = ttft["agentprobe"]
        cells = [f"{ttft[v]['p50_ms']:.2f} ({_f(_diff(ttft[v]['p50_ms'], on['p50_ms']), '{:+.2f}')}) "
                 f"/ {ttft[v]['p99_ms']:.2f}" for v in variants]
        lines.append(f"| TTFT p50 (change) / p99, ms | | {on['p50_ms']:.2f} / {on['p99_ms']:.2f} | "
                     + " | ".join(cells) + " |")
    return lines + [""]


def _variant_label(name: str, variants: list[str], ran: dict) -> str:
    """'agentprobe[-coalesce]' -> '-coalesce', 'agentprobe[off]' -> 'all off'; a patch that took another
    with it (hook_index, which inline_hooks needs) says so: '-hook_index (so -inline_hooks)'."""
    inner = name[name.find("[") + 1:name.rfind("]")] if "[" in name else name
    if inner == "off":
        return "all off"
    patches = [v[v.find("[") + 2:v.rfind("]")] for v in variants if "[-" in v]
    what = (ran.get(name) or {}).get("ran") or ""
    active = set(what.removeprefix("partial: ").split(",")) if what.startswith("partial: ") else set()
    also = [p for p in patches if p != inner[1:] and p not in active] if active else []
    return inner + (f" (so {', '.join('-' + p for p in also)})" if also else "")


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _median(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None
