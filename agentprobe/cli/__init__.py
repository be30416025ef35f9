"""The agentprobe command line: a thin layer over the library."""

from __future__ import annotations

import sys

import click

from .. import __version__
from .errors import USER_ERRORS


@click.group()
@click.version_option(__version__, prog_name="agentprobe")
def cli() -> None:
    """Record every LLM call your agent makes, then find what breaks in production."""


# Modules under agentprobe/cli/ that define commands come in this order; any other module
# with a COMMANDS list is registered after them, so adding a command never means editing here.
COMMAND_ORDER = ["trace", "record", "mcp", "ca", "browse", "scan", "diff", "traces", "replay", "serve", "analyze", "report", "datasette", "demo"]


def command_modules() -> list[str]:
    import pkgutil

    found = {m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")}
    return [n for n in COMMAND_ORDER if n in found] + sorted(found - set(COMMAND_ORDER))


def _register() -> None:
    import importlib

    for name in command_modules():
        for command in getattr(importlib.import_module(f"{__name__}.{name}"), "COMMANDS", []):
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
