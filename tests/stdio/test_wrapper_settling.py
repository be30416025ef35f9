"""Under a trace, the stdio wrapper passes on a line that starts or ends a call only once the proxy has its notice.

The proxy numbers notices as they arrive. If an answer reached the agent first, the agent's next LLM
call (which that answer caused) could be numbered as completing before the tool did. Here a stand-in
for the trace's proxy answers each notice slowly, and the agent must not see an answer before the
notice of its completion has been taken.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agentprobe.stdio.sinks import decode

ECHO_SERVER = """
import json, sys
for line in sys.stdin:
    msg = json.loads(line)
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {"echo": msg["method"]}}) + "\\n")
    sys.stdout.flush()
"""


class SlowSink(ThreadingHTTPServer):
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.taken: list[tuple[str, float]] = []  # (event kind, when the notice was answered)
        super().__init__(("127.0.0.1", 0), self.Handler)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            time.sleep(self.server.delay)
            _, events = decode(body)
            answered = time.time()
            self.server.taken.extend((event["k"], answered) for event, _, _ in events)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass


@pytest.fixture
def slow_sink(request):
    server = SlowSink(request.param)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def wrapped(tmp_path, sink: SlowSink) -> subprocess.Popen:
    script = tmp_path / "echo_server.py"
    script.write_text(ECHO_SERVER)
    env = dict(os.environ, AGENTPROBE_RUN_ID="run-under-trace",
               AGENTPROBE_PROXY_URL=f"http://127.0.0.1:{sink.server_address[1]}")
    return subprocess.Popen([sys.executable, "-m", "agentprobe", "mcp", "--", sys.executable, str(script)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def ask(proc: subprocess.Popen, ident: int) -> tuple[dict, float]:
    proc.stdin.write(json.dumps({"jsonrpc": "2.0", "id": ident, "method": "tools/list"}).encode() + b"\n")
    proc.stdin.flush()
    answer = json.loads(proc.stdout.readline())
    return answer, time.time()


def finish(proc: subprocess.Popen) -> bytes:
    proc.stdin.close()
    err = proc.stderr.read()
    proc.wait(timeout=30)
    return err


@pytest.mark.parametrize("slow_sink", [0.3], indirect=True)
def test_an_answer_reaches_the_agent_only_after_its_completion_was_taken(tmp_path, slow_sink):
    proc = wrapped(tmp_path, slow_sink)
    try:
        answers = [ask(proc, i) for i in (1, 2)]
    finally:
        err = finish(proc)
    assert [a["result"] for a, _ in answers] == [{"echo": "tools/list"}] * 2
    completions = [at for kind, at in slow_sink.taken if kind == "c"]
    assert [kind for kind, _ in slow_sink.taken] == ["d", "c", "d", "c"]
    for (_, seen_at), taken_at in zip(answers, completions):
        assert seen_at >= taken_at
    assert proc.returncode == 0 and b"stops waiting" not in err


@pytest.mark.parametrize("slow_sink", [3.5], indirect=True)
def test_a_proxy_that_stalls_delays_the_traffic_once_then_never_again(tmp_path, slow_sink):
    proc = wrapped(tmp_path, slow_sink)
    try:
        started = time.time()
        first, first_at = ask(proc, 1)
        second, second_at = ask(proc, 2)
    finally:
        err = finish(proc)
    assert first["id"] == 1 and second["id"] == 2
    assert first_at - started < 3.0  # one settle timeout, not the proxy's whole stall
    assert second_at - first_at < 1.0
    assert err.decode().count("stops waiting") == 1
