"""The pytest plugin (entry point `pytest11: agentprobe`): inactive unless asked for.

Installed, it only adds its options and the `agentprobe` fixture; nothing starts, nothing is
imported beyond this module, and no test changes. `pytest --agentprobe` (or any of the options
below that need it) starts one recorder for the session (one per xdist worker) and records each
test's LLM calls as a run labelled with the test's node id. See agentprobe/testing/session.py.
"""

from __future__ import annotations

import pytest

RECORD_MODES = ("once", "new_episodes", "none", "all")
SEVERITIES = ("low", "medium", "high", "critical")
PLUGIN_NAME = "agentprobe-session"


def pytest_addoption(parser) -> None:
    group = parser.getgroup("agentprobe", "agentprobe: record, replay and check the LLM calls tests make")
    group.addoption("--agentprobe", action="store_true", default=False,
                    help="Record every LLM call the tests make (in process and in subprocesses), one run per test.")
    group.addoption("--agentprobe-fail-on", choices=SEVERITIES, default=None, metavar="SEVERITY",
                    help="Fail a test whose run has a finding at or above SEVERITY (low, medium, high, critical).")
    group.addoption("--agentprobe-record-mode", choices=RECORD_MODES, default=None, metavar="MODE",
                    help="Cassettes: once (replay a test's cassette, record it when missing), new_episodes (replay"
                         " what matches, record the rest), none (replay only: offline), all (always record).")
    group.addoption("--agentprobe-cassette-dir", default=None, metavar="DIR",
                    help="Where cassettes live (default: cassettes/ under the rootdir).")
    group.addoption("--agentprobe-db", default=None, metavar="PATH",
                    help="The database runs go to (default: $AGENTPROBE_DB, else .agentprobe/agentprobe.db).")
    group.addoption("--agentprobe-upstream-ca", default=None, metavar="PEM",
                    help="Also trust this CA for the providers the tests call (a local test server, a gateway).")


def enabled(config) -> bool:
    opt = config.getoption
    return bool(opt("--agentprobe") or opt("--agentprobe-fail-on") or opt("--agentprobe-record-mode"))


def _xdist_controller(config) -> bool:
    """Under pytest-xdist the controller runs no test: each worker gets its own recorder."""
    return not hasattr(config, "workerinput") and bool(getattr(config.option, "numprocesses", None))


@pytest.hookimpl(trylast=True)
def pytest_configure(config) -> None:
    if not enabled(config) or _xdist_controller(config):
        return
    from .session import AgentprobeSession

    config.pluginmanager.register(AgentprobeSession(config), PLUGIN_NAME)


@pytest.fixture
def agentprobe(request):
    """This test's own run: its calls and findings, for assertions.

    \b
    def test_agent(agentprobe):
        run_my_agent()
        assert len(agentprobe.calls) == 3
        assert agentprobe.last_call["finish_reason"] == "stop"
        assert not agentprobe.findings("api_latency/*")
    """
    session = request.config.pluginmanager.get_plugin(PLUGIN_NAME)
    if session is None:
        pytest.fail("the agentprobe fixture reads the test's recorded LLM calls: run pytest with --agentprobe",
                    pytrace=False)
    return session.run_for(request.node)
