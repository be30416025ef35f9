"""The agent config (agent_config.json): load, validate against the shipped JSON Schema."""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

from ..util.jsonfile import read_json_file


class ConfigError(Exception):
    """A config a user must fix; the message names the file and the field."""


def schema() -> dict:
    return json.loads(resources.files("agentprobe.schemas").joinpath("agent_config.schema.json").read_text())


def load(path: str | Path) -> dict[str, Any]:
    import jsonschema

    path = Path(path)
    config = read_json_file(path, "config file", ConfigError)
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
            text = file.read_text()
        except OSError as e:
            raise ConfigError(f"{path}: field system_prompt/file: cannot read {file}: {e.strerror}") from None
    # Derived fields start with "_" so they can never collide with schema fields.
    config["_path"] = str(path)
    config["_system_prompt_text"] = text
    config["_system_prompt_file_sha256"] = hashlib.sha256(text.encode()).hexdigest() if text is not None else None
    config["_system_prompt_sha256"] = prompt.get("sha256") or config["_system_prompt_file_sha256"]
    config["_config_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return config
