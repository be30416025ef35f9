"""Recorded runs, trace files and HAR files made up in the test, without a proxy or a provider."""

from __future__ import annotations

import json
import time
from pathlib import Path

from agentprobe.capture.exchange import Capture
from agentprobe.providers import detect

CHAT_PATH = "/v1/chat/completions"


def chat_request(i: int, model: str = "gpt-4o-mini") -> bytes:
    return json.dumps({"model": model, "temperature": 0, "max_tokens": 20,
                       "messages": [{"role": "system", "content": "Be terse."},
                                    {"role": "user", "content": f"question {i}"}]}).encode()


def chat_response(i: int) -> bytes:
    return json.dumps({"id": f"chatcmpl-{i}", "object": "chat.completion", "model": "gpt-4o-mini",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": f"answer {i}"},
                                    "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}}).encode()


def chat_capture(i: int, start: float | None = None) -> Capture:
    start = (start or 1_780_000_000.0) + i * 0.5
    body = chat_request(i)
    return Capture(seq=i + 1, completion_seq=i + 1, started_at=start, ended_at=start + 0.2, method="POST",
                   scheme="https", host="api.openai.com", port=443, path=CHAT_PATH,
                   request_headers=[("content-type", "application/json")], request_body=body,
                   dialect=detect("POST", "api.openai.com", CHAT_PATH, body), first_byte_at=start + 0.1, status=200,
                   response_headers=[("content-type", "application/json")], response_body=chat_response(i))


def write_run(db_path: Path, calls: int = 20, *, label: str = "test") -> str:
    """A completed run of `calls` chat calls in the database at db_path, written as the proxy writes them."""
    from agentprobe.capture.rows import RowBuilder
    from agentprobe.store.writer import Writer
    from agentprobe.util.clock import new_id, now_iso

    run_id = new_id()
    writer = Writer(Path(db_path), {"id": run_id, "started_at": now_iso(), "label": label, "command": "synthetic",
                                    "mode": "regular"}, RowBuilder(run_id).build)
    writer.start()
    for i in range(calls):
        writer.submit(chat_capture(i))
    writer.close(status="completed", ended_at=now_iso())
    assert writer.calls_written == calls, writer.last_error
    return run_id


def har_entry(i: int, start: float = 1_780_000_000.0) -> dict:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start + i)) + ".000Z"
    return {
        "startedDateTime": stamp, "time": 200,
        "request": {"method": "POST", "url": f"https://api.openai.com{CHAT_PATH}", "httpVersion": "HTTP/1.1",
                    "cookies": [], "headers": [{"name": "content-type", "value": "application/json"}],
                    "queryString": [], "headersSize": -1, "bodySize": -1,
                    "postData": {"mimeType": "application/json", "text": chat_request(i).decode()}},
        "response": {"status": 200, "statusText": "OK", "httpVersion": "HTTP/1.1", "cookies": [],
                     "headers": [{"name": "content-type", "value": "application/json"}],
                     "content": {"size": -1, "mimeType": "application/json", "text": chat_response(i).decode()},
                     "redirectURL": "", "headersSize": -1, "bodySize": -1},
        "cache": {}, "timings": {"send": 0, "wait": 100, "receive": 100},
    }


def write_har(path: Path, entries: int) -> Path:
    """A HAR 1.2 file of `entries` small chat calls, written entry by entry (never whole in memory)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write('{"log": {"version": "1.2", "creator": {"name": "synthetic", "version": "1"}, "pages": [],'
                ' "entries": [')
        for i in range(entries):
            f.write(("," if i else "") + json.dumps(har_entry(i)))
        f.write("]}}\n")
    return path
