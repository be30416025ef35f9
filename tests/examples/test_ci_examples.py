"""examples/ci: the GitHub Actions workflow passes actionlint and the workflow schema, the GitLab CI file
passes GitLab's schema, both pass yamllint, and every agentprobe flag they use exists."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "ci"
GITHUB = EXAMPLES / "github-actions.yml"
GITLAB = EXAMPLES / "gitlab-ci.yml"
YAMLLINT = "{extends: default, rules: {line-length: {max: 120}, document-start: disable, truthy: {check-keys: false}}}"


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: it comes with the test extras (scripts/venv.sh test)")
    return found


def _ok(args: list[str]) -> None:
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_github_workflow_passes_actionlint():
    _ok([_tool("actionlint"), "-no-color", str(GITHUB)])


@pytest.mark.parametrize("path,schema", [(GITHUB, "vendor.github-workflows"), (GITLAB, "vendor.gitlab-ci")])
def test_each_file_fits_its_ci_schema(path, schema):
    _ok([sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, str(path)])


def test_yamllint():
    _ok([sys.executable, "-m", "yamllint", "--strict", "-d", YAMLLINT, str(EXAMPLES)])


@pytest.mark.parametrize("path", [GITHUB, GITLAB])
def test_the_commands_they_run_exist(path):
    import yaml

    text = path.read_text()
    yaml.safe_load(text)
    plugin_flags = set(re.findall(r"--agentprobe[a-z-]*", text))
    help_text = subprocess.run([sys.executable, "-m", "pytest", "--help"], capture_output=True, text=True,
                               timeout=120).stdout
    assert plugin_flags and all(flag in help_text for flag in plugin_flags), plugin_flags
    for command, flags in (("scan", ["--all", "--format", "-o"]), ("trace", ["--config", "--cases", "--env", "--json"]),
                           ("diff", ["--max-changed"])):
        assert f"agentprobe {command}" in text
        options = subprocess.run([sys.executable, "-m", "agentprobe", command, "--help"], capture_output=True,
                                 text=True, timeout=120).stdout
        assert all(f in options for f in flags), (command, flags)
    assert "--junitxml=reports/junit.xml" in text and "sarif" in text
