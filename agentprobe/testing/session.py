"""What `pytest --agentprobe` does: one recorder for the session, one run per test.

Per-test runs: the session starts one `Recording` (one proxy thread, one writer process) and
points the process environment at it (HTTPS_PROXY, SSL_CERT_FILE, ...: what `trace` gives its
child), so SDK clients a test creates, and subprocesses it starts, go through it. Before each
test's setup the recorder switches to a new run labelled with the test's node id
(`Recording.begin_run`); a call belongs to the run that was current when its request began.
After the test's call phase a flush barrier makes its calls readable (the `agentprobe` fixture
reads them the same way, mid-test) and the run is scanned; after its teardown the run is ended
(its in-flight calls waited for, briefly) and the recorder's own session run is current again.

Cassettes: with a record mode, each test's run is also a trace file (`agentprobe export`'s
format, redacted as every export is) under the cassette directory. Replaying one, the proxy's
playback addon answers each LLM call from it through a local `serve` backend (the recorded
bytes and stream chunking, no key, no network); a call it does not hold gets a
provider-shaped 404 and fails the test, naming the call and the recorded call closest to it.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from .plugin import RECORD_MODES  # noqa: F401 - documented here too

# SDK constructors refuse to start without a key; offline, any value does (nothing leaves the machine).
PLACEHOLDER_KEY = "agentprobe-cassette-no-key"
KEY_VARIABLES = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY")


class CassetteError(Exception):
    pass


def cassette_path(directory: Path, nodeid: str) -> Path:
    """cassettes/tests/test_agent/TestX/test_y[a-1].json for tests/test_agent.py::TestX::test_y[a-1]."""
    parts = nodeid.split("::")
    module = re.sub(r"\.py$", "", parts[0])
    names = [_safe(p) for p in module.split("/") if p not in ("", ".", "..")] + [_safe(p) for p in parts[1:]]
    return directory.joinpath(*names[:-1], names[-1] + ".json")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._\[\]=+-]", "_", name)[:150] or "_"


def load_cassette(path: Path):
    """The recorded calls of a cassette; CassetteError with one line if it cannot be used."""
    from ..playback.serve import recorded_from_trace
    from ..traces import TraceError, read_file

    try:
        trace = read_file(path)
    except TraceError as e:
        raise CassetteError(f"{e}; delete it, or record it again with --agentprobe-record-mode=all") from None
    return recorded_from_trace(trace)


class TestRun:
    """One test's run, as the `agentprobe` fixture gives it."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self, session: "AgentprobeSession", nodeid: str, run_id: str, cassette: Path | None) -> None:
        self._session = session
        self.nodeid = nodeid
        self.run_id = run_id
        self.cassette = cassette
        self.replaying = False  # answered from its cassette
        self.record_cassette = False  # its run becomes its cassette when it ends
        self.matcher = None
        self.error: str | None = None  # a cassette that cannot be used
        self.outcome: str | None = None

    # -- for assertions ---------------------------------------------------------------------
    @property
    def calls(self) -> list[dict]:
        """The run's calls so far, in dispatch order, every column (JSON columns decoded)."""
        from ..store.queries import decode_json_columns

        self._session.flush()
        with self._session.database() as db:
            return [decode_json_columns(dict(r)) for r in
                    db.query("SELECT * FROM calls WHERE run_id = ? ORDER BY seq", [self.run_id])]

    @property
    def llm_calls(self) -> list[dict]:
        """Only the calls to LLM APIs (not other HTTP traffic the test made)."""
        return [c for c in self.calls if c["api"] is not None]

    def __len__(self) -> int:
        return len(self.llm_calls)

    @property
    def last_call(self) -> dict | None:
        calls = self.llm_calls
        return calls[-1] if calls else None

    def findings(self, rule: str | None = None, *, min_severity: str | None = None) -> list:
        """Scan findings for this run; `rule` is a glob over rule ids (e.g. "api_latency/*")."""
        from ..checks import severity_rank

        found = self._session.scan(self.run_id)
        if rule:
            found = [f for f in found if fnmatch.fnmatchcase(f.rule, rule)]
        if min_severity:
            found = [f for f in found if severity_rank(f.severity) >= severity_rank(min_severity)]
        return found

    @property
    def rules(self) -> set[str]:
        return {f.rule for f in self.findings()}

    @property
    def misses(self) -> list[str]:
        """LLM calls the cassette did not hold, each with the recorded call closest to it."""
        from ..playback.serve import describe_miss

        out = []
        if self.matcher is not None:
            with self.matcher.lock:
                out += [describe_miss(s) for s in self.matcher.served if s.how == "unmatched"]
        playback = self._session.playback
        if playback is not None and playback.matcher is None and self._session.current is self:
            for path, model in playback.misses_without_recording:
                out.append(f"{path}" + (f" ({model})" if model else "") + f": no cassette at {self.cassette}"
                           " (record it with --agentprobe-record-mode=once)")
        return out


class AgentprobeSession:
    def __init__(self, config) -> None:
        opt = config.getoption
        self.config = config
        self.mode: str | None = opt("--agentprobe-record-mode")
        self.fail_on: str | None = opt("--agentprobe-fail-on")
        directory = opt("--agentprobe-cassette-dir")
        self.cassette_dir = Path(directory) if directory else Path(config.rootpath) / "cassettes"
        self.db_option = opt("--agentprobe-db")
        self.upstream_ca = opt("--agentprobe-upstream-ca")
        self.recording = None
        self.backend = None
        self.playback = None
        self.current: TestRun | None = None
        self.runs: dict[str, TestRun] = {}
        self.cassettes_written: list[Path] = []
        self._saved_env: dict[str, str | None] = {}
        self.db_path = None

    # -- the session --------------------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session) -> None:
        from ..capture.session import Recording
        from ..proxy.ca import default_confdir
        from ..proxy.runner import ProxyConfig, ProxyStartError
        from ..store.db import StoreError, resolve_path

        self.db_path = resolve_path(self.db_option)
        addons = []
        if self.mode is not None:
            from ..addons.playback import Playback
            from ..playback.serve import ServeServer

            self.backend = ServeServer([]).start()
            self.playback = Playback(("127.0.0.1", self.backend.port), None, on_miss="live")
            addons.append(self.playback)
        upstream_ca = Path(self.upstream_ca) if self.upstream_ca else None
        if upstream_ca is not None and not upstream_ca.is_file():
            raise pytest.UsageError(f"agentprobe: --agentprobe-upstream-ca {upstream_ca}: no such file")
        worker = getattr(self.config, "workerinput", {}).get("workerid")
        try:
            self.recording = Recording(
                self.db_path, ProxyConfig(confdir=default_confdir(), upstream_ca=upstream_ca),
                label="pytest" + (f" {worker}" if worker else ""),
                command=shlex.join(["pytest", *self.config.invocation_params.args]), addons=addons).start()
        except (StoreError, ProxyStartError, OSError) as e:
            self._stop_backend()
            raise pytest.UsageError(f"agentprobe: cannot start the recorder: {e}") from None
        for name, value in self.recording.env().items():
            self._setenv(name, value)
        if self.mode == "none":
            for name in KEY_VARIABLES:
                if not os.environ.get(name):
                    self._setenv(name, PLACEHOLDER_KEY)

    def _setenv(self, name: str, value: str) -> None:
        if os.environ.get(name) == value:
            return
        self._saved_env.setdefault(name, os.environ.get(name))
        os.environ[name] = value

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session) -> None:
        self._stop()

    def pytest_unconfigure(self, config) -> None:
        self._stop()

    def _stop(self) -> None:
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env.clear()
        if self.current is not None and self.recording is not None:
            self._end(self.current)
        if self.recording is not None:
            recording, self.recording = self.recording, None
            recording.stop()
        self._stop_backend()

    def _stop_backend(self) -> None:
        if self.backend is not None:
            self.backend.stop()
            self.backend = None

    def pytest_report_header(self, config) -> str | None:
        if self.recording is None:
            return None
        mode = f", cassettes: {self.mode} in {self.cassette_dir}" if self.mode else ""
        return f"agentprobe: recording through {self.recording.url} into {self.db_path}{mode}"

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.runs:
            return
        line = f"agentprobe: {len(self.runs)} test run(s) recorded in {self.db_path}"
        if self.cassettes_written:
            line += f"; {len(self.cassettes_written)} cassette(s) written under {self.cassette_dir}"
        terminalreporter.write_line(line)

    # -- each test ------------------------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item) -> None:
        run = self._begin(item)
        if run.error:
            pytest.fail(f"agentprobe: {run.error}", pytrace=False)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item, call):
        report = yield
        run = self.runs.get(item.nodeid)
        if run is None or self.recording is None:
            return report
        if report.when == "call" or (report.when == "setup" and not report.passed):
            run.outcome = report.outcome
        if report.when == "call":
            self._check(run, report)
        return report

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(self, item, nextitem):
        try:
            return (yield)
        finally:
            run = self.runs.get(item.nodeid)
            if run is not None and run is self.current:
                self._end(run)

    def run_for(self, item) -> TestRun:
        run = self.runs.get(item.nodeid)
        if run is None:  # requested outside a test's setup (a plugin of its own, say)
            run = self._begin(item)
        return run

    def _begin(self, item) -> TestRun:
        if self.current is not None:
            self._end(self.current)
        run_id = self.recording.begin_run(label=item.nodeid, command=f"pytest {item.nodeid}")
        cassette = cassette_path(self.cassette_dir, item.nodeid) if self.mode else None
        run = self.runs[item.nodeid] = TestRun(self, item.nodeid, run_id, cassette)
        self.current = run
        if self.playback is not None:
            self._arm(run)
        return run

    def _arm(self, run: TestRun) -> None:
        """Point the playback addon at this test's cassette, as the record mode says."""
        recorded = None
        if self.mode != "all" and run.cassette.exists():
            try:
                recorded = load_cassette(run.cassette)
            except CassetteError as e:
                run.error = str(e)
                recorded = []  # answer nothing: the test fails at setup anyway
        replay_only = self.mode == "none" or (self.mode == "once" and recorded is not None)
        run.matcher = self.backend.load(recorded) if recorded is not None else None
        self.playback.use(run.matcher)
        self.playback.on_miss = "serve" if replay_only else "live"
        self.playback.no_recording = (f"no cassette at {run.cassette}; record it with"
                                      " --agentprobe-record-mode=once")
        run.replaying = recorded is not None
        run.record_cassette = not replay_only

    def _end(self, run: TestRun) -> None:
        self.current = None
        if self.playback is not None:
            self.playback.use(None)
            self.playback.on_miss = "live"
        failed = run.outcome == "failed"
        self.recording.end_run(run.run_id, status="completed", exit_code=1 if failed else 0)
        if run.record_cassette and run.error is None:
            self._write_cassette(run)

    def _write_cassette(self, run: TestRun) -> None:
        from ..traces.export_json import dumps, trace_dict

        self.flush()
        with self.database() as db:
            llm = db.execute("SELECT count(*) FROM calls WHERE run_id = ? AND api IS NOT NULL",
                             [run.run_id]).fetchone()[0]
            if not llm:
                return  # a test that calls no model gets no cassette
            if self.mode == "new_episodes" and run.replaying and not self._went_live(run):
                return  # nothing new: the cassette stays as it was
            text = dumps(trace_dict(db, run.run_id))
        path = run.cassette
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        self.cassettes_written.append(path)

    @staticmethod
    def _went_live(run: TestRun) -> bool:
        if run.matcher is None:
            return True
        with run.matcher.lock:
            return any(s.how == "live" for s in run.matcher.served)

    def _check(self, run: TestRun, report) -> None:
        """After the test body: fail it for calls missing from its cassette, or findings at --agentprobe-fail-on."""
        from ..checks import severity_rank

        misses = run.misses
        findings = self.scan(run.run_id)
        failing = [f for f in findings if self.fail_on and severity_rank(f.severity) >= severity_rank(self.fail_on)]
        if findings:
            report.sections.append(("agentprobe findings", format_findings(findings, run)))
        if misses:
            where = f" {run.cassette}" if run.cassette else ""
            text = (f"{len(misses)} LLM call(s) not in the cassette{where}:\n"
                    + "\n".join(f"  {m}" for m in misses))
            report.sections.append(("agentprobe: calls not in the cassette", text))
        if report.passed and (misses or failing):
            lines = []
            if misses:
                lines.append(f"agentprobe: {len(misses)} LLM call(s) of this test are not in its cassette"
                             f" {run.cassette}:")
                lines += [f"  {m}" for m in misses]
                lines.append("  (the test's calls changed: record the cassette again with"
                             " --agentprobe-record-mode=all, or new_episodes to add them)")
            if failing:
                lines.append(f"agentprobe: {len(failing)} finding(s) at or above {self.fail_on} in run {run.run_id}:")
                lines.append(format_findings(failing, run))
            report.outcome = "failed"
            report.longrepr = "\n".join(lines)

    # -- reading back -------------------------------------------------------------------------
    def flush(self) -> None:
        if self.recording is not None and not self.recording.flush():
            sys.stderr.write("agentprobe: warning: the writer did not confirm the test's calls in time\n")

    @contextmanager
    def database(self):
        from ..store.db import open_db

        db = open_db(self.db_path)
        try:
            yield db
        finally:
            db.conn.close()

    def scan(self, run_id: str) -> list:
        from ..checks import scan_runs

        self.flush()
        with self.database() as db:
            return scan_runs(db, [run_id], same_label_only=True)


def format_findings(findings: list, run: TestRun) -> str:
    lines = []
    from ..checks import severity_rank

    for f in sorted(findings, key=lambda f: -severity_rank(f.severity)):
        seqs = ", ".join(f"#{c['seq']}" for c in f.calls[:8] if c.get("run_id") in (None, run.run_id))
        lines.append(f"  {f.severity.upper()} {f.rule}: {f.title}" + (f" (calls {seqs})" if seqs else ""))
        for line in f.evidence.splitlines()[:12]:
            lines.append(f"      {line}")
        lines.append(f"      fix: {f.fix}")
    return "\n".join(lines)
