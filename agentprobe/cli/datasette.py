"""`datasette-metadata`: a Datasette metadata file for an agentprobe database."""

from __future__ import annotations

import click

from ..datasette import metadata_for
from ..proxy.ca import default_confdir
from ..store.db import resolve_path
from .common import db_option
from .errors import UserError


@click.command("datasette-metadata")
@db_option
def datasette_metadata(db):
    """Print the path of Datasette metadata (descriptions and canned queries) for the database.

    Datasette keys metadata by the database file's name, so a database not named agentprobe.db
    gets a file of its own (in the agentprobe confdir).

    \b
    datasette .agentprobe/agentprobe.db --metadata "$(agentprobe datasette-metadata)"
    datasette mydb.db --metadata "$(agentprobe datasette-metadata --db mydb.db)"
    """
    from ..store.db import is_postgres

    target = resolve_path(db)
    if is_postgres(target):
        raise UserError(f"Datasette reads SQLite files, not {target}: copy the runs to a file first"
                        " (agentprobe copy RUN... --from URL --to runs.db)")
    click.echo(str(metadata_for(target, default_confdir())))


COMMANDS = [datasette_metadata]
