"""`mcp`: wrap a stdio MCP server and record its calls."""

from __future__ import annotations

import sys

import click

from .errors import UserError


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--db", type=click.Path(dir_okay=False), envvar="AGENTPROBE_DB",
              help="Standalone: the database (default $AGENTPROBE_DB, else .agentprobe/agentprobe.db).")
@click.option("--label", help="Standalone: a label for the run (dev, prod, ...).")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def mcp(db, label, command):
    """Run the stdio MCP server COMMAND, passing its bytes through unchanged, and record its calls.

    Point an agent's MCP config at this instead of the server's own command. Under
    `agentprobe trace` the calls join the trace's run; otherwise they form a run of their own.

    \b
    agentprobe mcp -- python my_server.py
    agentprobe mcp -- npx -y @modelcontextprotocol/server-filesystem /tmp
    """
    if not command:
        raise UserError("no server to run: put its command after --, e.g. agentprobe mcp -- python server.py")
    from ..stdio.wrapper import run

    sys.exit(run(list(command), db=db, label=label))


COMMANDS = [mcp]
