"""The ``rnnzoo`` command line: the group, its commands, and error handling."""

from __future__ import annotations

import copy
import os
import sys
import traceback

import click

from rnnzoo import __version__
from rnnzoo.commands import cells, compare, gradflow, inspect, run
from rnnzoo.commands.common import plugin_option
from rnnzoo.commands.data import data_group
from rnnzoo.errors import RnnzooError
from rnnzoo.plugins import plugin_manager


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rnnzoo")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-paragraph errors.")
@plugin_option
@click.pass_context
def cli(ctx: click.Context, debug: bool, plugins: tuple[str, ...]) -> None:
    """rnnzoo: recurrent networks as plugins; see how gradients flow through time."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    ctx.obj["plugins"] = list(plugins)


for command in (
    inspect.list_command,
    inspect.describe,
    inspect.plugins_command,
    inspect.config_command,
    run.train,
    run.eval_command,
    run.sample,
    gradflow.gradflow_command,
    compare.compare_command,
    cells.check_cell_command,
    cells.new_cell_command,
):
    cli.add_command(command)
cli.add_command(data_group)


# -- entry point -----------------------------------------------------------------


def _early_plugins(argv: list[str]) -> list[str]:
    """``-p`` values given before the command, for plugins that add commands."""
    found = []
    for i, arg in enumerate(argv):
        if arg in ("-p", "--plugin") and i + 1 < len(argv):
            found.append(argv[i + 1])
        elif arg.startswith("--plugin="):
            found.append(arg.split("=", 1)[1])
    return found


def _color() -> bool | None:
    """False when ``NO_COLOR`` is set to anything (https://no-color.org), else None:
    click colours a terminal and strips the codes elsewhere."""
    return False if os.environ.get("NO_COLOR") else None


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; rnnzoo's own errors become one paragraph and an exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    color = _color()
    # plugin commands go on a copy, so one process can run main() many times
    app = copy.copy(cli)
    app.commands = dict(cli.commands)
    try:
        plugin_manager(_early_plugins(args)).hook.rnnzoo_add_commands(cli=app)
        code = app.main(args=args, prog_name="rnnzoo", standalone_mode=False, color=color)
    except RnnzooError as exc:
        if debug:
            traceback.print_exc()
        click.secho(f"Error: {exc}", fg="red", err=True, color=color)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo(
            "Interrupted; the last checkpoint is kept (rnnzoo train --resume RUN_DIR).", err=True
        )
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except OSError as exc:  # disk full, a file in the way, permissions: the system's word
        if debug:
            traceback.print_exc()
        where = f" ('{exc.filename}')" if exc.filename else ""
        click.secho(
            f"Error: reading or writing a file failed: {exc.strerror or exc}{where}. Free disk "
            "space or fix the path, then run the command again; a training run keeps its last "
            "checkpoint, so `rnnzoo train --resume RUN_DIR` continues from it.",
            fg="red",
            err=True,
            color=color,
        )
        sys.exit(1)
    if isinstance(code, int) and code:  # ctx.exit(N) under standalone_mode=False
        sys.exit(code)
