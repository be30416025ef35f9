"""`datasette-metadata`: where the Datasette metadata file is."""

from __future__ import annotations

import click

from ..datasette import METADATA


@click.command("datasette-metadata")
def datasette_metadata():
    """Print the path of agentprobe's Datasette metadata (descriptions and canned queries).

    \b
    datasette .agentprobe/agentprobe.db --metadata "$(agentprobe datasette-metadata)"
    """
    click.echo(str(METADATA))


COMMANDS = [datasette_metadata]
