"""Checks of an agent config before anything runs, and of runs against what the config pins."""

from __future__ import annotations

from .base import Finding, ScanContext, generates
from .models import context_window


def static(config: dict, extra_windows: dict[str, int]) -> list[Finding]:
    out = []
    src = config.get("_path", "the config")
    envs = config.get("environments") or {}
    model = config["model"]

    temps = {name: env.get("temperature") for name, env in envs.items()}
    unset = sorted(name for name, t in temps.items() if t is None)
    if not envs or unset:
        where = f"environment(s) {', '.join(unset)}" if envs else "any environment"
        out.append(Finding(
            rule="temperature_drift/implicit_default", severity="medium",
            title=f"{src} does not pin a temperature for {where}",
            evidence=f"with no temperature set, {model} samples at the provider default (1.0 for most APIs).",
            fix="Set temperature for every environment in the config (0 for steps that must be repeatable).",
            data={"environments": unset}))
    pinned = {name: t for name, t in temps.items() if t is not None}
    if len(set(pinned.values())) > 1:
        described = ", ".join(f"{k}={v:g}" for k, v in sorted(pinned.items()))
        out.append(Finding(
            rule="temperature_drift/env_mismatch", severity="high",
            title=f"temperature differs between environments ({described})",
            evidence=f"{src} sets {described}: what passed tests in one environment is sampled differently in"
                     " another.",
            fix="Use one temperature in every environment; if production needs variety, test at that value.",
            data={"temperatures": pinned}))

    window = config.get("context_window") or context_window(model, extra_windows)
    if window is None:
        out.append(Finding(
            rule="context_overflow/unknown_window", severity="low",
            title=f"context window of {model} is unknown",
            evidence=f"{model} is not in the built-in table and {src} sets no context_window.",
            fix='Set "context_window" in the config so growth can be checked against it.', data={"model": model}))

    expected = config.get("expected_output_tokens")
    for name, env in envs.items():
        limit = env.get("max_tokens")
        if limit and expected and limit < expected:
            out.append(Finding(
                rule="token_limit/truncated", severity="high",
                title=f"max_tokens {limit} in {name} is below the expected answer length {expected}",
                evidence=f"answers longer than {limit} tokens will be cut in {name}.",
                fix=f"Raise max_tokens in {name} to at least {expected} and check finish_reason on every call.",
                data={"environment": name, "max_tokens": limit, "expected": expected}))

    prompt = config.get("system_prompt") or {}
    if prompt.get("sha256") and config.get("_system_prompt_file_sha256") and \
            prompt["sha256"] != config["_system_prompt_file_sha256"]:
        out.append(Finding(
            rule="prompt_drift/system_prompt_changed", severity="critical",
            title="the system prompt on disk no longer matches its pinned sha256",
            evidence=f"pinned {prompt['sha256'][:12]}, but the text has sha256"
                     f" {config['_system_prompt_file_sha256'][:12]}.",
            fix="Review the prompt change, run the benchmark on both versions, then update the pinned sha256.",
            data={"pinned": prompt["sha256"], "actual": config["_system_prompt_file_sha256"]}))
    elif not prompt.get("sha256"):
        out.append(Finding(
            rule="prompt_drift/system_prompt_changed", severity="low",
            title="no canonical system prompt hash is pinned",
            evidence=f"{src} has no system_prompt.sha256, so an edited prompt cannot be told from the reviewed one.",
            fix="Pin system_prompt.sha256 (agentprobe prints the hash of each recorded prompt in `calls --json`)."))

    retries = (config.get("retries") or {}).get("max")
    if config.get("halt_on_error") is False or retries == 0:
        out.append(Finding(
            rule="api_latency/swallowed_error", severity="high",
            title="API errors are neither retried nor allowed to stop the agent",
            evidence=f"{src}: halt_on_error={config.get('halt_on_error')}, retries.max={retries}.",
            fix="Retry transient errors with backoff (e.g. max 2) and halt the step when they persist.",
            data={"halt_on_error": config.get("halt_on_error"), "retries": retries}))
    if not (config.get("timeouts") or {}).get("request_s"):
        out.append(Finding(
            rule="api_latency/slow", severity="low", title="no request timeout is set",
            evidence=f"{src} sets no timeouts.request_s; a stalled stream can hang the agent indefinitely.",
            fix="Set a request timeout just above the slowest expected answer."))
    if config.get("parallel_tool_calls") and not config.get("tool_results_reordered_by_index"):
        out.append(Finding(
            rule="race_condition/tool_result_order", severity="medium",
            title="parallel tool calls are on without reordering results",
            evidence=f"{src} enables parallel_tool_calls but does not say results are put back in call order.",
            fix="Sort tool results by their call's index before sending them back, or disable parallel tool calls.",
            data={"parallel_tool_calls": True}))
    return out


def against_runs(ctx: ScanContext) -> list[Finding]:
    """Calls whose parameters differ from what the config pins for the run's environment."""
    config = ctx.config
    if not config:
        return []
    out = []
    where, params = ctx.runs_sql("id")
    envs = config.get("environments") or {}
    for run_id, label in ctx.db.execute(f"SELECT id, label FROM runs WHERE {where}", params).fetchall():
        env_name = ctx.env or label
        env = envs.get(env_name or "")
        if not env:
            continue
        for field in ("temperature", "top_p", "max_tokens", "seed"):
            if env.get(field) is None:
                continue
            rows = list(ctx.db.query(
                f"SELECT id, run_id, seq, model, {field} AS value FROM calls WHERE run_id = ? AND {generates()}"
                f" AND {field} IS NOT ? ORDER BY seq", [run_id, env[field]]))
            if not rows:
                continue
            sent = sorted({str(r["value"]) if r["value"] is not None else "unset" for r in rows})
            out.append(Finding(
                rule="temperature_drift/env_mismatch" if field in ("temperature", "top_p", "seed")
                else "token_limit/truncated",
                severity="high" if field == "temperature" else "medium",
                title=f"{len(rows)} call(s) in run {run_id} sent {field} {', '.join(sent)}; {env_name} pins"
                      f" {env[field]}",
                evidence=f"the config's {env_name} environment sets {field}={env[field]}, but run {run_id} sent"
                         f" {', '.join(sent)} on {len(rows)} call(s).",
                fix=f"Load {field} from the config in the code path that makes these calls.",
                run_id=run_id, calls=ctx.refs(rows), data={"field": field, "pinned": env[field], "sent": sent}))
    return out
