"""Options several commands share."""

from __future__ import annotations

from pathlib import Path

import click

db_option = click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="AGENTPROBE_DB",
    help="SQLite database (default: $AGENTPROBE_DB, else .agentprobe/agentprobe.db).",
)
confdir_option = click.option(
    "--confdir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="AGENTPROBE_CONFDIR",
    help="Where the proxy CA lives (default: ~/.agentprobe).",
)


def load_config(path) -> dict | None:
    """The agent config at path (None when no path was given); a bad one is a one-line user error."""
    if not path:
        return None
    from ..checks import agent_config
    from .errors import UserError

    try:
        return agent_config.load(path)
    except agent_config.ConfigError as e:
        raise UserError(str(e)) from None
