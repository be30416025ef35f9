"""temperature_drift: sampling settings nobody pinned, or pinned differently in dev and prod."""

from __future__ import annotations

from .base import MADE_BY_AGENTPROBE, Finding, ScanContext, generates, seqs


def implicit_default(ctx: ScanContext) -> list[Finding]:
    where, params = ctx.runs_sql()
    out = []
    groups = ctx.db.execute(
        f"SELECT run_id, model, provider, count(*) FROM calls WHERE {where} AND {generates()}"
        " AND temperature IS NULL GROUP BY run_id, model, provider", params).fetchall()
    for run_id, model, provider, n in groups:
        rows = ctx.cited(f"run_id = ? AND model IS ? AND {generates()} AND temperature IS NULL", [run_id, model])
        out.append(Finding(
            rule="temperature_drift/implicit_default", severity="medium",
            title=f"{n} call(s) to {model} sent no temperature",
            evidence=f"{n} {provider} call(s) to {model} in run {run_id} left temperature unset (calls {seqs(rows)});"
                     f" the provider then samples at its default, 1.0 for most APIs, and the answers vary run to run.",
            fix="Set temperature explicitly on every call (0 for steps that must be repeatable) and keep the value"
                " in the agent's config, not in code defaults.",
            run_id=run_id, calls=ctx.refs(rows), data={"calls": n, "model": model}))
    return out


def env_mismatch(ctx: ScanContext) -> list[Finding]:
    """The same prompt sent at different temperatures in runs with different labels."""
    where, params = ctx.runs_sql("c.run_id", cross=True)
    # Labels are environments only on runs of the agent itself, not on agentprobe's replays and serving.
    scope = (f"FROM calls c JOIN runs r ON r.id = c.run_id WHERE {where} AND {generates('c.api')}"
             f" AND c.prompt_sha256 IS NOT NULL AND r.label IS NOT NULL AND NOT {MADE_BY_AGENTPROBE}")
    # Most prompts are sent under one label only; finding the shared ones first keeps the
    # grouping by (prompt, label), and the rows Python sees, to those: 15 s -> 4 s at 1M calls.
    # Grouped by every column read, with no bare column (PostgreSQL has none): Python then takes each
    # (prompt, label)'s temperatures, and its first call by (seq, run id), the same on both backends.
    rows = ctx.db.execute(
        "SELECT c.prompt_sha256, r.label, c.temperature, min(c.seq), c.run_id, c.model"
        f" {scope} AND c.prompt_sha256 IN"
        f" (SELECT c.prompt_sha256 {scope} GROUP BY c.prompt_sha256 HAVING min(r.label) != max(r.label))"
        " GROUP BY c.prompt_sha256, r.label, c.temperature, c.run_id, c.model", params + params).fetchall()
    by_prompt: dict[str, dict[str, tuple]] = {}
    sent_at: dict[tuple[str, str], set[str]] = {}
    for prompt, label, temperature, seq, run_id, model in sorted(
            rows, key=lambda r: (r[0], r[1], r[3], r[4], r[5] or "")):
        sent_at.setdefault((prompt, label), set()).add("default" if temperature is None else str(float(temperature)))
        by_prompt.setdefault(prompt, {}).setdefault(label, (None, seq, run_id, model, prompt))
    out = []
    mismatched = {}
    for prompt, labels in by_prompt.items():
        temps = {label: ",".join(sorted(sent_at[(prompt, label)])) for label in labels}
        if len(labels) > 1 and len(set(temps.values())) > 1:
            key = tuple(sorted(temps.items()))
            mismatched.setdefault(key, []).append(labels)
    # A cross-run finding belongs to the runs it compares: keep the prompts a scanned run sent.
    involved = _scanned_senders(ctx, [p for groups in mismatched.values() for labels in groups
                                      for p in [next(iter(labels.values()))[4]]])
    for key, all_groups in mismatched.items():
        groups = [g for g in all_groups if next(iter(g.values()))[4] in involved]
        if not groups:
            continue
        described = ", ".join(f"{label}: {t}" for label, t in key)
        refs = [{"run_id": v[2], "seq": v[1], "model": v[3], "call_id": None}
                for labels in groups[:5] for v in labels.values()]
        owner = involved[next(iter(groups[0].values()))[4]]
        out.append(Finding(
            rule="temperature_drift/env_mismatch", severity="high",
            title=f"the same prompts run at different temperatures by environment ({described})",
            evidence=f"{len(groups)} identical prompt(s) were sent at temperature {described};"
                     " outputs that passed in one environment are not what the other one produces.",
            fix="Pin one temperature per step in a shared config and load it in every environment; if a step needs"
                " sampling, give it its own setting and test it at the production value.",
            run_id=owner, calls=refs, data={"temperatures": dict(key), "prompts": len(groups)}))
    return out


def _scanned_senders(ctx: ScanContext, prompts: list[str]) -> dict[str, str]:
    """prompt sha256 -> a scanned run that sent it, for the given prompts."""
    where, params = ctx.runs_sql()
    out: dict[str, str] = {}
    for start in range(0, len(prompts), 500):
        chunk = prompts[start:start + 500]
        marks = ", ".join("?" * len(chunk))
        for run_id, prompt in ctx.db.execute(
                f"SELECT min(run_id), prompt_sha256 FROM calls WHERE {where} AND prompt_sha256 IN ({marks})"
                " GROUP BY prompt_sha256", params + chunk):
            out[prompt] = run_id
    return out


def nondeterministic_output(ctx: ScanContext) -> list[Finding]:
    """Identical requests at temperature 0 that came back different."""
    where, params = ctx.runs_sql(cross=True)
    rows = ctx.db.execute(
        f"SELECT request_sha256, count(DISTINCT output_sha256), count(*), group_concat(run_id || ':' || seq),"
        " min(model) FROM calls"
        f" WHERE {where} AND {generates()} AND temperature = 0 AND output_sha256 IS NOT NULL"
        " AND status < 300 GROUP BY request_sha256 HAVING count(DISTINCT output_sha256) > 1", params).fetchall()
    out = []
    for req, distinct, total, places, model in rows:
        # group_concat's order is the engine's: cite the calls in (run, seq) order.
        sent = sorted((p.split(":")[0], int(p.split(":")[1])) for p in places.split(","))
        refs = [{"run_id": run_id, "seq": seq, "model": model, "call_id": None}
                for run_id, seq in sent[: ctx.thresholds.max_call_refs]]
        out.append(Finding(
            rule="temperature_drift/nondeterministic_output", severity="medium",
            title=f"one request at temperature 0 gave {distinct} different answers",
            evidence=f"request {req[:12]} to {model} was sent {total} times at temperature 0 and produced {distinct}"
                     " distinct outputs.",
            fix="Do not rely on temperature 0 alone for repeatability: send a seed where the API supports it,"
                " compare outputs by meaning rather than bytes, and measure with `agentprobe replay`.",
            calls=refs, data={"distinct_outputs": distinct, "sends": total}))
    return out


CHECKS = [implicit_default, env_mismatch, nondeterministic_output]
