"""Every `agentprobe` command in README.md's shell blocks still works as written.

Read-only commands run against a database the demo recorded (two runs), with the README's
placeholders (RUN, RUN_A, 01J..., good.json, ...) filled in; commands that start a proxy, send to
a live provider or wait for Ctrl-C are parsed by the real command line, options and all.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import click
import pytest

from clirun import ap
from proxy_fixtures import run_cli

README = Path(__file__).resolve().parents[2] / "README.md"
# Started as processes, or sent to a live provider or collector: parsed, not run.
PARSE_ONLY = {"trace", "record", "replay", "serve"}


def readme_commands() -> list[str]:
    """Each `agentprobe ...` of a bash block, alternatives (`--json | --nl`, `json|sarif`) spelled out."""
    text = README.read_text()
    found = []
    for block in re.findall(r"```(?:bash|sh)\n(.*?)```", text, re.S):
        for line in block.splitlines():
            start = line.find("agentprobe ")
            if start < 0 or line.lstrip().startswith(("docker ", "pytest ")):
                continue
            command = line[start:]
            command = re.split(r"\s+#\s", command)[0]  # a comment
            command = re.split(r"\)\"|\)$|\) |\s\|\s*jq|\s>\s", command)[0].strip()  # $(...), | jq, > file
            if "..." in command and "01J..." not in command:
                continue  # `analyze ... --provider`: an elision, not a command
            found += expand(command)
    return found


def expand(command: str) -> list[str]:
    if " | " in command:  # `calls --json | --nl | --csv`: the first option, or each alternative instead
        first, *others = command.split(" | ")
        head = first.rsplit(" ", 1)[0]
        return [first] + [f"{head} {alt}" for alt in others]
    match = re.search(r"(\S+\|\S+)", command)
    if match and "=" not in match.group(1):  # `--format json|sarif|junit|xml`
        return [command.replace(match.group(1), value) for value in match.group(1).split("|")]
    return [command]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("readme")
    env = {"AGENTPROBE_DB": str(tmp / "demo.db"), "AGENTPROBE_CONFDIR": str(tmp / "conf")}
    for _ in range(2):
        r = run_cli("demo", env=env, cwd=tmp)
        assert r.returncode == 0, r.stderr
    runs = [r["id"] for r in json.loads(ap("runs", "--json", db=tmp / "demo.db").out)]
    first, second = runs[1], runs[0]
    files = tmp / "files"
    files.mkdir()
    assert ap("export", first, "-o", str(files / "good.json"), db=tmp / "demo.db").code == 0
    # The README's examples label runs dev and prod; the demo's are `demo`.
    import sqlite3

    with sqlite3.connect(tmp / "demo.db") as conn:
        conn.execute("UPDATE runs SET label = 'prod' WHERE id = ?", [second])
    assert ap("export", first, "--format", "har", "-o", str(files / "capture.har"), db=tmp / "demo.db").code == 0
    config = {"model": "gpt-4o-mini", "provider": "openai",
              "environments": {"dev": {"temperature": 0}, "prod": {"temperature": 0}}}
    for name in ("agent_config.json", "old_config.json"):
        (files / name).write_text(json.dumps(config))
    (files / "arch.md").write_text("One model, two tools, retries twice.\n")
    (files / "incident.md").write_text("The agent gave up after a 500.\n")
    (files / "cases.jsonl").write_text('{"id": "a", "prompt": "Classify: refund please"}\n')
    (files / "answer.xml").write_text("<analysis></analysis>\n")
    return tmp, files, first, second


def fill(command: str, first: str, second: str) -> list[str]:
    for placeholder, value in [("01J...", first), ("01K...", second), ('"$old"', first), ('"$new"', second),
                               ("RUN_A", first), ("RUN_B", second)]:
        command = command.replace(placeholder, value)
    command = re.sub(r"\bRUN\b", first, command)
    return shlex.split(command)[1:]


def parses(args: list[str]) -> None:
    """The real command line accepts these arguments (every option known, every value of its type)."""
    from agentprobe.cli import cli

    ctx = click.Context(cli, info_name="agentprobe")
    command = cli.get_command(ctx, args[0])
    assert command is not None, f"no command {args[0]!r}"
    with command.make_context(args[0], list(args[1:]), parent=ctx):
        pass


def test_the_readme_has_the_commands_we_expect():
    commands = readme_commands()
    names = {shlex.split(c)[1] for c in commands}
    assert {"trace", "record", "runs", "calls", "show", "scan", "diff", "export", "import", "replay", "serve",
            "analyze", "report", "ca", "datasette-metadata"} <= names, names
    assert "agentprobe show latest#3" in commands and "agentprobe calls --nl" in commands
    assert "agentprobe scan --format junit -o report.sarif" in commands


@pytest.mark.parametrize("command", readme_commands())
def test_every_readme_command_works_as_written(demo, tmp_path, monkeypatch, command):
    tmp, files, first, second = demo
    args = fill(command, first, second)
    work = tmp_path / "work"
    shutil.copytree(files, work)
    db = work / "demo.db"
    for part in (tmp / "demo.db").parent.glob("demo.db*"):
        shutil.copy(part, work / part.name)
    # analyze without --print sends to a model (or checks a model's saved answer); otlp needs a collector.
    if args[0] in PARSE_ONLY or (args[0] == "analyze" and "--print" not in args) or "otlp" in args:
        monkeypatch.chdir(work)
        try:
            parses(args)
        except click.ClickException as e:
            pytest.fail(f"{command}: {e.format_message()}")
        return
    if args[0] == "ca":  # the proxy's CA, in a confdir of its own
        args = [*args, "--confdir", str(work / "conf")]
    r = ap_in(work, db, args)
    assert "Traceback" not in r.err and "error:" not in r.err, (command, r.err)
    allowed = {0}
    if args[0] == "diff" or "--fail-on" in args:
        allowed.add(1)  # the runs diverge; a finding at or above the gate
    assert r.code in allowed, (command, r.code, r.err)
    if args[0] in ("runs", "calls", "show", "scan", "diff") and "-o" not in args:
        assert r.out.strip(), command


def ap_in(cwd: Path, db: Path, args: list[str]):
    import os

    saved = os.getcwd()
    os.chdir(cwd)
    try:
        return ap(*args, db=db)
    finally:
        os.chdir(saved)
