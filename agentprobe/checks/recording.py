"""recording: agentprobe's own failures are findings too; a silent gap would make every other rule lie."""

from __future__ import annotations

import json

from .base import Finding, ScanContext

LOCAL_MODEL_PORTS = {8000: "vLLM", 11434: "Ollama", 1234: "LM Studio"}


def calls_lost(ctx: ScanContext) -> list[Finding]:
    where, params = ctx.runs_sql("id")
    out = []
    for run_id, lost in ctx.db.execute(
            f"SELECT id, calls_lost FROM runs WHERE {where} AND calls_lost > 0", params).fetchall():
        out.append(Finding(
            rule="recording/calls_lost", severity="high",
            title=f"{lost} call(s) of run {run_id} could not be recorded",
            evidence=f"the recorder counted {lost} call(s) it could not write (database locked or full, or a"
                     " backlog); findings for this run may be incomplete.",
            fix="Give the database its own disk with free space, avoid holding long write locks on it, and"
                " record again.", run_id=run_id, data={"calls_lost": lost}))
    return out


def bypassed(ctx: ScanContext) -> list[Finding]:
    """Connections of a traced command that went around the proxy: their calls are missing from the run."""
    where, params = ctx.runs_sql("id")
    out = []
    for run_id, n, raw in ctx.db.execute(
            f"SELECT id, bypassed_connections, bypass_detail FROM runs WHERE {where} AND bypassed_connections > 0",
            params).fetchall():
        try:
            detail = json.loads(raw or "{}")
        except ValueError:
            detail = {}
        groups = detail.get("bypasses") or []
        shown = "; ".join(f"{g['connections']} from {g['process']} (pid {g['pid']}) to {_endpoint(g)}"
                          for g in groups[:8])
        more = f" and {len(groups) - 8} more process/address pair(s)" if len(groups) > 8 else ""
        out.append(Finding(
            rule="recording/bypassed", severity="high",
            title=f"{n} connection(s) of run {run_id} bypassed the proxy and were not recorded",
            evidence=f"while the command ran, {n} TCP connection(s) went to a watched port without going through"
                     f" the proxy: {shown or 'no detail recorded'}{more} (ports"
                     f" {', '.join(map(str, detail.get('ports') or []))}, polled every"
                     f" {detail.get('interval_ms', '?')} ms). Every other rule sees only what went through the"
                     " proxy, so this run's findings may be incomplete.",
            fix=_bypass_fix(groups), run_id=run_id,
            data={"bypassed_connections": n, "bypasses": groups}))
    return out


def _endpoint(group: dict) -> str:
    address = group["address"]
    return f"[{address}]:{group['port']}" if ":" in address else f"{address}:{group['port']}"


def _bypass_fix(groups: list[dict]) -> str:
    """How to steer the client that went around the proxy, most specific advice first."""
    steps = []
    if any(g["process"].lower().startswith("node") for g in groups):
        steps.append("Node's built-in fetch (the openai, Anthropic and Vercel AI npm SDKs) ignores HTTPS_PROXY"
                     " before Node 24: set undici's EnvHttpProxyAgent as the global dispatcher in a preload"
                     " (NODE_OPTIONS=--require ...), or use reverse mode below.")
    local = [g for g in groups if g["port"] in LOCAL_MODEL_PORTS or g["address"].startswith("127.")
             or g["address"] == "::1"]
    if local:
        names = sorted({f"{LOCAL_MODEL_PORTS.get(g['port'], 'the server')} on {_endpoint(g)}" for g in local})
        steps.append(f"For {', '.join(names)}: clear NO_PROXY/no_proxy (localhost or 127.0.0.1 there makes clients"
                     " skip the proxy), or record it in reverse mode.")
    steps.append("Make the client honour HTTPS_PROXY and HTTP_PROXY (aiohttp: ClientSession(trust_env=True);"
                 " httpx and requests do by default), or hand it the proxy URL explicitly.")
    upstream = f"http://{_endpoint(local[0])}" if local else "https://api.openai.com"
    steps.append("Or point its SDK base URL at a reverse-mode recorder, which needs no proxy support and no CA:"
                 f" `agentprobe record --upstream {upstream} --port 8080`, then"
                 " OPENAI_BASE_URL=http://127.0.0.1:8080/v1 (ANTHROPIC_BASE_URL likewise).")
    return " ".join(steps)


CHECKS = [calls_lost, bypassed]
