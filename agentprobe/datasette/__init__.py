"""Datasette metadata for an agentprobe database: descriptions and canned queries."""

from __future__ import annotations

from pathlib import Path

METADATA = Path(__file__).with_name("metadata.json")
