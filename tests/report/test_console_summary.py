"""The run summary's lines about what the record lacks: bypassing processes, an unmade check, no LLM call."""

from __future__ import annotations

import json

from agentprobe.report.console import bypass_lines, no_llm_call_lines, print_summary


def summary(**fields) -> dict:
    base = {"run_id": "01RUN", "label": None, "status": "completed", "exit_code": 0, "command": "python a.py",
            "calls": 2, "llm_calls": 2, "conversations": 1, "retries": 0, "streams_cut": 0, "providers": ["openai"],
            "models": ["gpt-4o"], "errors": 0, "errors_by_status": {}, "input_tokens": 10, "output_tokens": 5,
            "calls_lost": 0, "wall_time_s": 1.0, "bypassed_connections": None, "bypass": None}
    return {**base, **fields}


def test_one_line_per_bypassing_process():
    lines = bypass_lines({"checked": True, "bypasses": [
        {"pid": 4121, "process": "node", "address": "104.18.6.192", "port": 443, "connections": 2},
        {"pid": 4121, "process": "node", "address": "::1", "port": 8000, "connections": 1},
        {"pid": 4130, "process": "curl", "address": "10.0.0.7", "port": 80, "connections": 1}]})
    assert lines == [
        "agentprobe: WARNING: 3 connections from node (pid 4121) to 104.18.6.192:443 (2), [::1]:8000 (1)"
        " bypassed the proxy and were not recorded",
        "agentprobe: WARNING: 1 connection from curl (pid 4130) to 10.0.0.7:80 bypassed the proxy and was not"
        " recorded",
    ]
    assert bypass_lines({"checked": True, "bypasses": []}) == []
    assert bypass_lines(None) == []  # a run of `record`: nothing was watched, nothing to say


def test_an_unmade_check_is_one_line(capsys):
    print_summary(summary(bypass={"checked": False, "reason": "agentprobe watches for them on Linux only, not on"
                                                             " darwin"}))
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == ("agentprobe: bypassed connections were not checked: agentprobe watches for them on Linux"
                       " only, not on darwin")
    assert sum("not checked" in line for line in err) == 1


def test_warnings_reach_stderr_with_json_too(capsys):
    detail = {"checked": True, "ports": [443], "interval_ms": 50,
              "bypasses": [{"pid": 7, "process": "node", "address": "1.2.3.4", "port": 443, "connections": 1}]}
    print_summary(summary(bypassed_connections=1, bypass=detail), as_json=True)
    out, err = capsys.readouterr()
    assert json.loads(out)["bypassed_connections"] == 1
    assert err == "agentprobe: WARNING: 1 connection from node (pid 7) to 1.2.3.4:443 bypassed the proxy and was" \
                  " not recorded\n"


def test_no_llm_call_message_only_when_there_is_none():
    assert no_llm_call_lines(summary()) == []
    lines = no_llm_call_lines(summary(llm_calls=0, calls=2, exit_code=1, bypassed_connections=4))
    assert lines[0] == "agentprobe: WARNING: no LLM call was recorded in this run. Likely causes:"
    assert lines[1].startswith("  - 4 connection(s) went around the proxy")
    assert lines[2].startswith("  - 2 request(s) did go through the proxy, but none to an API")
    assert lines[-1] == "  - the command failed before its first call (it exited with 1)"
    # A recorder with no command of its own: no word about a command failing.
    assert not any("command failed" in line for line in no_llm_call_lines(summary(llm_calls=0, command=None)))
