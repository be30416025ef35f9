"""One recorded run: the writer process and the proxy thread, started and stopped together."""

from __future__ import annotations

import logging
from pathlib import Path

from .. import __version__
from ..addons.recorder import Recorder, RunState
from ..addons.session_keys import SessionKeys
from ..addons.stdio_sink import StdioSink
from ..proxy import fastpath
from ..proxy.ca import bundle_path
from ..proxy.child_env import child_env
from ..proxy.runner import ProxyConfig, ProxyThread, check_listen
from ..store.db import resolve_path
from ..stdio.sinks import PROXY_ENV, RUN_ENV
from ..store.writer_process import WriterProcess
from ..util.clock import new_id, now_iso
from . import redact
from .client_process import ProcessFinder
from .sessions import SessionPolicy, SessionTable

log = logging.getLogger("agentprobe")


class Recording:
    def __init__(
        self,
        db: str | Path | None,
        proxy: ProxyConfig,
        *,
        label: str | None = None,
        command: str | None = None,
        config_sha256: str | None = None,
        parent_run_id: str | None = None,
        addons: list | None = None,
        otlp_endpoint: str | None = None,
        busy_timeout_ms: int = 5000,
        sessions: "SessionPolicy | None" = None,
    ) -> None:
        """sessions: split the traffic into one run per agent session (`record`); None: one run (and
        the runs begin_run() starts), as `trace` and the pytest plugin record."""
        self.db_path = resolve_path(db)
        self.proxy_config = proxy
        self.run_id = new_id()
        run = {
            "id": self.run_id,
            "started_at": now_iso(),
            # What a user typed can hold a key (`trace -- curl -H "Authorization: Bearer $KEY"`).
            "label": redact.scrub_command(label),
            "command": redact.scrub_command(command),
            "config_sha256": config_sha256,
            "mode": f"reverse:{redact.safe_url(proxy.upstream)}" if proxy.upstream else "regular",
            "parent_run_id": parent_run_id,
            "agentprobe_version": __version__,
            "fastpath": fastpath.plan(proxy.fastpath).describe(),
        }
        if sessions is not None:
            run["session_key_by"] = "recorder"  # what no session key claims (or everything, --runs-by recorder)
        self.writer = WriterProcess(self.db_path, run, busy_timeout_ms=busy_timeout_ms, otlp_endpoint=otlp_endpoint)
        self.recorder = Recorder(self.writer.submit)
        self._run_template = {k: v for k, v in run.items() if k in ("mode", "agentprobe_version", "fastpath")}
        self._session_run = {"label": run["label"], "command": run["command"], "config_sha256": config_sha256}
        self.session_run_ids: list[str] = []  # the session runs begun, in order
        self.sessions: SessionTable | None = None
        finder = None
        if sessions is not None and sessions.splits:
            finder = ProcessFinder() if "process" in sessions.order else None
            self.sessions = SessionTable(self._begin_session, self._end_session, idle_s=sessions.idle_s,
                                         alive=finder.alive if finder else None)
        # The stdio wrapper's sink comes first: it marks its notices (which name this recording in
        # X-Agentprobe-Run and are answered here, never sent upstream) before the session addon, which
        # leaves them alone, and before the recorder numbers flows. The session addon comes next, so that
        # no other addon (nor the provider) sees agentprobe's headers; extra addons (e.g. the serve
        # redirect) run before the recorder sees the flow.
        self.session_keys = SessionKeys(self.sessions, sessions, finder=finder)
        self.proxy = ProxyThread(proxy, [StdioSink(self.recorder, self.run_id), self.session_keys, *(addons or []),
                                         self.recorder])
        self._started = False

    def start(self) -> "Recording":
        # The bundle is written up front so containers sharing the confdir can trust the proxy.
        self._bundle = bundle_path(self.proxy_config.confdir)
        # A port in use must not cost the database a run row (or the file its creation).
        check_listen(self.proxy_config.host, self.proxy_config.port)
        self.writer.start()  # raises StoreError before any traffic is accepted
        try:
            self.proxy.start()
        except BaseException:
            self.writer.discard()
            raise
        self._started = True
        return self

    @property
    def url(self) -> str:
        return self.proxy.url

    def env(self, base: dict[str, str] | None = None, *, node_report: Path | None = None) -> dict[str, str]:
        """The environment for the traced command (see proxy/child_env.py for what each setting is for)."""
        env = child_env(self.url, self._bundle, base, java_truststore=self._java_truststore(base),
                        node_report=node_report)
        # `agentprobe mcp -- SERVER` started by the command records its stdio server into this run.
        env[RUN_ENV], env[PROXY_ENV] = self.run_id, self.url
        return env

    def _java_truststore(self, base: dict[str, str] | None):
        import os
        import shutil

        env = os.environ if base is None else base
        if not (shutil.which("java", path=env.get("PATH")) or env.get("JAVA_HOME")):
            return None  # no JVM to steer
        from ..proxy.java_trust import JavaTrustError, truststore

        try:
            return truststore(self.proxy_config.confdir, self._bundle)
        except (JavaTrustError, OSError, ValueError) as e:
            log.warning("agentprobe: Java clients are not steered through the proxy: %s", e)
            return None

    # -- one recorder, many runs (the pytest plugin: one run per test) -------------------------
    @property
    def current_run_id(self) -> str:
        return self.recorder.current.run_id or self.run_id

    def begin_run(self, *, label: str | None = None, command: str | None = None, parent_run_id: str | None = None,
                  config_sha256: str | None = None) -> str:
        """Start another run on this recorder: calls that begin from now on belong to it; its id.

        The run before it (this recording's own, or the last one begun) stops taking new calls;
        end it with end_run() once its calls are done.
        """
        run_id = new_id()
        self.writer.begin_run({**self._run_template, "id": run_id, "started_at": now_iso(),
                               "label": redact.scrub_command(label), "command": redact.scrub_command(command),
                               "config_sha256": config_sha256, "parent_run_id": parent_run_id})
        self.recorder.switch_run(run_id)
        return run_id

    # -- sessions: begun and ended on the proxy's event loop, so never waiting on the writer's pipe ----
    def _begin_session(self, row: dict) -> RunState:
        run_id = new_id()
        self.writer.begin_run({**self._run_template, **self._session_run, "id": run_id, "started_at": now_iso(),
                               "parent_run_id": None, **row}, block=False)
        self.session_run_ids.append(run_id)
        return RunState(run_id)

    def _end_session(self, state: RunState, status: str) -> None:
        self.writer.end_run(state.run_id, status=status, ended_at=now_iso(), block=False)

    def end_run(self, run_id: str, *, status: str = "completed", wait_s: float = 5.0, **fields) -> bool:
        """End a run begun with begin_run: wait (up to wait_s) for its calls still in flight, settle its
        row, and make this recording's own run current again. False if calls were still in flight."""
        import time

        state = self.recorder.current if self.recorder.current.run_id == run_id else None
        if state is not None:
            self.recorder.switch_run(None)
            deadline = time.monotonic() + wait_s
            while state.in_flight > 0 and time.monotonic() < deadline:
                time.sleep(0.01)
        self.writer.end_run(run_id, status=status, ended_at=now_iso(), **fields)
        return state is None or state.in_flight == 0

    def flush(self, timeout: float = 15.0, *, settle_s: float = 2.0) -> bool:
        """Block until every call of the current run is committed to the database.

        A client can have its last byte a moment before the proxy's flow ends (a stream's end
        hook runs after the bytes are forwarded): calls still in flight get up to settle_s.
        """
        import time

        deadline = time.monotonic() + settle_s
        while self.recorder.current.in_flight > 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.writer.flush(timeout)

    def in_flight(self) -> int:
        """Calls of the current run dispatched and not yet completed."""
        return self.recorder.current.in_flight

    def stop(self, *, status: str = "completed", exit_code: int | None = None, **run) -> None:
        """`run`: other run columns the end of the run settles (e.g. bypassed_connections)."""
        if not self._started:
            return
        self._started = False
        self.proxy.stop()
        # What the proxy really ran (an install that failed falls back), not what was planned at start.
        ran = {"fastpath": self.proxy.fastpath.describe()} if self.proxy.fastpath else {}
        if self.sessions is not None:
            # The proxy has stopped: no flow is left to join a session, so each ends with the recording.
            self.sessions.end_all(status)
            ran["drop_if_empty"] = True  # the recorder's run held only what no session claimed
        self.writer.close(status=status, exit_code=exit_code, ended_at=now_iso(), **run, **ran)

    def end_not_written(self) -> str | None:
        """After stop(): why the run's end is not in the database (it cannot be reached), else None."""
        if getattr(self.writer, "run_ended", None) is not False:
            return None
        cause = (self.writer.last_error or "the database did not answer").rsplit(": ", 1)[-1]
        lost = self.writer.calls_lost
        return (f"could not end run {self.run_id} in {self.db_path} ({cause})"
                + (f"; {lost} call(s) were lost" if lost else "")
                + "; its calls up to then are kept, and once the database is back `agentprobe runs` shows it as stale")

    def __enter__(self) -> "Recording":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop(status="failed" if exc[0] else "completed")
