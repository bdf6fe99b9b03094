"""What every command shares: the ``-p`` option and the plugin registry."""

from __future__ import annotations

from typing import Any

import click

from rnnzoo.plugins import plugin_manager
from rnnzoo.registry import Registry

#: commands that take ``key=value`` overrides after their arguments
OVERRIDES = {"ignore_unknown_options": True, "allow_extra_args": True}


def plugin_option(f: Any) -> Any:
    return click.option(
        "-p",
        "--plugin",
        "plugins",
        multiple=True,
        metavar="MODULE|FILE.py",
        help="Load an extra plugin module or .py file (repeatable).",
    )(f)


def cli_plugins(ctx: click.Context, extra: tuple[str, ...] | list[str] = ()) -> list[str]:
    """The ``-p`` plugins given before the command and after it."""
    return list(ctx.obj.get("plugins", ())) + list(extra)


def registry(ctx: click.Context, extra: tuple[str, ...] | list[str] = ()) -> Registry:
    return Registry(plugin_manager(cli_plugins(ctx, extra)))
