"""Sessions: a long-running recorder splits its traffic into one run per agent session.

How a request finds its session, in this order (`auto`), or by one of them alone (`--runs-by`):

- header: the client names its run, `X-Agentprobe-Run: NAME` (and `X-Agentprobe-Label: LABEL`);
- traceparent: the W3C trace context the agent already sends, one run per trace id;
- process: the local process that opened the connection (capture/client_process.py);
- address: the client's IP address;
- recorder: the recorder's own run, as a recorder without sessions records everything.

A run of a chosen kind is begun on the writer the first time its key is seen (the pytest plugin's
`begin_run` segments: one row each, their own seq numbering and conversation linking) and ended
when it has been quiet for the idle time, when its process has exited, or when the recorder
stops. A request that does not carry the key a single `--runs-by` asks for goes to the
recorder's own run.

The X-Agentprobe-* headers are agentprobe's, not the provider's: they are always removed before
the request goes upstream. They are obeyed only when the recorder trusts its clients
(`--trust-session-headers`, the default when it listens on loopback): on a shared gateway, a
client could otherwise file its calls under another team's label.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import redact

RUN_HEADER = "x-agentprobe-run"
LABEL_HEADER = "x-agentprobe-label"
HEADER_PREFIX = "x-agentprobe-"
TRACEPARENT = "traceparent"

KEY_BY = ("header", "traceparent", "process", "address", "recorder")
RUNS_BY = (*KEY_BY, "auto")
NAME_LIMIT = 200  # characters of a session name or label kept

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?")
_UNIT_S = {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600, "d": 86400}


class SessionError(ValueError):
    """A session setting that cannot be used (one line for the user)."""


def parse_duration(text: str) -> float | None:
    """`10m`, `30s`, `1h`, `90` (seconds), `0`/`off` (None: never) -> seconds."""
    value = text.strip().lower()
    if value in ("0", "off", "none", "never"):
        return None
    m = _DURATION.fullmatch(value)
    if not m or float(m.group(1)) <= 0:
        raise SessionError(f"--run-idle {text!r} is not a duration: give e.g. 10m, 30s, 1h, or off")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def trace_id(traceparent: str | None) -> str | None:
    """The trace id of a W3C traceparent header, or None when it is not a valid one."""
    if not traceparent:
        return None
    m = _TRACEPARENT.fullmatch(traceparent.strip().lower())
    if not m:
        return None
    version, trace, parent, _flags, rest = m.groups()
    # Version ff is invalid; version 00 has nothing after the flags; all-zero ids are invalid.
    if version == "ff" or (version == "00" and rest) or trace == "0" * 32 or parent == "0" * 16:
        return None
    return trace


def clean_name(value: str | None) -> str | None:
    """A client-given session name or label as it may be stored: printable, bounded, no key in it."""
    if value is None:
        return None
    text = "".join(ch for ch in value if ch.isprintable()).strip()[:NAME_LIMIT]
    return redact.scrub_command(text) or None


@dataclass(frozen=True)
class SessionPolicy:
    runs_by: str = "auto"
    idle_s: float | None = None  # end a run quiet this long (None: only when its process exits, or at stop)
    trust_headers: bool = True

    def __post_init__(self) -> None:
        if self.runs_by not in RUNS_BY:
            raise SessionError(f"--runs-by {self.runs_by!r}: choose one of {', '.join(RUNS_BY)}")
        if self.runs_by == "header" and not self.trust_headers:
            raise SessionError("--runs-by header needs --trust-session-headers: the headers are ignored without it")

    @property
    def order(self) -> tuple[str, ...]:
        """The kinds of key tried, first to last (the recorder's own run comes after them all)."""
        if self.runs_by == "auto":
            kinds = KEY_BY[:-1]
            return kinds if self.trust_headers else kinds[1:]
        return (self.runs_by,)

    @property
    def splits(self) -> bool:
        """Does this policy make runs of its own (else every call goes to the recorder's run, as before)?"""
        return self.runs_by != "recorder" or self.idle_s is not None


@dataclass
class Session:
    """One live session run: its key, its run's counters (the recorder's RunState) and its row."""

    key: tuple
    state: object  # addons.recorder.RunState
    row: dict
    client: object | None = None  # the ClientProcess of a session keyed by process
    last_seen: float = field(default_factory=time.monotonic)


class SessionTable:
    """The live sessions, by key. Used on the proxy's event loop only (no lock), and after it stopped.

    begin(row) starts a run on the writer and returns its RunState; end(state, status) ends it.
    """

    def __init__(self, begin: Callable[[dict], object], end: Callable[[object, str], None], *,
                 idle_s: float | None = None, alive: Callable[[object], bool] | None = None) -> None:
        self.begin = begin
        self.end = end
        self.idle_s = idle_s
        self.alive = alive  # is a session's client process still running?
        self.live: dict[tuple, Session] = {}
        self.begun = 0
        self.ended = 0

    def state_for(self, key: tuple, describe: Callable[[], dict], client: object | None = None):
        """The RunState for key, beginning its run on first sight. `describe` makes the run row's session fields."""
        session = self.live.get(key)
        if session is None:
            row = describe()
            session = self.live[key] = Session(key, self.begin(row), row, client)
            self.begun += 1
        session.last_seen = time.monotonic()
        return session.state

    def reap(self, now: float | None = None) -> int:
        """End sessions that are over: quiet past the idle time, or whose process has exited. Calls
        still in flight keep a session alive. Returns how many ended."""
        now = time.monotonic() if now is None else now
        over = []
        for key, session in self.live.items():
            if session.state.in_flight > 0:
                session.last_seen = now  # busy is not quiet
                continue
            if self.idle_s is not None and now - session.last_seen >= self.idle_s:
                over.append(key)
            elif session.client is not None and self.alive is not None and not self.alive(session.client):
                over.append(key)
        for key in over:
            self._end(key, "completed")
        return len(over)

    def end_all(self, status: str = "completed") -> None:
        for key in list(self.live):
            self._end(key, status)

    def _end(self, key: tuple, status: str) -> None:
        session = self.live.pop(key)
        self.ended += 1
        self.end(session.state, status)
