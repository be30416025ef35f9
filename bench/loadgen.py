"""A small, cheap HTTP/1.1 load generator for the benchmark.

The machine the benchmark runs on has two cores shared by the load generator,
the proxy and the fake provider, so every microsecond the client spends is
taken from the thing being measured. A full HTTP client (httpx, aiohttp) costs
several times more CPU per request than this: it writes a prepared request on a
keep-alive connection and reads the response with `Content-Length` or chunked
framing, noting when the headers, the first SSE event and the last byte arrive.
Through a proxy it sends the absolute-form request line, as any client with an
explicit `HTTP_PROXY` does (no environment is read).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from dataclasses import dataclass, field
from itertools import count

perf = time.perf_counter


class HTTPError(Exception):
    pass


@dataclass
class Result:
    status: int
    start: float  # perf_counter when the request was written
    headers_at: float
    first_event_at: float | None  # first complete SSE event (streams only)
    end: float  # last byte of the body read
    body_bytes: int
    body: bytes | None = None  # only when keep_body

    @property
    def latency(self) -> float:
        return self.end - self.start

    @property
    def ttft(self) -> float | None:
        return None if self.first_event_at is None else self.first_event_at - self.start


class Connection:
    """One keep-alive connection to a host (the provider) or to a proxy."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, data: bytes, *, keep_body: bool = False, on_chunk=None) -> Result:
        if self.writer is None:
            await self._open()
        assert self.reader is not None and self.writer is not None
        start = perf()
        self.writer.write(data)
        if len(data) > 65536:
            await self.writer.drain()
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            self.close()
            raise HTTPError(f"connection closed before the response: {e}") from None
        headers_at = perf()
        lines = head.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split(" ", 2)[1])
        except (IndexError, ValueError):
            self.close()
            raise HTTPError(f"bad status line {lines[0]!r}") from None
        headers = {}
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        kept = bytearray() if keep_body else None
        first_event_at = None
        n = 0
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
            n = len(body)
            if kept is not None:
                kept += body
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            tail = b""
            while True:
                size_line = await self.reader.readline()
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while (await self.reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunk = await self.reader.readexactly(size)
                await self.reader.readexactly(2)
                n += size
                if first_event_at is None:
                    # An SSE event is complete at its blank line.
                    if b"\n\n" in tail + chunk:
                        first_event_at = perf()
                    else:
                        tail = (tail + chunk)[-1:]
                if kept is not None:
                    kept += chunk
                if on_chunk is not None:
                    on_chunk(size)
        else:  # read to close
            while True:
                chunk = await self.reader.read(65536)
                if not chunk:
                    break
                n += len(chunk)
                if first_event_at is None and b"\n\n" in chunk:
                    first_event_at = perf()
                if kept is not None:
                    kept += chunk
            headers["connection"] = "close"
        end = perf()
        if headers.get("connection", "").lower() == "close":
            self.close()
        return Result(status, start, headers_at, first_event_at, end, n, bytes(kept) if kept is not None else None)


@dataclass
class Target:
    """Where requests go: straight to the provider, or through a proxy."""

    name: str
    connect: tuple[str, int]  # the socket the client opens
    provider: str  # http://host:port of the provider
    via_proxy: bool
    sent: int = 0  # requests built for this target, to compare with the rows recorded

    def request_target(self, path: str) -> str:
        return self.provider + path if self.via_proxy else path


@dataclass
class Scenario:
    name: str
    stream: bool = False
    response_kb: float | None = None  # fake provider body_kb
    request_kb: float = 0  # filler added to the prompt
    words: int | None = None
    chunk_delay: float = 0.0
    path: str = "/v1/chat/completions"
    extra_fake: str = ""
    _filler: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if self.request_kb:
            word = "context "
            self._filler = word * int(self.request_kb * 1024 / len(word))

    def fake_header(self) -> str:
        parts = []
        if self.response_kb is not None:
            parts.append(f"body_kb={self.response_kb:g}")
        if self.words is not None:
            parts.append(f"words={self.words}")
        if self.chunk_delay:
            parts.append(f"chunk_delay={self.chunk_delay:g}")
        if self.extra_fake:
            parts.append(self.extra_fake)
        return ";".join(parts)

    def build(self, target: Target, n: int, *, path: str | None = None) -> bytes:
        """Request bytes; every request is distinct (n is in the prompt), as an agent's are."""
        payload = {
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "You are the agentprobe benchmark's assistant."},
                {"role": "user", "content": f"Request {n}: summarise the benchmark. {self._filler}"},
            ],
            "temperature": 0,
        }
        if self.stream:
            payload["stream"] = True
            payload["stream_options"] = {"include_usage": True}
        body = json.dumps(payload).encode()
        target.sent += 1
        host = target.provider.split("://", 1)[1]
        lines = [
            f"POST {target.request_target(path or self.path)} HTTP/1.1",
            f"host: {host}",
            "content-type: application/json",
            "accept: text/event-stream" if self.stream else "accept: application/json",
            "authorization: Bearer sk-bench-not-a-real-key",
            f"content-length: {len(body)}",
        ]
        fake = self.fake_header()
        if fake:
            lines.append(f"x-fake: {fake}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


_ids = count(1)


def next_id() -> int:
    return next(_ids)


async def run_load(
    target: Target,
    scenario: Scenario,
    concurrency: int,
    *,
    duration: float,
    warmup: float,
    max_requests: int | None = None,
) -> dict:
    """Closed-loop load: `concurrency` connections each sending back to back.

    Requests that start during `warmup` are not counted; throughput is the
    number of requests completed in the measurement window over its length.
    """
    loop_start = perf()
    measure_from = loop_start + warmup
    stop_at = measure_from + duration
    latencies: list[float] = []
    ttfts: list[float] = []
    errors: list[str] = []
    done_in_window = 0
    completed = 0
    sent = 0

    async def worker() -> None:
        nonlocal done_in_window, completed, sent
        conn = Connection(*target.connect)
        try:
            while perf() < stop_at:
                if max_requests is not None and sent >= max_requests:
                    break
                sent += 1
                data = scenario.build(target, next_id())
                try:
                    r = await conn.request(data)
                except (HTTPError, OSError, asyncio.IncompleteReadError) as e:
                    errors.append(f"{type(e).__name__}: {e}")
                    conn.close()
                    if len(errors) > 20:
                        raise HTTPError(f"{target.name}/{scenario.name}: too many errors, last: {errors[-1]}")
                    continue
                if r.status != 200:
                    errors.append(f"status {r.status}")
                    if len(errors) > 20:
                        raise HTTPError(f"{target.name}/{scenario.name}: too many errors, last: {errors[-1]}")
                    continue
                completed += 1
                if r.start >= measure_from and r.end <= stop_at:
                    done_in_window += 1
                    latencies.append(r.latency)
                    if r.ttft is not None:
                        ttfts.append(r.ttft)
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    window = duration
    return {
        "requests": done_in_window,
        "completed": completed,  # warm-up included, for CPU per request
        "rps": done_in_window / window if window else None,
        "p50_ms": _ms(percentile(latencies, 50)),
        "p99_ms": _ms(percentile(latencies, 99)),
        "ttft_p50_ms": _ms(percentile(ttfts, 50)),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


async def run_count(target: Target, scenario: Scenario, concurrency: int, total: int) -> dict:
    """Send exactly `total` requests over `concurrency` connections (for memory and durability)."""
    remaining = total
    errors: list[str] = []
    ok = 0

    async def worker() -> None:
        nonlocal remaining, ok
        conn = Connection(*target.connect)
        try:
            while remaining > 0:
                remaining -= 1
                try:
                    r = await conn.request(scenario.build(target, next_id()))
                except (HTTPError, OSError, asyncio.IncompleteReadError) as e:
                    errors.append(f"{type(e).__name__}: {e}")
                    conn.close()
                    continue
                if r.status == 200:
                    ok += 1
                else:
                    errors.append(f"status {r.status}")
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"ok": ok, "errors": len(errors), "first_error": errors[0] if errors else None}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)
