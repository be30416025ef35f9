"""The agentprobe command line: a thin layer over the library."""

from __future__ import annotations

import sys

import click

from .. import __version__
from .errors import UserError, USER_ERRORS


@click.group()
@click.version_option(__version__, prog_name="agentprobe")
def cli() -> None:
    """Record every LLM call your agent makes, then find what breaks in production."""


# Each module under agentprobe/cli/ that defines commands, in help order.
COMMAND_MODULES = ["capture", "browse", "scan", "replay", "serve", "datasette", "demo"]


def _register() -> None:
    import importlib

    for name in COMMAND_MODULES:
        for command in importlib.import_module(f"{__name__}.{name}").COMMANDS:
            cli.add_command(command)


_register()


def main(argv: list[str] | None = None) -> None:
    """Entry point: every usage or input error becomes one line on stderr and exit 2."""
    try:
        rv = cli.main(args=argv, prog_name="agentprobe", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.Abort:
        click.echo("agentprobe: aborted", err=True)
        sys.exit(130)
    except click.UsageError as e:
        hint = f" (see `{e.ctx.command_path} --help`)" if e.ctx else ""
        click.echo(f"agentprobe: error: {e.format_message()}{hint}", err=True)
        sys.exit(2)
    except click.ClickException as e:
        click.echo(f"agentprobe: error: {e.format_message()}", err=True)
        sys.exit(2)
    except USER_ERRORS as e:
        click.echo(f"agentprobe: error: {e}", err=True)
        sys.exit(2)
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(0)
    sys.exit(rv if isinstance(rv, int) else 0)
