"""Answer LLM calls from a recording, or send them live: the proxy side of cassettes and forks.

The addon matches each LLM request against the recording itself (the serve backend's
Matcher, shared with it) and decides where it goes:
- matched: to the local serve backend, told which recorded call to answer with, so streams
  come back with their recorded chunking;
- not matched, `on_miss="serve"`: to the backend, which answers a provider-shaped 404; the miss
  is kept with the recorded call closest to it (the pytest plugin fails the test with it);
- not matched, `on_miss="live"` (a cassette's new episodes): on to the provider, untouched;
- with `live_from=N` (a fork): calls matching recorded seq 1..N-1 are answered from the
  recording; the first one that does not (seq N, or a request the recording never saw) and
  every one after it go live, to `live` (the recording's upstream, or a base URL), with the
  overrides (`--model`, `--set`) applied to their bodies.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from mitmproxy import http

from ..clients.credentials import KEY_HEADERS, key_from_env
from ..playback.overrides import GEMINI_MODEL as _GEMINI_MODEL
from ..playback.overrides import apply_overrides
from ..playback.serve import MISS_HEADER, SEQ_HEADER, Matcher, Recorded, describe_miss
from ..providers import detect, provider_for

# Where each provider's API path begins, so a base URL can replace what comes before it.
_TAILS = re.compile(r"/(v1(beta)?/)?(chat/completions|responses|messages|embeddings|models/).*$")


@dataclass
class Target:
    scheme: str
    host: str
    port: int
    prefix: str = ""  # a base URL's path, put before the API path

    @classmethod
    def from_url(cls, url: str) -> "Target":
        parts = urlsplit(url if "://" in url else f"https://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))


def _family(provider: str | None) -> str:
    return "openai" if provider in (None, "openai_compatible", "unknown") else provider


def recorded_targets(recorded: list[Recorded]) -> dict[str, Target]:
    """The upstream each provider family's calls went to in the recording (the most common one)."""
    counts: dict[str, Counter] = {}
    for r in recorded:
        if not r.host or not r.scheme:
            continue
        family = _family(r.provider)
        port = r.port or (443 if r.scheme == "https" else 80)
        counts.setdefault(family, Counter())[(r.scheme, r.host, port)] += 1
    return {family: Target(*c.most_common(1)[0][0]) for family, c in counts.items()}


@dataclass
class Playback:
    backend: tuple[str, int]
    matcher: Matcher | None = None  # None: no recording (every LLM call is a miss, or live)
    on_miss: str = "serve"  # "serve" (answer 404 and keep the miss) | "live"
    live_from: int | None = None
    live: Target | dict[str, Target] | None = None  # where live calls go; None: where the agent sent them
    model: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    environ: dict[str, str] | None = None  # keys for live calls (default: os.environ)
    forked: bool = False  # past the fork point: everything goes live
    misses_without_recording: list = field(default_factory=list)  # (path, model) while matcher is None
    no_recording: str | None = None  # what the 404 says when there is no recording at all

    # Not `load`: mitmproxy calls an addon's load() with its option loader.
    def use(self, matcher: Matcher | None) -> None:
        """Answer from another recording from now on (the next test's cassette)."""
        self.matcher = matcher
        self.forked = False
        self.misses_without_recording = []

    def request(self, flow: http.HTTPFlow) -> None:
        req = flow.request
        dialect = detect(req.method, req.host, req.path, req.raw_content)
        if dialect is None:
            return
        matcher = self.matcher
        if self.forked:
            self._live(flow, dialect, note=True)
            return
        hit = None
        if matcher is not None:
            body = req.get_content(strict=False) or b""
            hit = matcher.match(req.method, req.path, list(req.headers.items(multi=True)), body)
        if hit is not None and (self.live_from is None or hit.seq < self.live_from):
            self._to_backend(flow, SEQ_HEADER, str(hit.seq))
            return
        if self.live_from is not None or self.on_miss == "live":
            if hit is not None:
                matcher.release(hit)  # past the fork point: its recorded answer is not used
            elif matcher is not None:
                self._unmiss(matcher)  # not a miss: it goes live
            if self.live_from is not None:
                self.forked = True  # from here on the conversation is the live one
            self._live(flow, dialect, note=False)
            return
        if matcher is None:
            # No recording at all: the miss is the whole call.
            self.misses_without_recording.append((req.path.split("?")[0], _model_of(req)))
            detail = self.no_recording
        else:
            with matcher.lock:
                detail = describe_miss(matcher.served[-1]) if matcher.served else "1"
        self._to_backend(flow, MISS_HEADER, quote(detail or "1", safe=" ,.:;()'=/[]-_"))

    @staticmethod
    def _unmiss(matcher: Matcher) -> None:
        with matcher.lock:
            if matcher.served and matcher.served[-1].how == "unmatched":
                matcher.served[-1].how = "live"
                matcher.served[-1].closest = None

    def _to_backend(self, flow: http.HTTPFlow, header: str, value: str) -> None:
        req = flow.request
        flow.metadata.setdefault("agentprobe.redirected_from", req.pretty_host)
        req.headers[header] = value
        req.scheme, req.host, req.port = "http", self.backend[0], self.backend[1]

    def _live(self, flow: http.HTTPFlow, dialect, *, note: bool) -> None:
        req = flow.request
        family = _family(provider_for(req.host, dialect.name))
        if note and self.matcher is not None:
            self.matcher.note_live(req.path, _model_of(req))
        if self.model or self.settings:
            try:
                body = json.loads(req.get_content(strict=False) or b"null")
            except ValueError:
                body = None
            body, path = apply_overrides(body, family, req.path, self.model, self.settings)
            if body is not None:
                req.content = json.dumps(body, ensure_ascii=False).encode()
            req.path = path
        if isinstance(self.live, dict):
            target = self.live.get(family) or next(iter(self.live.values()), None)
        else:
            target = self.live
        if target is None:
            return  # regular mode: on to where the agent sent it
        path = req.path
        if target.prefix:
            m = _TAILS.search(urlsplit(path).path)
            tail = path[m.start():] if m else path
            path = target.prefix + tail
        req.scheme, req.host, req.port, req.path = target.scheme, target.host, target.port, path
        req.host_header = target.host if target.port in (80, 443) else f"{target.host}:{target.port}"
        key = key_from_env(family, self.environ if self.environ is not None else os.environ)
        if key and family in KEY_HEADERS:
            name, form = KEY_HEADERS[family]
            req.headers[name] = form.format(key)


def _model_of(req: http.Request) -> str | None:
    try:
        body = json.loads(req.get_content(strict=False) or b"null")
    except ValueError:
        return None
    if isinstance(body, dict) and isinstance(body.get("model"), str):
        return body["model"]
    m = _GEMINI_MODEL.search(req.path)
    return m.group(2) if m else None
