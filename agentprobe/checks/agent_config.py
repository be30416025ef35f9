"""The agent config (agent_config.json): load, validate against the shipped JSON Schema."""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

from ..util.jsonfile import parse_json_text
from ..util.userfile import read_user_file, read_user_text


class ConfigError(Exception):
    """A config a user must fix; the message names the file and the field."""


def check_environment(config: dict | None, env: str | None) -> None:
    """An environment to match runs against is one the config defines; without a config it means nothing."""
    if env is None:
        return
    if not config:
        raise ConfigError(f"--env {env} names an environment of an agent config: give --config too")
    envs = config.get("environments") or {}
    if env not in envs:
        raise ConfigError(f"--env {env}: the config has no such environment (it defines: {', '.join(envs) or 'none'})")


def schema() -> dict:
    return json.loads(resources.files("agentprobe.schemas").joinpath("agent_config.schema.json").read_text())


def load(path: str | Path) -> dict[str, Any]:
    import jsonschema

    path = Path(path)
    data = read_user_file(path, "config file", ConfigError)  # read once: the hash is of what was checked
    try:
        config_text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {e.start})") from None
    config = parse_json_text(config_text, str(path), ConfigError)
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise ConfigError(f"{path}: field {where}: {err.message}")
    prompt = config.get("system_prompt") or {}
    text = prompt.get("text")
    if prompt.get("file"):
        file = (path.parent / prompt["file"]).resolve()
        try:
            text = read_user_text(file, "system prompt file", ConfigError)
        except ConfigError as e:
            raise ConfigError(f"{path}: field system_prompt/file: {e}") from None
    # Derived fields start with "_" so they can never collide with schema fields.
    config["_path"] = str(path)
    config["_system_prompt_text"] = text
    config["_system_prompt_file_sha256"] = hashlib.sha256(text.encode()).hexdigest() if text is not None else None
    config["_system_prompt_sha256"] = prompt.get("sha256") or config["_system_prompt_file_sha256"]
    config["_config_sha256"] = hashlib.sha256(data).hexdigest()
    return config
