"""Datasette metadata for an agentprobe database: descriptions and canned queries."""

from __future__ import annotations

import json
from pathlib import Path

METADATA = Path(__file__).with_name("metadata.json")
PACKAGED_NAME = "agentprobe"


def metadata_for(db: Path, confdir: Path) -> Path:
    """A metadata file whose databases section is keyed by this database's name, as Datasette wants."""
    name = db.stem
    if name == PACKAGED_NAME:
        return METADATA
    data = json.loads(METADATA.read_text())
    data["databases"] = {name: data["databases"][PACKAGED_NAME]}
    confdir.mkdir(parents=True, exist_ok=True)
    out = confdir / f"datasette-{name}.json"
    text = json.dumps(data, indent=2) + "\n"
    if not out.exists() or out.read_text() != text:
        out.write_text(text)
    return out
