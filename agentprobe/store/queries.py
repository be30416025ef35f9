"""Read-side queries shared by the CLI commands and the checks."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import sqlite_utils

from .db import StoreError

_RUN_STATS = """
SELECT runs.*,
  (SELECT count(*) FROM calls WHERE calls.run_id = runs.id) AS calls,
  (SELECT count(*) FROM calls WHERE calls.run_id = runs.id AND calls.error_type IS NOT NULL) AS errors,
  (SELECT coalesce(sum(input_tokens), 0) FROM calls WHERE calls.run_id = runs.id) AS input_tokens,
  (SELECT coalesce(sum(output_tokens), 0) FROM calls WHERE calls.run_id = runs.id) AS output_tokens
FROM runs
"""


def resolve_run(db: sqlite_utils.Database, ref: str | None) -> str:
    """A run reference -> the run id.

    'latest' (or None), a full id, a unique prefix of one, or a unique end of one: findings and
    `calls` cite runs by the last characters of their id (`C5P1YZ#13`), and every reference
    agentprobe prints must be accepted back. A `#SEQ` after it is ignored here (see call_ref).
    """
    if ref is not None:
        ref = ref.strip().split("#", 1)[0]
    if ref in (None, "", "latest"):
        row = db.execute("SELECT id FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        if not row:
            raise StoreError("no runs recorded yet: record one with `agentprobe trace -- CMD`")
        return row[0]
    upper = ref.upper()
    rows = db.execute("SELECT id FROM runs WHERE id = ? OR id LIKE ? LIMIT 2", (ref, upper + "%")).fetchall()
    exact = [r[0] for r in rows if r[0] == ref]
    if exact:
        return exact[0]
    if len(rows) == 1:
        return rows[0][0]
    if not rows:
        rows = db.execute("SELECT id FROM runs WHERE id LIKE ? LIMIT 2", ("%" + upper,)).fetchall()
        if len(rows) == 1:
            return rows[0][0]
    if not rows:
        raise StoreError(f"no run {ref!r} in this database: `agentprobe runs` lists them")
    raise StoreError(f"run reference {ref!r} is ambiguous: give more characters")


def call_ref(db: sqlite_utils.Database, ref: str) -> tuple[str, int]:
    """`RUN#SEQ` (as findings print it; RUN as resolve_run takes it) -> (run id, seq)."""
    run_part, sep, seq = ref.strip().rpartition("#")
    if not sep or not seq.isdigit():
        raise StoreError(f"{ref!r} is not a call reference: give RUN#SEQ, e.g. latest#3 or C5P1YZ#13")
    return resolve_run(db, run_part or "latest"), int(seq)


# A live run whose stamp is this many of its recorder's beats overdue (plus slack for a busy writer
# and clocks a little apart) has no recorder any more.
STALE_AFTER_BEATS = 3
STALE_SLACK_S = 2.0
LIVE_STATUSES = ("running", "degraded")


def liveness(run: dict, now: dt.datetime | None = None) -> str | None:
    """'stale' for a run that says it is recording but whose recorder stopped stamping it, else None.

    Runs written before the stamp existed (no alive_at) cannot be told apart: they keep their status."""
    if run.get("ended_at") or run.get("status") not in LIVE_STATUSES or not run.get("alive_at"):
        return None
    try:
        seen = dt.datetime.fromisoformat(run["alive_at"])
    except (TypeError, ValueError):
        return None
    every = float(run.get("alive_every_s") or 30)
    overdue = ((now or dt.datetime.now(dt.UTC)) - seen).total_seconds()
    return "stale" if overdue > STALE_AFTER_BEATS * every + STALE_SLACK_S else None


def with_liveness(run: dict, now: dt.datetime | None = None) -> dict:
    """The run as listings show it: status `stale` (and the status it was left in) when its recorder is gone."""
    if liveness(run, now) == "stale":
        return {**run, "status": "stale", "left_as": run["status"]}
    return run


def list_runs(db: sqlite_utils.Database, *, limit: int | None = None, label: str | None = None) -> list[dict]:
    sql = _RUN_STATS
    params: list[Any] = []
    if label:
        sql += " WHERE label = ?"
        params.append(label)
    sql += " ORDER BY id DESC"
    if limit:
        sql += " LIMIT ?"
        params.append(limit)
    return [with_liveness({**row, "client": client_of(row)}) for row in db.query(sql, params)]


def client_of(run: dict) -> str | None:
    """Who sent a session's calls, as `runs` shows it: the process (pid and command line), else the address."""
    if run.get("client_pid") is not None:
        return f"{run['client_pid']} {run.get('client_command') or ''}".rstrip()
    return run.get("client_address")


def get_run(db: sqlite_utils.Database, run_id: str) -> dict:
    rows = list(db.query(_RUN_STATS + " WHERE runs.id = ?", [run_id]))
    if not rows:
        raise StoreError(f"no run {run_id!r} in this database: `agentprobe runs` lists them")
    return with_liveness(rows[0])


def iter_calls(db: sqlite_utils.Database, run_id: str) -> Iterator[dict]:
    yield from db.query("SELECT * FROM calls WHERE run_id = ? ORDER BY seq", [run_id])


def body_text(db: sqlite_utils.Database, body_id: str | None) -> str | None:
    if not body_id:
        return None
    row = db.execute("SELECT content FROM bodies WHERE id = ?", [body_id]).fetchone()
    if not row:
        return None
    content = row[0]
    return content.decode("utf-8", "replace") if isinstance(content, bytes) else content


# Failures of the proxy's own connection to the upstream: the agent got a 502 from agentprobe, not
# an answer from its provider.
PROXY_ERRORS = ("upstream_tls_error", "upstream_dns_error", "connection_error", "upstream_error", "timeout")


def unreachable(db: sqlite_utils.Database, run_id: str) -> list[dict]:
    """The upstreams the proxy could not reach in a run: host, port, cause, calls, a fix."""
    marks = ", ".join("?" * len(PROXY_ERRORS))
    out = []
    for host, port, kind, message, n in db.execute(
            f"SELECT host, port, error_type, min(error_message), count(*) FROM calls WHERE run_id = ?"
            f" AND status IS NULL AND error_type IN ({marks}) GROUP BY host, port, error_type ORDER BY min(seq)",
            [run_id, *PROXY_ERRORS]).fetchall():
        out.append({"host": host, "port": port, "error_type": kind, "cause": message, "calls": n,
                    "fix": unreachable_fix(kind, host, port)})
    return out


def unreachable_fix(kind: str, host: str | None, port: int | None) -> str:
    where = f"{host}:{port}" if port else str(host)
    if kind == "upstream_tls_error":
        return (f"give the proxy the CA that signed {where}'s certificate: --upstream-ca CA.pem (or add it to"
                " SSL_CERT_FILE, whose roots the proxy trusts too); --ssl-insecure skips the check")
    if kind == "upstream_dns_error":
        return f"{host} does not resolve from the proxy: check the name, your DNS, or set --upstream-proxy"
    if kind == "connection_error":
        return f"nothing accepts connections at {where}: is the server up, and the port right?"
    return f"the proxy's connection to {where} failed: check the network, or set --upstream-proxy for a company proxy"


def summarize(db: sqlite_utils.Database, run_id: str) -> dict:
    """The numbers `trace` and `record` print when a run ends."""
    run = get_run(db, run_id)
    by_status = {
        str(status if status is not None else "no response"): n
        for status, n in db.execute(
            "SELECT status, count(*) FROM calls WHERE run_id = ? AND (status IS NULL OR status >= 400)"
            " GROUP BY status ORDER BY status",
            [run_id],
        ).fetchall()
    }
    llm = db.execute(
        "SELECT count(*), count(DISTINCT conversation_id), sum(CASE WHEN attempt > 1 THEN 1 ELSE 0 END),"
        " sum(CASE WHEN stream_complete = 0 THEN 1 ELSE 0 END), group_concat(DISTINCT provider),"
        " group_concat(DISTINCT model)"
        " FROM calls WHERE run_id = ? AND provider NOT IN ('unknown', 'mcp')",
        [run_id],
    ).fetchone()
    tools = db.execute(
        "SELECT count(*), sum(mcp_method = 'tools/call'), sum(mcp_method = 'tools/call' AND error_type IS NOT NULL)"
        " FROM calls WHERE run_id = ? AND provider = 'mcp' AND mcp_method IS NOT NULL", [run_id]).fetchone()
    wall = None
    if run["started_at"] and run["ended_at"]:
        import datetime as dt

        wall = round(
            (dt.datetime.fromisoformat(run["ended_at"]) - dt.datetime.fromisoformat(run["started_at"])).total_seconds(),
            3,
        )
    return {
        "run_id": run_id,
        "label": run["label"],
        "status": run["status"],
        "exit_code": run["exit_code"],
        "command": run["command"],
        "calls": run["calls"],
        "llm_calls": llm[0] or 0,
        "mcp_calls": tools[0] or 0,  # MCP requests (streams and notifications aside)
        "tool_calls": tools[1] or 0,  # of them, tools/call
        "tool_errors": tools[2] or 0,  # tools/call that failed (isError, a JSON-RPC error, no answer)
        "conversations": llm[1] or 0,
        "retries": llm[2] or 0,
        "streams_cut": llm[3] or 0,
        "providers": sorted(filter(None, (llm[4] or "").split(","))),
        "models": sorted(filter(None, (llm[5] or "").split(","))),
        "errors": run["errors"],
        "errors_by_status": by_status,
        "unreachable": unreachable(db, run_id),
        "input_tokens": run["input_tokens"],
        "output_tokens": run["output_tokens"],
        "calls_lost": run["calls_lost"],
        "wall_time_s": wall,
        # Connections of the traced command that went around the proxy: None when not checked
        # (not a traced command, or not on Linux); "bypass" says what was watched and who bypassed.
        "bypassed_connections": run.get("bypassed_connections"),
        "bypass": bypass_detail(run),
    }


def bypass_detail(run: dict) -> dict | None:
    """The run's bypass check as `trace` recorded it, or None (a run of `record`, or before m003)."""
    raw = run.get("bypass_detail")
    if not raw:
        return None
    try:
        detail = json.loads(raw)
    except ValueError:
        return None
    return detail if isinstance(detail, dict) else None


def decode_json_columns(row: dict) -> dict:
    out = dict(row)
    for col in ("tool_calls", "tool_result_ids", "ratelimit", "request_headers", "response_headers"):
        if isinstance(out.get(col), str):
            try:
                out[col] = json.loads(out[col])
            except ValueError:
                pass
    return out


def tool_chain(row: dict, seq_of: dict[str, int]) -> str | None:
    """The call's place in model asks -> tool runs -> result returned."""
    if row.get("provider") == "mcp":
        what = " ".join(filter(None, (row.get("mcp_method"), row.get("mcp_name")))) or \
            f"{row.get('mcp_transport') or 'mcp'} stream"
        parts = [what]
        if row.get("tool_call_id"):
            asked = seq_of.get(row.get("asked_by_call_id"))
            parts.append(f"runs {row['tool_call_id']}" + (f" asked in call {asked}" if asked else ""))
        elif row.get("mcp_method") == "tools/call":
            parts.append("asked by no model call")
        if row.get("returned_by_call_id"):
            parts.append(f"result back in call {seq_of.get(row['returned_by_call_id'], '?')}")
        return "; ".join(parts)
    parts = []
    if isinstance(row.get("tool_calls"), list) and row["tool_calls"]:
        parts.append("asks " + ", ".join(f"{c.get('id') or '?'} {c.get('name')}" for c in row["tool_calls"]))
    if isinstance(row.get("tool_result_ids"), list) and row["tool_result_ids"]:
        parts.append("returns " + ", ".join(map(str, row["tool_result_ids"])))
    return "; ".join(parts) or None
