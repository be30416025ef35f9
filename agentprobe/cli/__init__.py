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
    from ..store import db

    db.OPENED.clear()
    try:
        rv = cli.main(args=argv, prog_name="agentprobe", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.NoArgsIsHelpError as e:  # `agentprobe` alone asks for the help, not a mistake
        click.echo(e.ctx.get_help())
        sys.exit(0)
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
    except Exception as e:
        problem = damaged_database(e)
        if problem is None:
            raise  # not explained by bad input: a bug of ours, with its traceback
        click.echo(f"agentprobe: error: {problem}", err=True)
        sys.exit(2)
    sys.exit(rv if isinstance(rv, int) else 0)


def damaged_database(error: Exception) -> str | None:
    """The one line for a command that failed on a damaged database it opened, else None.

    SQLite's own verdict (corrupt, not a database; locked, unreadable, disk full) names the file; any
    other failure is looked into (integrity, schema, value types of every database the command
    opened) and blamed on the data only when the data is found wrong.
    """
    import sqlite3

    from ..store import db, health

    opened = [p for p in db.OPENED if p.exists()]
    if not opened:
        return None
    code = health.primary_code(error) if isinstance(error, sqlite3.Error) else None
    for path in opened:
        problem = health.diagnose(path)
        if problem:
            return problem + (f" (it stopped the command: {type(error).__name__})" if code is None else "")
    where = opened[0] if len(opened) == 1 else ", ".join(map(str, opened))
    if code in health.DAMAGE_CODES:
        return f"{where}: {error}: {health.recover_hint(opened[0])}"
    if code in health.ENVIRONMENT_CODES:
        return f"cannot use {where}: {error}"
    return None
