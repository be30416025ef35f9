"""The session addon on mitmproxy's test flows: which run each request joins, and the headers it removes."""

from mitmproxy.test import tflow

from agentprobe.addons.recorder import RunState
from agentprobe.addons.session_keys import SessionKeys
from agentprobe.capture.client_process import ClientProcess
from agentprobe.capture.sessions import SessionPolicy, SessionTable

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _addon(**policy):
    rows = []

    def begin(row):
        rows.append(row)
        return RunState(f"run{len(rows)}")

    table = SessionTable(begin, lambda state, status: None)
    return SessionKeys(table, SessionPolicy(**policy)), rows


def _flow(peer=("10.0.0.5", 40000), **headers):
    flow = tflow.tflow()
    flow.client_conn.peername = peer
    for name, value in headers.items():
        flow.request.headers[name.replace("_", "-")] = value
    return flow


def _run(addon, flow):
    addon.requestheaders(flow)
    state = flow.metadata.get("agentprobe.session_run")
    return state.run_id if state else None


def test_auto_order_header_then_traceparent_then_process_then_address():
    addon, rows = _addon()
    named = _flow(X_Agentprobe_Run="planner", X_Agentprobe_Label="team-a", traceparent=TRACEPARENT)
    assert _run(addon, named) == "run1"
    assert rows[0] == {"session_key_by": "header", "client_address": "10.0.0.5", "session": "planner",
                       "label": "team-a"}
    assert "x-agentprobe-run" not in named.request.headers and "x-agentprobe-label" not in named.request.headers
    assert named.request.headers["traceparent"] == TRACEPARENT  # not ours: forwarded as it came
    assert _run(addon, _flow(X_AGENTPROBE_RUN="planner")) == "run1"  # any case, same name: same run
    traced = _flow(traceparent=TRACEPARENT)
    assert _run(addon, traced) == "run2" and rows[1]["trace_id"] == TRACEPARENT.split("-")[1]
    local = _flow(peer=("127.0.0.1", 50000))
    addon._clients[local.client_conn.id] = ClientProcess(4242, "99", "python agent.py")
    assert _run(addon, local) == "run3"
    assert rows[2] == {"session_key_by": "process", "client_address": "127.0.0.1", "client_pid": 4242,
                       "client_command": "python agent.py"}
    assert _run(addon, _flow()) == "run4" and rows[3] == {"session_key_by": "address", "client_address": "10.0.0.5"}
    assert _run(addon, _flow(peer=("::ffff:10.0.0.5", 1))) == "run4"  # the same client over a dual-stack socket


def test_untrusted_headers_are_removed_and_ignored():
    addon, rows = _addon(trust_headers=False)
    flow = _flow(X_Agentprobe_Run="other-team", X_Agentprobe_Label="prod", X_Agentprobe_Anything="x")
    assert _run(addon, flow) == "run1"
    assert rows == [{"session_key_by": "address", "client_address": "10.0.0.5"}]
    assert not [k for k in flow.request.headers if k.lower().startswith("x-agentprobe")]
    assert addon.stripped == 1


def test_an_explicit_key_the_request_lacks_leaves_it_to_the_recorders_run():
    addon, rows = _addon(runs_by="traceparent")
    assert _run(addon, _flow(X_Agentprobe_Run="named")) is None and not rows
    assert _run(addon, _flow(traceparent="00-garbage")) is None
    assert _run(addon, _flow(traceparent=TRACEPARENT)) == "run1"


def test_without_a_table_it_only_strips():
    addon = SessionKeys()
    flow = _flow(X_Agentprobe_Run="x", traceparent=TRACEPARENT)
    assert _run(addon, flow) is None and "x-agentprobe-run" not in flow.request.headers
    assert addon.client_connected(flow.client_conn) is None  # no process lookup either
