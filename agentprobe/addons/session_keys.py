"""The session addon: removes agentprobe's own headers from every request, and picks each request's run.

It runs before the recorder. The recorder numbers a flow in the run this addon chose
(`flow.metadata["agentprobe.session_run"]`), else in its current run. See capture/sessions.py for
the order keys are tried in and what a run row says about its session.

Per request it only reads headers and dictionaries. The one costly step, finding the local
process behind a connection (a /proc search, a few ms), runs once per client connection, on a
worker thread, before mitmproxy reads the connection's first request.
"""

from __future__ import annotations

import asyncio
import logging

from mitmproxy import connection, http

from ..capture.client_process import ProcessFinder, is_local
from ..capture.sessions import (
    HEADER_PREFIX,
    LABEL_HEADER,
    RUN_HEADER,
    TRACEPARENT,
    SessionPolicy,
    SessionTable,
    clean_name,
    trace_id,
)

log = logging.getLogger("agentprobe.sessions")

_PREFIX = HEADER_PREFIX.encode()
_OURS = b"\n" + _PREFIX
_TRACEPARENT_NAME = TRACEPARENT.encode()
_TRACEPARENT = b"\n" + _TRACEPARENT_NAME + b"\n"
_RUN = RUN_HEADER.encode()
_LABEL = LABEL_HEADER.encode()
REAP_EVERY_S = 1.0


class SessionKeys:
    def __init__(self, table: SessionTable | None = None, policy: SessionPolicy | None = None, *,
                 finder: ProcessFinder | None = None) -> None:
        """Without a table, it only removes the headers (`trace`, the pytest plugin: one run, chosen elsewhere)."""
        self.table = table
        self.policy = policy
        self.order = policy.order if (table is not None and policy is not None) else ()
        self.by_process = "process" in self.order
        self.finder = finder or (ProcessFinder() if self.by_process else None)
        self._clients: dict[str, object] = {}  # client connection id -> its ClientProcess
        self._reaper: asyncio.Task | None = None
        self.stripped = 0

    # -- the connection: who is on the other end --------------------------------------------------
    def client_connected(self, client: connection.Client):
        if not self.by_process or not client.peername:
            return None
        local = client.sockname[0] if client.sockname else None
        if not is_local(client.peername[0], local):
            return None  # another host: keyed by its address
        return self._find_process(client)  # awaited by mitmproxy before the connection is read

    async def _find_process(self, client: connection.Client) -> None:
        try:
            found = await asyncio.get_running_loop().run_in_executor(
                None, self.finder.find, tuple(client.peername[:2]), tuple(client.sockname[:2]))
        except Exception:  # noqa: BLE001 - no process found: the address keys it instead
            log.debug("could not find the process of %s", client.peername, exc_info=True)
            return
        if found is not None:
            self._clients[client.id] = found

    def client_disconnected(self, client: connection.Client) -> None:
        if self._clients:
            self._clients.pop(client.id, None)

    # -- each request -------------------------------------------------------------------------------
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.metadata.get("agentprobe.internal"):  # the stdio wrapper's notice, for the proxy itself
            return
        headers = flow.request.headers
        fields = headers.fields
        # One lower-cased string of every header name says which of ours are there: a few C calls,
        # where a lookup by name in mitmproxy's headers walks them in Python (measured: 5x the cost).
        names = b"\n" + b"\n".join([k for k, _ in fields]).lower() + b"\n"
        name = label = None
        if _OURS in names:
            # Ours, never the provider's: removed whether or not they are obeyed.
            for k, v in fields:
                lower = k.lower()
                if lower == _RUN:
                    name = v.decode("utf-8", "replace")
                elif lower == _LABEL:
                    label = v.decode("utf-8", "replace")
            headers.fields = tuple((k, v) for k, v in fields if k[:13].lower() != _PREFIX)
            self.stripped += 1
        if not self.order:
            return
        key = None
        for kind in self.order:
            if kind == "header":
                # Keyed by the name as sent; it is cleaned once, for the run row (not on every request).
                if name and not name.isspace():
                    key = ("header", name)
                    break
            elif kind == "traceparent":
                trace = trace_id(_value(fields, _TRACEPARENT_NAME)) if _TRACEPARENT in names else None
                if trace:
                    key = ("traceparent", trace)
                    break
            elif kind == "process":
                client = self._clients.get(flow.client_conn.id)
                if client is not None:
                    key = ("process", *client.key)
                    break
            elif kind == "address":
                if flow.client_conn.peername:
                    key = ("address", _address(flow.client_conn.peername[0]))
                    break
            else:
                key = ("recorder",)
                break
        if key is None:
            return  # not what the chosen --runs-by keys on: the recorder's own run
        client = self._clients.get(flow.client_conn.id) if self._clients else None
        flow.metadata["agentprobe.session_run"] = self.table.state_for(
            key, lambda: self._describe(key, flow, client, label), client if key[0] == "process" else None)

    def _describe(self, key: tuple, flow: http.HTTPFlow, client, label: str | None) -> dict:
        """The session fields of a new run's row."""
        peer = flow.client_conn.peername
        row = {"session_key_by": key[0], "client_address": _address(peer[0]) if peer else None}
        if client is not None:
            row["client_pid"], row["client_command"] = client.pid, client.command
        if key[0] == "header":
            row["session"] = clean_name(key[1])
            label = clean_name(label)
            if label:
                row["label"] = label
        elif key[0] == "traceparent":
            row["trace_id"] = key[1]
        return row

    # -- ending quiet sessions ----------------------------------------------------------------------
    def running(self) -> None:
        if self.table is not None:
            self._reaper = asyncio.get_running_loop().create_task(self._reap())

    async def _reap(self) -> None:
        every = REAP_EVERY_S if self.table.idle_s is None else min(REAP_EVERY_S, self.table.idle_s / 4)
        while True:
            await asyncio.sleep(every)
            try:
                self.table.reap()
            except Exception:  # noqa: BLE001 - a failed sweep is tried again at the next one
                log.exception("agentprobe could not end quiet sessions")

    def done(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None


def _value(fields: tuple, name: bytes) -> str | None:
    """The first value of header `name` (lower case), straight from the raw fields."""
    for k, v in fields:
        if len(k) == len(name) and k.lower() == name:
            return v.decode("latin-1")
    return None


def _address(ip: str) -> str:
    """An IPv4 client of a dual-stack listener reads as its IPv4 address."""
    return ip[7:] if ip.startswith("::ffff:") and "." in ip else ip
