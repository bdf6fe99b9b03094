"""Commands for cell authors: ``check-cell`` (the contract, rule by rule) and
``new-cell`` (a ready plugin package)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import yaml

from rnnzoo.commands.common import OVERRIDES, plugin_option, registry
from rnnzoo.errors import UsageError


def parse_settings(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``("k=3", "bias=true")`` -> ``{"k": 3, "bias": True}`` (values read as YAML)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(
                f"'{pair}' is not a setting: write KEY=VALUE, for example leak_init=2.0 "
                "(rnnzoo describe NAME lists a cell's settings)."
            )
        out[key.removeprefix("model.cell_args.")] = yaml.safe_load(value)
    return out


@click.command("check-cell", context_settings=OVERRIDES)
@click.argument("name")
@click.argument("settings", nargs=-1, type=click.UNPROCESSED)
@click.option(
    "--activation",
    default="tanh",
    show_default=True,
    help="The activation a cell with an activation parameter receives.",
)
@click.option("--device", default=None, help="cpu or cuda (default: cuda when available).")
@plugin_option
@click.pass_context
def check_cell_command(
    ctx: click.Context,
    name: str,
    settings: tuple[str, ...],
    activation: str,
    device: str | None,
    plugins: tuple[str, ...],
) -> None:
    """Check cell NAME against the cell contract, rule by rule, with its SETTINGS
    (KEY=VALUE). Exit 0 when it keeps every rule, 1 when it breaks one (each broken
    rule is named, with the reason); the same checks as rnnzoo.testing.check_cell."""
    from rnnzoo.cellcheck import cell_contract

    reg = registry(ctx, plugins)
    component = reg.get("cell", name)
    args = component.check_args(parse_settings(settings), "model.cell_args")
    act = reg.get("activation", activation)
    results = cell_contract(
        component.factory, name=name, activation=lambda: act.factory(), device=device, **args
    )
    click.echo(f"cell '{name}' from plugin '{component.plugin}' ({reg.origin(component.plugin)})")
    width = max(len(r.rule) for r in results)
    for r in results:
        colour = {True: "green", False: "red", None: None}[r.passed]
        click.echo(f"  {click.style(f'{r.status:<7}', fg=colour)}  {r.rule:<{width}}  {r.detail}")
    counts = {s: sum(r.status == s for r in results) for s in ("passed", "FAILED", "skipped")}
    summary = f"{counts['passed']} passed, {counts['FAILED']} failed, {counts['skipped']} skipped"
    if counts["FAILED"]:
        click.secho(f"{summary}: '{name}' breaks the cell contract.", fg="red", err=True)
        ctx.exit(1)
    click.echo(f"{summary}: '{name}' keeps the cell contract.")


@click.command("new-cell")
@click.argument("name")
@click.option(
    "--dir",
    "parent",
    type=click.Path(file_okay=False),
    default=".",
    show_default=True,
    help="Folder to write the package folder rnnzoo-NAME into.",
)
@plugin_option
@click.pass_context
def new_cell_command(ctx: click.Context, name: str, parent: str, plugins: tuple[str, ...]) -> None:
    """Write a pip-installable plugin package for a new cell NAME: pyproject.toml
    with the rnnzoo entry point, the cell (equations in its docstring, the injected
    activation, recurrent_weights()), tests built on rnnzoo.testing, an experiment
    and a README. Edit the equations, then pip install -e the folder."""
    from rnnzoo.scaffold import names, write_package

    names(name)  # a bad name fails before the registry loads
    taken = [c for c in registry(ctx, plugins).find(name) if c.kind == "cell"]
    if taken:
        raise UsageError(
            f"A cell called '{name}' exists already (plugin '{taken[0].plugin}'): cell names "
            "are global, so pick another."
        )
    root, written = write_package(name, Path(parent))
    click.echo(f"wrote {root}/")
    for path in written:
        click.echo(f"  {path.relative_to(root)}")
    click.echo(
        f"next: pip install -e {root} && rnnzoo check-cell {name} && pytest {root}\n"
        f"      then edit {root / names(name)['module'] / 'cell.py'}: the equations are in "
        "its docstring"
    )
