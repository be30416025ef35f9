"""`agentprobe replay`: send recorded requests again and measure how much the answers move.

Each recorded LLM request is re-sent, byte for byte as stored (redacted, with
credentials from the environment), N times, through agentprobe's own proxy, so
the replays form a new run linked to the original and every other command
works on them. Each answer is compared with the recorded one token by token;
tool calls are compared by name and arguments, since their ids are random.
"""

from __future__ import annotations

import difflib
import json
import re
import ssl
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

from ..capture import tokens
from ..capture.redact import REDACTED
from ..clients.credentials import KEY_HEADERS, KEY_VARIABLES, auth_header, key_from_env, needs_key
from ..providers import detect, load_json
from ..providers.base import ParsedResponse, ParseError
from ..store.queries import body_text
from ..util.hashing import canonical_json
from ..util.http_headers import retry_after

RETRYABLE = {408, 409, 429, 500, 502, 503, 504, 529}
MAX_ATTEMPTS = 4

# Where each provider's API path begins, so --base-url can replace what comes before it.
_TAILS = {
    "openai": re.compile(r"/(chat/completions|responses)$"),
    "openai_compatible": re.compile(r"/(chat/completions|responses)$"),
    "anthropic": re.compile(r"/v1/messages$"),
    "gemini": re.compile(r"/models/[^/]+$"),
}
_KEPT_HEADERS = ("anthropic-version", "anthropic-beta", "openai-beta", "content-type")


class ReplayInputError(Exception):
    """Bad input for a replay (missing credentials, nothing to replay): one line, exit 2."""


@dataclass
class Options:
    times: int = 3
    threshold: float = 0.99
    base_urls: dict[str, str] = field(default_factory=dict)  # provider (or "*") -> base URL
    headers: dict[str, str] = field(default_factory=dict)
    only_failed: bool = False
    concurrency: int = 1
    timeout: float = 120.0
    model: str | None = None  # send every call to this model instead (scored against the recording all the same)
    settings: dict = field(default_factory=dict)  # request fields to set on every call, e.g. temperature=0


@dataclass
class Item:
    seq: int
    provider: str
    api: str
    model: str | None
    url: str
    headers: dict[str, str]
    body: bytes
    stream: bool
    temperature: float | None
    top_p: float | None
    seed: int | None
    recorded: ParsedResponse
    recorded_status: int | None = None


@dataclass
class Outcome:
    seq: int
    model: str | None
    ratios: list[float]
    finish_changed: bool
    verdict: str
    temperature: float | None
    top_p: float | None
    seed: int | None
    errors: list[str]

    @property
    def score(self) -> float:
        return min(self.ratios) if self.ratios else 0.0


def _target(row: dict, opts: Options) -> str:
    path = urlsplit(row["path"])
    # Credentials were stripped from the stored query; they go back in headers instead.
    query = urlencode([(k, v) for k, v in parse_qsl(path.query, keep_blank_values=True) if v != REDACTED])
    route = path.path + (f"?{query}" if query else "")
    base = (
        opts.base_urls.get(row["provider"])
        or (opts.base_urls.get("openai") if row["provider"] == "openai_compatible" else None)
        or opts.base_urls.get("*")
    )
    if base:
        tail = _TAILS.get(row["provider"])
        m = tail.search(path.path) if tail else None
        suffix = path.path[m.start():] if m else path.path
        return base.rstrip("/") + suffix + (f"?{query}" if query else "")
    default_port = {"https": 443, "http": 80}.get(row["scheme"])
    port = "" if row["port"] in (None, default_port) else f":{row['port']}"
    return f"{row['scheme']}://{row['host']}{port}{route}"


def _credentials(row: dict, url: str, opts: Options) -> dict[str, str]:
    provider = row["provider"]
    if provider not in KEY_HEADERS or any(h.lower() == KEY_HEADERS[provider][0] for h in opts.headers):
        return {}
    key = key_from_env(provider)
    if key:
        return auth_header(provider, key)
    if needs_key(urlsplit(url).hostname):
        raise ReplayInputError(f"set {KEY_VARIABLES[provider]} to replay {provider} calls"
                               f" (or pass --header '{KEY_HEADERS[provider][0]}: ...')")
    return {}  # a local or self-hosted server that needs no key


def _recorded_response(db, row: dict, dialect) -> ParsedResponse:
    text = body_text(db, row["response_body"])
    if text is None:
        return ParsedResponse()
    try:
        if row["stream"]:
            parser = dialect.stream_parser()
            parser.feed(text.encode())
            return parser.result()
        return dialect.parse_response(row["status"] or 200, load_json(text))
    except ParseError:
        return ParsedResponse()


def plan(db, run_id: str, opts: Options) -> list[Item]:
    sql = "SELECT * FROM calls WHERE run_id = ? AND api IS NOT NULL AND request_body IS NOT NULL"
    if opts.only_failed:
        sql += " AND (error_type IS NOT NULL OR status IS NULL OR status >= 400 OR finish_reason = 'length')"
    # An SDK retry is the same request again: replay it once, against its final answer.
    latest: dict[str, dict] = {}
    for row in db.query(sql + " ORDER BY seq", [run_id]):
        key = row["request_sha256"] or row["id"]
        latest[key] = {**row, "seq": latest[key]["seq"]} if key in latest else row
    items = []
    for row in sorted(latest.values(), key=lambda r: r["seq"]):
        body = (body_text(db, row["request_body"]) or "").encode()
        dialect = detect(row["method"], row["host"], row["path"], body)
        if dialect is None or not dialect.GENERATES:
            continue  # an embedding or a token count answers the same to the same input, and costs to ask again
        url = _target(row, opts)
        if opts.model or opts.settings:
            body, url = _overridden(body, url, row["provider"], opts)
        recorded_headers = json.loads(row["request_headers"] or "{}")
        headers = {k: v for k, v in recorded_headers.items() if k in _KEPT_HEADERS}
        headers.setdefault("content-type", "application/json")
        headers.update(_credentials(row, url, opts))
        headers.update(opts.headers)
        items.append(Item(
            seq=row["seq"], provider=row["provider"], api=row["api"], model=opts.model or row["model"], url=url,
            headers=headers, body=body, stream=bool(row["stream"]), temperature=row["temperature"],
            top_p=row["top_p"], seed=row["seed"], recorded=_recorded_response(db, row, dialect),
            recorded_status=row["status"],
        ))
    if not items:
        raise ReplayInputError(f"run {run_id} has no recorded LLM requests to replay"
                               + (" that failed or were cut" if opts.only_failed else ""))
    return items


def _overridden(body: bytes, url: str, provider: str | None, opts: Options) -> tuple[bytes, str]:
    from .overrides import apply_overrides

    try:
        parsed = json.loads(body)
    except ValueError:
        return body, url
    family = "openai" if provider in (None, "openai_compatible") else provider
    parts = urlsplit(url)
    parsed, path = apply_overrides(parsed, family, parts.path, opts.model, opts.settings)
    return json.dumps(parsed, ensure_ascii=False).encode(), parts._replace(path=path).geturl()


def comparable(resp: ParsedResponse) -> str:
    """The answer as text to compare: words, then tool calls by name and arguments (not ids)."""
    calls = []
    for call in resp.tool_calls:
        try:
            args = json.loads(call.get("arguments") or "null")
        except ValueError:
            args = call.get("arguments")
        calls.append({"name": call.get("name"), "arguments": args})
    return resp.output_text + (("\n" + canonical_json(calls)) if calls else "")


def match_ratio(a: str, b: str, model: str | None = None) -> float:
    """Share of tokens the two texts have in common, in order (1.0 = identical)."""
    ta, tb = tokens.tokenize(a, model), tokens.tokenize(b, model)
    if not ta and not tb:
        return 1.0
    matcher = difflib.SequenceMatcher(None, ta, tb, autojunk=False)
    same = sum(block.size for block in matcher.get_matching_blocks())
    return same / max(len(ta), len(tb))


def verdict(score: float, threshold: float) -> str:
    if score >= threshold:
        return "deterministic"
    return "drifting" if score >= 0.5 else "divergent"


class TargetDown(Exception):
    """The replay target failed every attempt of the calls before: not asked again."""


class _Targets:
    """Where replays go, and which of them gave up: a target that answered 5xx (or nothing) to every
    attempt of two calls in a row is down, and the rest of its calls fail at once instead of each
    waiting out its backoff (minutes of silence before, for a proxy that could not reach it)."""

    DOWN_AFTER = 2

    def __init__(self) -> None:
        self.failed_in_a_row: dict[str, int] = {}
        self.last_error: dict[str, str] = {}

    @staticmethod
    def origin(url: str) -> str:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}"

    def check(self, url: str) -> None:
        origin = self.origin(url)
        if self.failed_in_a_row.get(origin, 0) >= self.DOWN_AFTER:
            raise TargetDown(f"{origin} is down ({self.last_error.get(origin)}): not sent")

    def result(self, url: str, failed: bool, why: str | None = None) -> None:
        origin = self.origin(url)
        self.failed_in_a_row[origin] = self.failed_in_a_row.get(origin, 0) + 1 if failed else 0
        if why:
            self.last_error[origin] = why


def _send(client, item: Item) -> tuple[ParsedResponse, int | None]:
    """One replay of one request, waiting out rate limits instead of counting them as answers."""
    import httpx2

    dialect = detect("POST", "", urlsplit(item.url).path, item.body)
    delay = 0.5
    for attempt in range(MAX_ATTEMPTS):
        with client.stream("POST", item.url, content=item.body, headers=item.headers) as r:
            if r.status_code in RETRYABLE and attempt < MAX_ATTEMPTS - 1:
                r.read()
                wait = retry_after(r.headers.get) or delay
                time.sleep(min(wait, 60))
                delay = min(delay * 2, 30)
                continue
            if r.headers.get("content-type", "").startswith("text/event-stream"):
                parser = dialect.stream_parser()
                try:
                    for chunk in r.iter_bytes():
                        parser.feed(chunk)
                except httpx2.HTTPError as e:
                    resp = parser.result()
                    resp.error_type = resp.error_type or f"stream_cut: {e}"
                    return resp, r.status_code
                return parser.result(), r.status_code
            data = r.read()
            try:
                return dialect.parse_response(r.status_code, load_json(data)), r.status_code
            except ParseError as e:
                return ParsedResponse(error_type=f"http_{r.status_code}", error_message=str(e)), r.status_code
    raise AssertionError("unreachable")


def replay(
    items: list[Item],
    opts: Options,
    *,
    proxy_url: str | None = None,
    trust: Path | None = None,
    progress: Callable[[], None] = lambda: None,
) -> list[Outcome]:
    import httpx2

    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(trust)) if trust else True
    client = httpx2.Client(proxy=proxy_url, verify=verify, trust_env=False, timeout=opts.timeout)

    targets = _Targets()

    def one(item: Item) -> Outcome:
        expected = comparable(item.recorded)
        ratios, errors, finish_changed = [], [], False
        for _ in range(opts.times):
            try:
                targets.check(item.url)
                got, status = _send(client, item)
            except TargetDown as e:
                errors.append(str(e))
                progress()
                continue
            except httpx2.HTTPError as e:
                errors.append(f"{type(e).__name__}: {e}")
                targets.result(item.url, True, f"{type(e).__name__}: {e}")
                progress()
                continue
            # A 5xx the recording also got is the call's answer, not a sign the target is down.
            server_failed = status is not None and status >= 500 and status != item.recorded_status
            targets.result(item.url, server_failed, f"HTTP {status}" if server_failed else None)
            if server_failed:
                # Every attempt of this replay failed on the server: more replays would wait the same.
                errors.append(f"HTTP {status} on every attempt")
                progress()
                break
            # A call that failed when recorded and fails the same way now gave the same answer.
            same_failure = bool(got.error_type) and status is not None and status == item.recorded_status
            if got.error_type and not same_failure:
                errors.append(got.error_type + (f": {got.error_message}" if got.error_message else ""))
            ratios.append(1.0 if same_failure else match_ratio(expected, comparable(got), item.model))
            finish_changed |= got.finish_reason != item.recorded.finish_reason
            progress()
        if errors and not ratios:
            verdict_text = "error"  # the replay could not be made: no verdict on determinism
        else:
            verdict_text = verdict(min(ratios) if ratios and not errors else 0.0, opts.threshold)
        return Outcome(item.seq, item.model, ratios, finish_changed, verdict_text,
                       item.temperature, item.top_p, item.seed, errors)

    try:
        with ThreadPoolExecutor(max(1, opts.concurrency)) as pool:
            return list(pool.map(one, items))
    finally:
        client.close()


def explain(outcome: Outcome) -> str:
    """The recorded parameters that account for a call's variation."""
    if outcome.errors:
        return "replays failed: " + outcome.errors[0]
    reasons = []
    if outcome.temperature is None:
        reasons.append("no temperature sent (provider default, often 1.0)")
    elif outcome.temperature > 0:
        reasons.append(f"temperature {outcome.temperature:g}")
    if outcome.top_p is not None and outcome.top_p < 1:
        reasons.append(f"top_p {outcome.top_p:g}")
    if outcome.seed is None:
        reasons.append("no seed")
    if not reasons or (outcome.temperature == 0 and outcome.verdict != "deterministic"):
        reasons.append("varies even at temperature 0 (model or serving nondeterminism)")
    return ", ".join(reasons)


def summarize(outcomes: list[Outcome], opts: Options) -> dict:
    deterministic = [o for o in outcomes if o.verdict == "deterministic"]
    failed = [o for o in outcomes if o.verdict == "error"]
    worst = sorted(outcomes, key=lambda o: o.score)[:5]
    return {
        "calls": len(outcomes),
        "times": opts.times,
        "threshold": opts.threshold,
        "deterministic": len(deterministic),
        "errors": len(failed),  # calls whose replays could not be made (no verdict for them)
        "deterministic_share": round(len(deterministic) / len(outcomes), 4) if outcomes else None,
        "worst": [{"seq": o.seq, "score": round(o.score, 4), "verdict": o.verdict, "why": explain(o)}
                  for o in worst if o.verdict not in ("deterministic", "error")],
        "outcomes": [
            {"seq": o.seq, "model": o.model, "verdict": o.verdict, "score": round(o.score, 4),
             "ratios": [round(r, 4) for r in o.ratios], "finish_reason_changed": o.finish_changed,
             "temperature": o.temperature, "top_p": o.top_p, "seed": o.seed, "errors": o.errors,
             "why": explain(o) if o.verdict != "deterministic" else None}
            for o in outcomes
        ],
    }
