"""What a person sees at the terminal (issue 23): tables that fit, `show`, references that go back in,
exit lines, conflicting options, diffs of prompts without a trailing newline.

The runs are recorded through the real proxy from the openai SDK to the fake provider over HTTPS;
the commands run in this process through the real entry point, their stdout a pipe unless COLUMNS
says how wide the terminal is.
"""

from __future__ import annotations

import base64
import json
import re
import ssl
from types import SimpleNamespace

import openai
import pytest
import trustme

from agentprobe.fakeprovider import FakeProvider
from clirun import ap, chat, record_run

# Longer than any column header, and with the slashes and dots real model ids have.
LONG_MODEL = "accounts/example-org/models/llama-v3p1-405b-instruct-long.v2"
SYSTEM = "You are a careful assistant. Answer in one sentence."
LONG_COMMAND = "python agents/research_agent.py --question 'How did ACME do in Q3 compared with Q2?' --verbose"
WIDTHS = [80, 120, 200]


def planted_key() -> str:
    """A key of OpenAI's project shape, made here so that none is ever written to a file."""
    return "sk-proj-" + "".join("Xq7vB2mN9kLp4Rt8Wz3Y"[i % 20] for i in range(40))


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("terminal")
    ca = trustme.CA()
    bundle = tmp / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    db, conf = tmp / "ap.db", tmp / "conf"
    key = planted_key()
    tools = [{"type": "function", "function": {"name": "lookup_revenue", "parameters": {"type": "object"}}}]

    def agent(client):
        chat(client, f"How did ACME do in Q3? (my key is {key})", system=SYSTEM, model=LONG_MODEL, tools=tools,
             max_tokens=64, fake=f"reply_b64={b64('ACME grew 12% in Q3.')}")
        stream = chat(client, "Stream the status report", system=SYSTEM, stream=True,
                      fake=f"reply_b64={b64('All systems nominal, nothing to report.')}; delta_chars=4")
        for _ in stream:
            pass
        try:
            chat(client, "This one fails", system=SYSTEM, fake="status=500")
        except openai.InternalServerError:
            pass
        chat(client, "And the agent carries on", system=SYSTEM)

    def other(client):  # the same agent with its system prompt edited, no trailing newline on either side
        chat(client, "How did ACME do in Q3?", system="You are a terse assistant. Never apologise.")

    with FakeProvider(ssl_context=context) as provider:
        first = record_run(db, conf, bundle, provider, agent, command=LONG_COMMAND)
        second = record_run(db, conf, bundle, provider, other, label="prod", command="python agent.py")
    return SimpleNamespace(db=db, tmp=tmp, run=first, other=second, key=key)


def header_cells(lines: list[str]) -> list[str]:
    """The header row's cells (the one line between ┏ and ┡; a header broken over two lines has two)."""
    top = next(i for i, line in enumerate(lines) if line.lstrip().startswith("┏"))
    end = next(i for i, line in enumerate(lines) if line.lstrip().startswith("┡"))
    assert end == top + 2, "the header takes more than one line:\n" + "\n".join(lines[top:end + 1])
    return [c.strip() for c in lines[top + 1].strip().strip("┃").split("┃")]


def body_rows(lines: list[str]) -> list[list[str]]:
    return [[c.strip() for c in line.strip().strip("│").split("│")] for line in lines
            if line.lstrip().startswith("│")]


# --- Fit the terminal --------------------------------------------------------------------------------

@pytest.mark.parametrize("width", WIDTHS)
def test_runs_fit_the_terminal_with_whole_ids_and_unbroken_headers(world, width):
    from agentprobe.cli.browse import RUN_COLUMNS

    r = ap("runs", db=world.db, columns=width)
    assert r.code == 0, r.err
    assert max(len(line) for line in r.lines) <= width, r.out
    headers = header_cells(r.lines)
    titles = [c.title for c in RUN_COLUMNS if not c.wide]
    assert headers == titles[:len(headers)]  # the most important first, none skipped, none broken
    rows = body_rows(r.lines)
    assert [row[0] for row in rows] == [world.other, world.run]  # whole ids, one a line, newest first
    assert rows[1][headers.index("calls")] == "4" and rows[1][headers.index("errors")] == "1"
    hidden = titles[len(headers):]
    if hidden:  # what did not fit is named, with the way to get it
        assert re.search(rf"{len(hidden)} more column\(s\) did not fit .*--wide or --columns", " ".join(r.lines))
    # Every id the table shows is taken back.
    again = ap("calls", "--run", rows[1][0], "--json", db=world.db)
    assert again.code == 0 and {c["run_id"] for c in json.loads(again.out)} == {world.run}


def test_runs_at_80_columns_drops_columns_rather_than_wrapping(world):
    r = ap("runs", db=world.db, columns=80)
    assert "command" not in header_cells(r.lines) and "did not fit" in r.out
    assert LONG_COMMAND[:20] not in r.out
    wide = ap("runs", db=world.db, columns=200)
    assert "command" in header_cells(wide.lines)


@pytest.mark.parametrize("width", WIDTHS)
def test_calls_fit_the_terminal_with_whole_model_names(world, width):
    from agentprobe.cli.browse import CALL_COLUMNS

    r = ap("calls", "--run", world.run, db=world.db, columns=width)
    assert r.code == 0, r.err
    assert max(len(line) for line in r.lines) <= width, r.out
    headers = header_cells(r.lines)
    titles = [c.title for c in CALL_COLUMNS if not c.wide]
    assert headers == titles[:len(headers)] and headers[:3] == ["seq", "model", "status"]
    rows = body_rows(r.lines)
    assert [row[0] for row in rows] == ["1", "2", "3", "4"]
    assert rows[0][1] == LONG_MODEL and rows[1][1] == "gpt-4o-mini"  # never wrapped onto a second line, never cut
    assert rows[2][2] == "500"
    assert world.run in r.out  # the title names the whole run id
    assert "…" not in "".join(row[1] for row in rows)


def test_wide_and_columns_show_every_value_whole(world):
    from agentprobe.cli.browse import RUN_COLUMNS

    wide = ap("runs", "--wide", db=world.db, columns=80)
    assert header_cells(wide.lines) == [c.title for c in RUN_COLUMNS]  # --wide: all of them, at any width
    assert "did not fit" not in wide.out and world.run in wide.out
    picked = ap("runs", "--columns", "id,command,parent_run_id", db=world.db, columns=60)
    assert header_cells(picked.lines) == ["id", "command", "parent"]
    rows = body_rows(picked.lines)
    assert rows[1][0] == world.run and "…" not in rows[1][0]  # a narrow terminal does not cut a chosen id
    assert "research_agent.py" in picked.out
    bad = ap("runs", "--columns", "id,colour", db=world.db)
    assert bad.code == 2 and "unknown column 'colour'" in bad.err and len(bad.err.strip().splitlines()) == 1


def test_a_pipe_gets_every_column(world):
    from agentprobe.cli.browse import CALL_COLUMNS, RUN_COLUMNS

    runs = ap("runs", db=world.db)  # CliRunner's stdout is no terminal, and COLUMNS is unset
    assert header_cells(runs.lines) == [c.title for c in RUN_COLUMNS]
    assert LONG_COMMAND[:60] in runs.out.replace("\n", "") or "research_agent.py" in runs.out
    calls = ap("calls", "--run", world.run, db=world.db)
    assert header_cells(calls.lines) == [c.title for c in CALL_COLUMNS]
    assert "did not fit" not in runs.out + calls.out


def test_a_real_terminal_is_measured(world, tmp_path):
    """No COLUMNS: the width is the terminal's own (a pty of 80 columns here), not a pipe's everything."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 80, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env.update(AGENTPROBE_DB=str(world.db), TERM="dumb", NO_COLOR="1")
    proc = subprocess.Popen([sys.executable, "-m", "agentprobe", "calls", "--run", world.run], stdout=follower,
                            stderr=subprocess.PIPE, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=60) == 0, proc.stderr.read()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode())
    lines = text.replace("\r\n", "\n").splitlines()
    assert max(len(line) for line in lines) <= 80, text
    assert LONG_MODEL in text and "did not fit" in text


def test_scan_findings_wrapped_at_80_keep_their_indent(world):
    r = ap("scan", "--run", world.run, db=world.db, columns=80)
    assert r.code == 0, r.err
    assert max(len(line) for line in r.lines) <= 80
    heads = [i for i, line in enumerate(r.lines) if re.match(r" (CRITICAL|HIGH|MEDIUM|LOW) ", line)]
    assert len(heads) >= 2
    for start, end in zip(heads, heads[1:] + [len(r.lines)]):
        block = [line for line in r.lines[start + 1:end] if line.strip()]
        assert block and all(line.startswith("    ") for line in block), "\n".join(r.lines[start:end])
        assert any(line.startswith("    fix: ") for line in block)
    assert not any(line != line.rstrip() for line in r.lines)  # no blanks padded out to the width


# --- Show what was asked and answered ----------------------------------------------------------------

def test_show_prints_the_request_the_answer_and_the_numbers(world):
    r = ap("show", f"{world.run}#1", db=world.db, columns=120)
    assert r.code == 0, r.err
    out = r.out
    assert SYSTEM in out and "How did ACME do in Q3?" in out  # the system prompt and the message as sent
    assert "lookup_revenue" in out  # the tools
    assert "temperature=0" in out and "max_tokens=64" in out  # the parameters
    assert LONG_MODEL in out and "status 200" in out
    assert "ACME grew 12% in Q3." in out  # the answer
    assert re.search(r"latency [\d.]+ ms", out) and re.search(r"usage: in \d+ / out \d+", out)
    assert world.key not in out + r.err and world.key[8:30] not in out


def test_show_joins_a_streamed_answer(world):
    r = ap("show", f"{world.run}#2", db=world.db)
    assert r.code == 0, r.err
    assert "All systems nominal, nothing to report." in r.out
    assert "stream=yes" in r.out  # the flag as sent, not SQLite's 1
    assert json.loads(ap("show", f"{world.run}#2", "--json", db=world.db).out)["settings"]["stream"] is True


def test_show_lists_the_findings_that_cite_the_call(world):
    r = ap("show", f"{world.run}#3", db=world.db)
    assert r.code == 0, r.err
    assert "status 500" in r.out and "api_latency/swallowed_error" in r.out
    clean = ap("show", f"{world.run}#4", db=world.db)
    assert "api_latency/swallowed_error" not in clean.out


def test_show_json(world):
    r = ap("show", f"{world.run}#1", "--json", db=world.db)
    assert r.code == 0, r.err
    view = json.loads(r.out)
    assert view["ref"] == f"{world.run}#1"
    assert view["request"]["system"] == SYSTEM
    assert view["request"]["messages"][-1]["role"] == "user"
    assert [t["function"]["name"] for t in view["request"]["tools"]] == ["lookup_revenue"]
    assert view["settings"]["temperature"] == 0 and view["settings"]["max_tokens"] == 64
    assert view["answer"]["text"] == "ACME grew 12% in Q3."
    assert view["outcome"]["status"] == 200 and view["usage"]["input_tokens"] > 0
    assert view["timing"]["latency_ms"] > 0 and view["timing"]["seq"] == 1
    assert world.key not in r.out
    failed = json.loads(ap("show", f"{world.run}#3", "--json", db=world.db).out)
    assert failed["outcome"]["status"] == 500
    assert "api_latency/swallowed_error" in {f["rule"] for f in failed["findings"]}


def test_no_stored_byte_holds_the_planted_key(world):
    stored = b"".join(p.read_bytes() for p in world.tmp.glob("ap.db*"))
    assert world.key.encode() not in stored


def test_show_of_a_call_the_run_lacks_is_one_line(world):
    for ref, needle in [(f"{world.run}#99", "has no call 99"), ("latest", "is not a call reference"),
                        ("NOSUCHRUN#1", "no run")]:
        r = ap("show", ref, db=world.db)
        assert r.code == 2 and needle in r.err and len(r.err.strip().splitlines()) == 1, (ref, r.err)


def test_every_printed_reference_is_taken_back(world):
    scan = ap("scan", "--run", world.run, db=world.db)
    refs = re.findall(r"\b([0-9A-Z]{6})#(\d+)\b", scan.out)
    assert refs, scan.out
    end, seq = refs[0]
    assert world.run.endswith(end)
    exit_line = ap("scan", "--run", world.run, "--fail-on", "low", db=world.db).err
    cited = re.search(r" at ([0-9A-Z]{6}#\d+)", exit_line).group(1)
    # A prefix is a reference once it is unique: the two runs' ids may share their first 8 or more
    # characters (a ULID starts with its millisecond timestamp).
    shared = next(i for i, (a, b) in enumerate(zip(world.run, world.other)) if a != b)
    prefix = world.run[:max(8, shared + 1)]
    for ref in {f"{end}#{seq}", cited, f"{world.run}#{seq}", f"{prefix}#{seq}", f"latest#1"}:
        shown = ap("show", ref, db=world.db)
        assert shown.code == 0, (ref, shown.err)
    for ref in {end, f"{end}#{seq}", world.run, prefix, world.run.lower()[-6:]}:
        calls = ap("calls", "--run", ref, "--json", db=world.db)
        assert calls.code == 0 and {c["run_id"] for c in json.loads(calls.out)} == {world.run}, (ref, calls.err)
        scanned = ap("scan", "--run", ref, "--json", db=world.db)
        assert scanned.code == 0 and json.loads(scanned.out)["runs"] == [world.run], (ref, scanned.err)
        out = world.tmp / "report.html"
        report = ap("report", ref, "-o", str(out), db=world.db)
        assert report.code == 0 and world.run in out.read_text(), (ref, report.err)
        diff = ap("diff", ref, world.other[-6:], "--json", db=world.db)
        assert diff.code == 1 and json.loads(diff.out)["run_a"]["id"] == world.run, (ref, diff.err)


# --- Explain every exit ------------------------------------------------------------------------------

def test_fail_on_says_why_in_one_line(world):
    r = ap("scan", "--run", world.run, "--fail-on", "high", db=world.db)
    assert r.code == 1
    [line] = [line for line in r.err.splitlines() if line.strip()]
    data = json.loads(ap("scan", "--run", world.run, "--json", db=world.db).out)
    tripped = [f for f in data["findings"] if f["severity"] in ("critical", "high")]
    assert tripped
    assert line.startswith(f"agentprobe: {len(tripped)} finding(s) at or above high")
    assert f"worst: {tripped[0]['severity']} {tripped[0]['rule']}" in line and line.endswith("exit 1")
    assert ap("scan", "--run", world.other, "--fail-on", "critical", db=world.db).code == 0


def test_fail_on_with_a_sarif_file_says_why_too(world, tmp_path):
    out = tmp_path / "findings.sarif"
    r = ap("scan", "--run", world.run, "--fail-on", "high", "-o", str(out), db=world.db)
    assert r.code == 1
    lines = [line for line in r.err.splitlines() if line.strip()]
    assert lines[0].startswith("agentprobe: wrote ") and str(out) in lines[0]
    assert re.match(r"agentprobe: \d+ finding\(s\) at or above high \(worst: \w+ \S+ at \w{6}#\d+", lines[1])
    assert json.loads(out.read_text())["version"] == "2.1.0"


@pytest.mark.parametrize("name,fmt,check", [
    ("t.txt", "table", lambda text: "finding(s) in" in text and "fix:" in text and not text.lstrip().startswith("{")),
    ("t.txt", None, lambda text: "finding(s) in" in text and "fix:" in text),
    ("t.json", None, lambda text: "findings" in json.loads(text)),
    ("t.txt", "json", lambda text: "findings" in json.loads(text)),
    ("t.sarif", None, lambda text: json.loads(text)["version"] == "2.1.0"),
    ("junit-t.xml", None, lambda text: text.lstrip().startswith("<?xml") and "<testsuite" in text),
])
def test_the_written_format_follows_format_else_the_extension(world, tmp_path, name, fmt, check):
    out = tmp_path / name
    r = ap("scan", "--run", world.run, "-o", str(out), *(["--format", fmt] if fmt else []), db=world.db)
    assert r.code == 0, r.err
    assert check(out.read_text())


def test_scan_help_says_how_the_format_is_chosen():
    text = " ".join(ap("scan", "--help").out.split())
    assert "default: from -o's extension" in text


# --- Conflicting or meaningless options --------------------------------------------------------------

def _config(tmp_path):
    path = tmp_path / "agent_config.json"
    path.write_text(json.dumps({"model": "gpt-4o-mini", "environments": {"dev": {"temperature": 0},
                                                                       "prod": {"temperature": 0}}}))
    return path


@pytest.mark.parametrize("args,needle", [
    (["runs", "--json", "--csv"], "--json and --csv ask for two formats"),
    (["calls", "--nl", "--table"], "--nl and --table ask for two formats"),
    (["calls", "--csv", "--wide"], "--wide shapes a table"),
    (["runs", "--label", "a", "--label", "b"], "given 2 times"),
    (["scan", "--label", "dev", "--label", "prod"], "given 2 times"),
    (["scan", "--json", "--format", "sarif"], "--json and --format sarif ask for two formats"),
    (["scan", "--config", "{config}", "--env", "staging"], "no such environment (it defines: dev, prod)"),
    (["scan", "--config", "{config}", "--run", "latest", "--env", "staging"], "no such environment"),
    (["scan", "--env", "prod"], "--env"),
    (["analyze", "--architecture", "{config}", "--scenario", "{config}", "--config", "{config}", "--env", "staging",
      "--print"], "no such environment"),
])
def test_conflicting_or_meaningless_options_are_one_line_and_exit_2(world, tmp_path, args, needle):
    config = _config(tmp_path)
    args = [str(config) if a == "{config}" else a for a in args]
    r = ap(*args, db=world.db)
    assert r.code == 2, (args, r.out, r.err)
    assert needle in r.err and len(r.err.strip().splitlines()) == 1, r.err
    assert "Traceback" not in r.err and r.out == ""


def test_importing_a_run_already_there_under_another_label_is_an_error_not_ignored(world, tmp_path):
    trace = tmp_path / "run.json"
    assert ap("export", world.run, "-o", str(trace), db=world.db).code == 0
    before = world.db.read_bytes()
    again = ap("import", str(trace), db=world.db)  # the same file again: checked, not imported twice
    assert again.code == 0 and again.out.strip() == world.run
    relabel = ap("import", str(trace), "--label", "prod", db=world.db)
    assert relabel.code == 2 and len(relabel.err.strip().splitlines()) == 1, relabel.err
    assert "already in this database, labelled 'dev'" in relabel.err
    assert world.db.read_bytes() == before
    elsewhere = tmp_path / "other.db"
    assert ap("import", str(trace), "--label", "prod", db=elsewhere).code == 0
    assert json.loads(ap("runs", "--json", db=elsewhere).out)[0]["label"] == "prod"


def test_scanning_every_run_of_an_empty_database_says_there_was_none(tmp_path):
    from agentprobe.store.db import open_db

    open_db(tmp_path / "empty.db", create=True)
    r = ap("scan", "--all", db=tmp_path / "empty.db")
    assert r.code == 0 and r.out.strip() == "no findings: there was no run to scan"


def test_agentprobe_alone_prints_its_help_and_exits_0():
    r = ap()
    assert r.code == 0 and "Usage:" in r.out and "show" in r.out and r.err == ""


# --- Never mislead: diffs of text without a trailing newline -----------------------------------------

def test_diff_puts_each_side_of_a_changed_prompt_on_its_own_line(world):
    r = ap("diff", world.run, world.other, db=world.db, columns=120)
    assert r.code == 1, r.err
    assert f"-{SYSTEM}" in r.lines and "+You are a terse assistant. Never apologise." in r.lines
    assert "Never apologise.+" not in r.out and f"{SYSTEM}+" not in r.out
    data = json.loads(ap("diff", world.run, world.other, "--json", db=world.db).out)
    diffs = [f["diff"] for f in data["divergence"]["fields"] if f.get("diff")]
    assert diffs, data["divergence"]
    lines = diffs[0].splitlines()
    assert f"-{SYSTEM}" in lines and "+You are a terse assistant. Never apologise." in lines
    assert "\\ No newline at end of file" not in diffs[0] or diffs[0].count("\n-") == 1


def test_scan_evidence_of_a_changed_prompt_keeps_the_sides_apart(world):
    data = json.loads(ap("scan", "--run", world.other, "--json", db=world.db).out)
    changed = [f for f in data["findings"] if f["rule"] == "prompt_drift/system_prompt_changed"]
    assert changed, [f["rule"] for f in data["findings"]]
    lines = changed[0]["evidence"].splitlines()
    assert f"-{SYSTEM}" in lines and "+You are a terse assistant. Never apologise." in lines


def test_runs_of_an_empty_database_says_so(tmp_path):
    from agentprobe.store.db import connect

    db = tmp_path / "empty.db"
    connect(db, create=True).close()
    r = ap("runs", db=db, columns=80)
    assert r.code == 0 and r.out == ""
    assert "no runs in this database yet" in r.err and "agentprobe trace -- CMD" in r.err
    assert "no run labelled 'prod'" in ap("runs", "--label", "prod", db=db).err
    assert ap("runs", "--json", db=db).out.strip() == "[]"  # a machine still gets its empty list
