"""HAR 1.2 out, for any HTTP tool; HAR in, so captures from browsers or other proxies can be scanned.

Export carries only what is already in the database (allow-listed headers, redacted bodies).
Import replays each entry through the same row builder the proxy uses, so every column is
filled, and every credential scrubbed, exactly as if the calls had gone through agentprobe.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import sqlite_utils

from .. import __version__
from ..capture.exchange import Capture
from ..capture.rows import RowBuilder
from ..providers import detect
from ..store.db import open_db
from ..store.queries import resolve_run
from ..util.clock import iso, new_id, now_iso
from . import TraceError

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


def _timestamp(value) -> float:
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise TraceError(f"HAR entry has an unreadable startedDateTime: {value!r}") from None


def captures(har: dict) -> list[Capture]:
    entries = har["log"].get("entries")
    if not isinstance(entries, list):
        raise TraceError("HAR file has no log.entries list")
    out = []
    timed = []
    for i, e in enumerate(entries):
        try:
            req, resp = e["request"], e.get("response") or {}
            start = _timestamp(e["startedDateTime"])
            timed.append((start, i, e, req, resp))
        except (KeyError, TypeError):
            raise TraceError(f"HAR entry {i} lacks request or startedDateTime") from None
    # Completion order: by end time, as the proxy would have seen them finish.
    ends = sorted(range(len(timed)), key=lambda j: timed[j][0] + float(timed[j][2].get("time") or 0) / 1000)
    completion = {j: n + 1 for n, j in enumerate(ends)}
    dispatch = sorted(range(len(timed)), key=lambda j: (timed[j][0], timed[j][1]))
    for k, j in enumerate(dispatch):
        start, i, e, req, resp = timed[j]
        parts = urlsplit(req.get("url", ""))
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        body = ((req.get("postData") or {}).get("text") or "").encode() or None
        content = resp.get("content") or {}
        text = content.get("text")
        resp_body = None
        if text is not None:
            resp_body = base64.b64decode(text) if content.get("encoding") == "base64" else text.encode()
        headers = [(h["name"], h["value"]) for h in req.get("headers") or [] if "name" in h]
        resp_headers = [(h["name"], h["value"]) for h in resp.get("headers") or [] if "name" in h]
        method = req.get("method", "GET")
        dialect = detect(method, parts.hostname or "", path, body)
        status = resp.get("status") or None
        wait = (e.get("timings") or {}).get("wait")
        cap = Capture(seq=k + 1, completion_seq=completion[j], started_at=start,
                      ended_at=start + float(e.get("time") or 0) / 1000, method=method, scheme=parts.scheme or "https",
                      host=parts.hostname or "", port=parts.port or (443 if parts.scheme != "http" else 80),
                      path=path, request_headers=headers, request_body=body if dialect else None, dialect=dialect,
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
        out.append(cap)
    return out


def load_har(db_path: Path, har: dict, *, label: str | None = None, source: str = "HAR") -> str:
    """A new run holding the HAR's calls, built by the proxy's own row builder."""
    from ..store.writer import Writer

    caps = captures(har)  # a malformed HAR fails here, before any database is created
    open_db(db_path, create=True).conn.close()  # create and migrate before the writer opens it
    run_id = new_id()
    started = min((c.started_at for c in caps), default=None)

    writer = Writer(Path(db_path),
                    {"id": run_id, "started_at": iso(started) if started else now_iso(), "label": label or "har",
                     "command": f"agentprobe import {source}", "mode": "import",
                     "agentprobe_version": __version__}, RowBuilder(run_id).build)
    writer.start()
    for cap in caps:
        writer.submit(cap)
    ended = max((c.ended_at for c in caps), default=None)
    writer.close(status="completed", ended_at=iso(ended) if ended else now_iso())
    if writer.calls_lost:
        raise TraceError(f"{writer.calls_lost} HAR entries could not be imported: {writer.last_error}")
    return run_id
