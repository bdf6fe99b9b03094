"""``rnnzoo gradflow``: the vanishing gradient at initialisation, per cell."""

from __future__ import annotations

from pathlib import Path

import click

from rnnzoo.commands.common import plugin_option, registry


@click.command("gradflow")
@click.option(
    "--configs",
    default="elman:tanh,elman:relu,irnn,lstm,gru",
    show_default=True,
    help="Comma-separated CELL or CELL:ACTIVATION (any registered cell).",
)
@click.option(
    "--length",
    "-T",
    default=100,
    show_default=True,
    help="The task's length parameter (the sequence length T of the adding problem).",
)
@click.option("--hidden-size", default=64, show_default=True)
@click.option("--seeds", default=3, show_default=True, help="Seeds per configuration.")
@click.option("--task", "task_name", default="adding", show_default=True)
@click.option(
    "--train-steps", default=0, show_default=True, help="Train this many steps before measuring."
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default="gradflow-out",
    show_default=True,
)
@plugin_option
@click.pass_context
def gradflow_command(
    ctx: click.Context,
    configs: str,
    length: int,
    hidden_size: int,
    seeds: int,
    task_name: str,
    train_steps: int,
    out_dir: str,
    plugins: tuple[str, ...],
) -> None:
    """The vanishing gradient, measured: ||dL_T/dh_t|| against the distance T - t
    for each configuration, averaged over seeds. Prints reach10 and reach1000 (steps
    back until the gradient has shrunk 10x and 1000x) and the decay (slope of its
    natural log per step); writes gradflow.png and gradflow.json to --out."""
    from rnnzoo.gradflow_demo import run_demo

    rows = run_demo(
        registry(ctx, plugins),
        [c.strip() for c in configs.split(",") if c.strip()],
        length=length,
        hidden_size=hidden_size,
        seeds=seeds,
        task=task_name,
        train_steps=train_steps,
        out_dir=Path(out_dir),
    )
    when = "at initialisation" if train_steps == 0 else f"after {train_steps} training steps"
    click.echo(f"{task_name}, length {length}, hidden size {hidden_size}, {seeds} seed(s), {when}:")
    click.echo(f"{'configuration':<16} {'reach10':>8} {'reach1000':>10} {'decay/step':>11}")
    for label, row in rows.items():
        click.echo(
            f"{label:<16} {row['reach10']:>8.1f} {row['reach1000']:>10.1f} {row['decay']:>11.4f}"
        )
    click.echo(f"wrote {Path(out_dir) / 'gradflow.png'} and {Path(out_dir) / 'gradflow.json'}")
