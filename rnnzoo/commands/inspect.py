"""Commands that inspect: ``list``, ``describe``, ``plugins`` and ``config``."""

from __future__ import annotations

import fnmatch
import textwrap

import click

from rnnzoo import config
from rnnzoo.activation import Activation
from rnnzoo.commands.common import OVERRIDES, cli_plugins, plugin_option, registry
from rnnzoo.errors import UsageError, did_you_mean
from rnnzoo.plugins import PluginManager, plugin_manager
from rnnzoo.registry import KINDS, Component

PLURALS = {plural: kind for kind, (_, plural) in KINDS.items()}


SUMMARY_WIDTH = 72


def _summary(c: Component) -> str:
    return textwrap.shorten(c.summary, SUMMARY_WIDTH, placeholder=" ...")


@click.command("list")
@click.argument("kind", required=False, type=click.Choice(sorted(PLURALS)))
@click.option("--filter", "pattern", default="*", help="Glob on names, e.g. 'clip_*'.")
@plugin_option
@click.pass_context
def list_command(
    ctx: click.Context, kind: str | None, pattern: str, plugins: tuple[str, ...]
) -> None:
    """List registered components (all kinds, or one), with their plugin."""
    reg = registry(ctx, plugins)
    shown = 0
    for plural in [kind] if kind else sorted(PLURALS):
        rows = [c for c in reg.components(PLURALS[plural]) if fnmatch.fnmatch(c.name, pattern)]
        if not rows and kind is None:
            continue
        click.secho(f"{plural}:", bold=True)
        for c in rows:
            click.echo(f"  {c.name:<16} {_summary(c)}  [{c.plugin}]")
        shown += len(rows)
    if not shown:
        click.echo(f"Nothing matches '{pattern}'.", err=True)


def _describe(c: Component, origin: str) -> str:
    lines = [
        f"{c.name} ({c.kind})",
        f"plugin: {c.plugin} ({origin})",
        "",
        c.doc,
        "",
        "parameters:",
    ]
    params = c.params()
    if not params:
        lines.append("  (none)")
    for p in params:
        default = "required" if p.required else f"default {p.default!r}"
        lines.append(f"  {p.name}: {p.type_name} ({default})")
    if c.kind == "activation" and not any(p.required for p in params):
        built = c.build({}, "model.activation_args")
        if isinstance(built, Activation):
            lines += ["", f"gradient flow (default settings): {built.amplification_note()}"]
    return "\n".join(lines)


@click.command()
@click.argument("name")
@plugin_option
@click.pass_context
def describe(ctx: click.Context, name: str, plugins: tuple[str, ...]) -> None:
    """Show a component's kind, plugin, documentation and parameters."""
    reg = registry(ctx, plugins)
    found = reg.find(name)
    if not found:
        every = {n for kind in KINDS for n in reg.names(kind)}
        raise UsageError(
            f"No component is called '{name}'.{did_you_mean(name, every)} (see: rnnzoo list)"
        )
    click.echo("\n\n".join(_describe(c, reg.origin(c.plugin)) for c in found))


@click.command("plugins")
@plugin_option
@click.pass_context
def plugins_command(ctx: click.Context, plugins: tuple[str, ...]) -> None:
    """List loaded plugins: name, where they came from, and their file."""
    pm: PluginManager = plugin_manager(cli_plugins(ctx, plugins))
    rows = [
        (
            name,
            pm.origins.get(name, "registered directly"),
            getattr(plugin, "__file__", repr(plugin)),
        )
        for name, plugin in pm.list_name_plugin()
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    for name, origin, where in rows:
        click.echo(f"{name:<{widths[0]}}  {origin:<{widths[1]}}  {where}")


@click.command("config", context_settings=OVERRIDES)
@click.argument("experiment", type=click.Path(dir_okay=False), required=False)
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@plugin_option
@click.pass_context
def config_command(
    ctx: click.Context, experiment: str | None, overrides: tuple[str, ...], plugins: tuple[str, ...]
) -> None:
    """Print the resolved and validated config of EXPERIMENT with OVERRIDES."""
    from rnnzoo.build import validate

    cfg = config.load(experiment, overrides)
    validate(cfg, registry(ctx, [*plugins, *cfg.plugins]))
    click.echo(config.to_yaml(cfg, resolve=True), nl=False)
