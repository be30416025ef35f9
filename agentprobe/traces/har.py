"""HAR 1.2 out, for any HTTP tool; HAR in, so captures from browsers or other proxies can be scanned.

Export carries only what is already in the database (allow-listed headers, redacted bodies).
Import replays each entry through the same row builder the proxy uses, so every column is
filled, and every credential scrubbed, exactly as if the calls had gone through agentprobe.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import json
import pickle
import sqlite3
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import sqlite_utils

from .. import __version__
from ..capture.exchange import Capture, from_wire, to_wire
from ..capture.rows import RowBuilder
from ..providers import detect
from ..store.queries import resolve_run
from ..util.clock import iso, new_id, now_iso
from . import TraceError

BATCH = 500
STATUS_TEXT = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests",
               500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


def _headers(text: str | None) -> list[dict]:
    try:
        pairs = json.loads(text or "{}")
    except ValueError:
        return []
    return [{"name": k, "value": str(v)} for k, v in pairs.items()]


def _content(db, body_id: str | None) -> tuple[str | None, str | None, int]:
    """(text, encoding, size) of a stored body; binary content is base64, as HAR allows."""
    if not body_id:
        return None, None, 0
    row = db.execute("SELECT content, size FROM bodies WHERE id = ?", [body_id]).fetchone()
    if not row:
        return None, None, 0
    content = row[0].encode() if isinstance(row[0], str) else (row[0] or b"")
    try:
        return content.decode("utf-8"), None, row[1] or len(content)
    except UnicodeDecodeError:
        return base64.b64encode(content).decode(), "base64", row[1] or len(content)


def har_dict(db: sqlite_utils.Database, run_ref: str) -> dict:
    run_id = resolve_run(db, run_ref)
    run = next(db.query("SELECT * FROM runs WHERE id = ?", [run_id]))
    entries = []
    for c in db.query("SELECT * FROM calls WHERE run_id = ? ORDER BY seq", [run_id]):
        port = c["port"]
        default = {"http": 80, "https": 443}.get(c["scheme"] or "https")
        authority = c["host"] + (f":{port}" if port and port != default else "")
        url = f"{c['scheme'] or 'https'}://{authority}{c['path'] or '/'}"
        req_headers = _headers(c["request_headers"])
        resp_headers = _headers(c["response_headers"])
        req_text, _, req_size = _content(db, c["request_body"])
        resp_text, resp_enc, resp_size = _content(db, c["response_body"])
        latency = c["latency_ms"] or 0
        wait = c["ttft_ms"] if c["ttft_ms"] is not None else latency
        request = {"method": c["method"] or "POST", "url": url, "httpVersion": "HTTP/1.1", "cookies": [],
                   "headers": req_headers, "headersSize": -1, "bodySize": req_size,
                   "queryString": [{"name": k, "value": v} for k, v in parse_qsl(urlsplit(url).query)]}
        if req_text is not None:
            ctype = next((h["value"] for h in req_headers if h["name"].lower() == "content-type"), "application/json")
            request["postData"] = {"mimeType": ctype, "text": req_text}
        ctype = next((h["value"] for h in resp_headers if h["name"].lower() == "content-type"), "")
        content = {"size": resp_size, "mimeType": ctype}
        if resp_text is not None:
            content["text"] = resp_text
            if resp_enc:
                content["encoding"] = resp_enc
        status = c["status"] or 0  # HAR's way of saying "no response"
        entries.append({
            "pageref": run_id,
            "startedDateTime": c["started_at"],
            "time": latency,
            "request": request,
            "response": {"status": status, "statusText": STATUS_TEXT.get(status, ""), "httpVersion": "HTTP/1.1",
                         "cookies": [], "headers": resp_headers, "content": content, "redirectURL": "",
                         "headersSize": -1, "bodySize": resp_size, **({"_error": c["error_type"]} if c["error_type"]
                                                                       else {})},
            "cache": {},
            "timings": {"send": 0, "wait": round(wait, 3), "receive": round(max(latency - wait, 0), 3)},
            "_agentprobe": {"call_id": c["id"], "seq": c["seq"], "completion_seq": c["completion_seq"]},
        })
    return {"log": {"version": "1.2", "creator": {"name": "agentprobe", "version": __version__},
                    "pages": [{"id": run_id, "title": f"agentprobe run {run_id}" + (f" [{run['label']}]"
                                                                                   if run["label"] else ""),
                               "startedDateTime": run["started_at"], "pageTimings": {}}],
                    "entries": entries}}


@functools.lru_cache(maxsize=1)
def _entry_validator():
    import jsonschema

    text = resources.files("agentprobe.schemas").joinpath("har_entry.schema.json").read_text()
    return jsonschema.Draft202012Validator(json.loads(text))


def check_entry(entry, i: int, source) -> None:
    validator = _entry_validator()
    if validator.is_valid(entry):
        return
    error = min(validator.iter_errors(entry), key=lambda e: list(map(str, e.absolute_path)))
    field = "/".join(map(str, error.absolute_path))
    raise TraceError(f"{source}: HAR entry {i}: " + (f"field {field}: " if field else "") + error.message)


def _timestamp(value, i: int, source) -> float:
    try:
        stamp = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=dt.UTC)
        ts = stamp.timestamp()
        dt.datetime.fromtimestamp(ts + 1e7, dt.UTC)  # room for the longest call after it
        return ts
    except (ValueError, OverflowError, OSError):
        raise TraceError(f"{source}: HAR entry {i} has an unreadable startedDateTime: {str(value)[:64]!r}") from None


def entry_capture(i: int, e: dict, source) -> Capture:
    """One HAR entry (checked against har_entry.schema.json) as the Capture the proxy would have made;
    seq and completion_seq are set by the caller, which sees all entries."""
    check_entry(e, i, source)
    req, resp = e["request"], e.get("response") or {}
    start = _timestamp(e["startedDateTime"], i, source)
    try:
        parts = urlsplit(req.get("url") or "")
        port = parts.port
        host = parts.hostname or ""
    except ValueError as err:
        raise TraceError(f"{source}: HAR entry {i}: field request/url: {err}") from None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    body = ((req.get("postData") or {}).get("text") or "").encode() or None
    content = resp.get("content") or {}
    text = content.get("text")
    resp_body = None
    if text is not None:
        if content.get("encoding") == "base64":
            try:
                resp_body = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise TraceError(f"{source}: HAR entry {i}: field response/content/text: not valid base64") from None
        else:
            resp_body = text.encode()
    headers = [(h["name"], h["value"]) for h in req.get("headers") or []]
    resp_headers = [(h["name"], h["value"]) for h in resp.get("headers") or []]
    method = req.get("method") or "GET"
    dialect = detect(method, host, path, body)
    status = resp.get("status")
    status = status if status and status > 0 else None  # HAR says 0 (or -1) for "no response"
    wait = (e.get("timings") or {}).get("wait")
    cap = Capture(seq=0, completion_seq=0, started_at=start, ended_at=start + float(e.get("time") or 0) / 1000,
                  method=method, scheme=parts.scheme or "https", host=host,
                  port=port or (443 if parts.scheme != "http" else 80), path=path, request_headers=headers,
                  request_body=body if dialect else None, dialect=dialect,
                  first_byte_at=start + wait / 1000 if isinstance(wait, (int, float)) and wait >= 0 else None,
                  status=status, response_headers=resp_headers, response_body=resp_body)
    # An answer the agent abandoned, or one cut after its status, has both a status and an error.
    error = resp.get("_error")
    if error == "client_disconnected":
        cap.client_disconnected, cap.error = True, "client disconnected"
    elif status is None or error:
        cap.error = error or "no response"
    mime = content.get("mimeType") or ""
    if dialect is not None and (mime.startswith("text/event-stream") or ":streamGenerateContent" in path):
        cap.streamed = True
        cap.stream_deferred = True
    return cap


def load_har(conn: sqlite3.Connection, f, source: Path, *, label: str | None = None) -> str:
    """A new run holding the HAR's calls, built by the proxy's own row builder, inserted in the
    caller's transaction (never through the writer's queue, which drops what does not fit).

    Entries are read one at a time; each becomes a Capture kept in a temporary table, so that the
    calls can be numbered in dispatch order and completion order (a HAR lists them in any order)
    with memory that does not grow with the file.
    """
    from ..store.writer import insert_rows
    from .stream import items

    conn.execute("CREATE TEMP TABLE IF NOT EXISTS har_staging"
                 " (i INTEGER PRIMARY KEY, started REAL, ended REAL, cap BLOB)")
    conn.execute("DELETE FROM temp.har_staging")
    staged = []
    for i, entry in enumerate(items(f, source, "log.entries.item", "HAR entry")):
        if not isinstance(entry, dict):
            raise TraceError(f"{source}: HAR entry {i} is not an object")
        cap = entry_capture(i, entry, source)
        staged.append((i, cap.started_at, cap.ended_at, pickle.dumps(to_wire(cap), pickle.HIGHEST_PROTOCOL)))
        if len(staged) >= BATCH:
            conn.executemany("INSERT INTO temp.har_staging VALUES (?, ?, ?, ?)", staged)
            staged = []
    conn.executemany("INSERT INTO temp.har_staging VALUES (?, ?, ?, ?)", staged)

    run_id = new_id()
    started, ended = conn.execute("SELECT min(started), max(ended) FROM temp.har_staging").fetchone()
    conn.execute("INSERT INTO runs (id, started_at, ended_at, label, command, status, calls_lost, mode,"
                 " agentprobe_version) VALUES (?, ?, ?, ?, ?, 'completed', 0, 'import', ?)",
                 [run_id, iso(started) if started is not None else now_iso(),
                  iso(ended) if ended is not None else now_iso(), label or "har",
                  f"agentprobe import {Path(source).name}", __version__])
    builder = RowBuilder(run_id)
    built = []
    # Dispatch order by start time (file order breaks ties); completion order by end time, as the
    # proxy would have seen them finish.
    ordered = conn.execute(
        "SELECT cap, row_number() OVER (ORDER BY started, i), row_number() OVER (ORDER BY ended, i)"
        " FROM temp.har_staging ORDER BY started, i")
    for blob, seq, done in ordered:
        cap = from_wire(pickle.loads(blob))
        cap.seq, cap.completion_seq = seq, done
        built.append(builder.build(cap))
        if len(built) >= BATCH:
            insert_rows(conn, built)
            built = []
    insert_rows(conn, built)
    conn.execute("DELETE FROM temp.har_staging")
    return run_id
