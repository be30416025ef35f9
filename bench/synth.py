"""Synthetic recorded calls, written straight into an agentprobe database.

Used by the benchmark to time the read side (`calls --json`, `scan`) on runs far
larger than anyone would record by hand. The rows look like what the recorder
writes: several conversations with growing turns, a mix of providers, models,
streams, temperatures, some 429s with retries, a few truncated answers, usage
and hashes; the values repeat the way a real agent's do (same system prompt,
same tools) so indexes and GROUP BYs see realistic cardinalities.

    from synth import make_db
    run_ids = make_db(Path("big.db"), calls=1_000_000, runs=2)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
from pathlib import Path

from ulid import ULID

from agentprobe import __version__
from agentprobe.store.db import open_db

MODELS = [
    ("openai", "openai.chat", "gpt-4o-mini", "/v1/chat/completions", "api.openai.com"),
    ("openai", "openai.responses", "gpt-4.1", "/v1/responses", "api.openai.com"),
    ("anthropic", "anthropic.messages", "claude-sonnet-4-6", "/v1/messages", "api.anthropic.com"),
    ("gemini", "gemini", "gemini-2.5-flash", "/v1beta/models/gemini-2.5-flash:generateContent",
     "generativelanguage.googleapis.com"),
]
REQUEST_HEADERS = json.dumps([["content-type", "application/json"], ["user-agent", "OpenAI/Python 2.8.1"],
                              ["x-stainless-retry-count", "0"]])
RESPONSE_HEADERS = json.dumps([["content-type", "application/json"], ["x-request-id", "req_0123456789abcdef"],
                               ["x-ratelimit-remaining-requests", "9999"]])


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


def calls_for_run(run_id: str, n: int, start: float, rng: random.Random):
    """Yield `n` call rows (dicts) for one run, in dispatch order."""
    system_prompts = [_sha(f"system prompt {k}") for k in range(3)]
    tools = _sha("tools v1")
    conversation = None
    turn = 0
    t = start
    for seq in range(1, n + 1):
        # Mostly one model, as an agent is; one call in ten goes elsewhere.
        provider, api, model, path, host = MODELS[(seq // 10) % len(MODELS) if seq % 10 == 0 else 0]
        if turn == 0 or turn >= rng.randint(3, 20):
            conversation, turn = str(ULID()), 0
        turn += 1
        stream = int(rng.random() < 0.5)
        status = 200
        error_type = None
        finish = "stop"
        roll = rng.random()
        if roll < 0.01:
            status, error_type, finish = 429, "http_429", "error"
        elif roll < 0.015:
            status, error_type, finish = 500, "http_500", "error"
        elif roll < 0.03:
            finish = "length"
        elif roll < 0.2:
            finish = "tool_calls"
        latency = rng.lognormvariate(6.5, 0.6)  # ~700 ms median
        ttft = latency * rng.uniform(0.05, 0.3) if stream else None
        t += rng.uniform(0.05, 2.0)
        input_tokens = 800 + 350 * turn + rng.randint(0, 200)
        output_tokens = rng.randint(20, 800) if status == 200 else None
        yield {
            "id": str(ULID()),
            "run_id": run_id,
            "seq": seq,
            "completion_seq": seq,
            "started_at": _iso(t),
            "first_byte_at": _iso(t + (ttft or latency) / 1000),
            "ended_at": _iso(t + latency / 1000),
            "latency_ms": round(latency, 3),
            "ttft_ms": None if ttft is None else round(ttft, 3),
            "method": "POST",
            "scheme": "https",
            "host": host,
            "port": 443,
            "path": path,
            "provider": provider,
            "api": api,
            "model": model,
            "response_model": model + "-2025-01-01" if status == 200 else None,
            "response_id": f"resp_{seq}" if status == 200 else None,
            "stream": stream,
            "include_usage": stream if provider == "openai" else None,
            "temperature": rng.choice([None, 0.0, 0.2, 0.7, 1.0]),
            "top_p": None,
            "max_tokens": rng.choice([None, 1024, 4096]),
            "seed": None,
            "parallel_tool_calls": None,
            "status": status,
            "error_type": error_type,
            "error_message": "Rate limit reached" if status == 429 else ("server error" if status == 500 else None),
            "attempt": 1,
            "retry_of": None,
            "conversation_id": conversation,
            "turn": turn,
            "message_count": 1 + 2 * turn,
            "system_prompt_sha256": system_prompts[(seq // 50_000) % 3],
            "prompt_sha256": _sha(f"{conversation}:{turn}"),
            "tools_sha256": tools,
            "request_sha256": _sha(f"req:{run_id}:{seq}"),
            "output_sha256": _sha(f"out:{run_id}:{seq}") if status == 200 else None,
            "input_tokens": input_tokens if status == 200 else None,
            "output_tokens": output_tokens,
            "cached_input_tokens": 0 if status == 200 else None,
            "reasoning_tokens": 0 if status == 200 else None,
            "usage_source": "provider" if status == 200 else None,
            "counted_input_tokens": input_tokens + rng.randint(-5, 5),
            "tokenizer": "cl100k_base~o200k_base",
            "finish_reason": finish,
            "raw_finish_reason": finish,
            "stream_complete": 1 if stream else None,
            "tool_calls": json.dumps([{"id": "call_1", "name": "search", "arguments": "{}"}])
            if finish == "tool_calls" else None,
            "tool_result_ids": None,
            "retry_after_s": 1.0 if status == 429 else None,
            "ratelimit": None,
            "request_headers": REQUEST_HEADERS,
            "response_headers": RESPONSE_HEADERS,
            "request_body": None,
            "response_body": None,
            "parse_error": None,
        }
        t += latency / 1000


def make_db(path: Path, calls: int, runs: int = 1, seed: int = 8, batch: int = 20_000) -> list[str]:
    """Create `path` (must not exist) holding `runs` runs sharing `calls` calls; return the run ids."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(path)
    db = open_db(path, create=True)
    conn = db.conn
    rng = random.Random(seed)
    conn.execute("PRAGMA synchronous = OFF")
    run_ids = []
    start = dt.datetime(2025, 6, 1, tzinfo=dt.UTC).timestamp()
    per_run = [calls // runs + (1 if k < calls % runs else 0) for k in range(runs)]
    for k, n in enumerate(per_run):
        run_id = str(ULID())
        run_ids.append(run_id)
        label = "prod" if k % 2 else "dev"
        conn.execute(
            "INSERT INTO runs (id, started_at, ended_at, label, command, status, calls_lost, mode,"
            " agentprobe_version) VALUES (?, ?, ?, ?, 'python agent.py', 'completed', 0, 'regular', ?)",
            (run_id, _iso(start), _iso(start + n), label, __version__),
        )
        for sha, kind, text in [(_sha(f"system prompt {j}"), "system", f"system prompt {j}") for j in range(3)]:
            conn.execute("INSERT OR IGNORE INTO prompts (sha256, kind, text) VALUES (?, ?, ?)", (sha, kind, text))
        rows = calls_for_run(run_id, n, start, rng)
        cols = None
        sql = None
        while True:
            chunk = [r for _, r in zip(range(batch), rows)]
            if not chunk:
                break
            if cols is None:
                cols = list(chunk[0])
                sql = f"INSERT INTO calls ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
            conn.execute("BEGIN")
            conn.executemany(sql, [tuple(r[c] for c in cols) for r in chunk])
            conn.execute("COMMIT")
        start += n
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return run_ids
