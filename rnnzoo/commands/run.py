"""Commands that train and use trained runs: ``train``, ``eval`` and ``sample``."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import click

from rnnzoo import config
from rnnzoo.commands.common import OVERRIDES, cli_plugins, plugin_option, registry
from rnnzoo.errors import DivergedError, UsageError
from rnnzoo.tracking import choose_run_id


def default_run_dir(cfg: Any, run_id: str) -> Path:
    """``runs/NAME-TIME-RUNID``: unique even for runs started in the same second."""
    name = cfg.tracking.name or f"{cfg.task.name}-{cfg.model.cell}"
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{run_id}"


def _print_summary(summary: dict[str, Any], run_dir: Path) -> None:
    click.secho(f"\nrun folder: {run_dir}", bold=True)
    for key, value in summary.items():
        text = f"{value:.6g}" if isinstance(value, float) else str(value)
        click.echo(f"  {key:<28} {text}")


@click.command(context_settings=OVERRIDES)
@click.argument("experiment", type=click.Path(dir_okay=False), required=False)
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@click.option(
    "--resume",
    "resume",
    type=click.Path(file_okay=False),
    help="Continue the run in this folder from its last checkpoint.",
)
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False),
    help="Folder for this run (default runs/NAME-TIME).",
)
@click.option("-m", "--multirun", is_flag=True, help="Train every combination of key=a,b values.")
@click.option("--jobs", type=int, default=1, help="With -m: runs trained at once (default 1).")
@plugin_option
@click.pass_context
def train(
    ctx: click.Context,
    experiment: str | None,
    overrides: tuple[str, ...],
    resume: str | None,
    run_dir: str | None,
    multirun: bool,
    jobs: int,
    plugins: tuple[str, ...],
) -> None:
    """Train EXPERIMENT (a YAML file) with key=value OVERRIDES.

    With --resume RUN_DIR the run continues from its last checkpoint with its own
    config.yaml (OVERRIDES still apply, e.g. trainer.steps=3000 to train longer).
    Ctrl-C finishes the current step, writes a checkpoint and stops.

    With -m, overrides such as model.cell=lstm,gru trainer.seed=0,1 make a grid:
    every combination trains in its own process and run folder, --jobs at a time,
    under one group folder (--run-dir names it; see docs/comparing-cells.md).
    """
    from rnnzoo.training import Trainer

    if jobs != 1 and not multirun:
        raise UsageError("--jobs sets how many runs of a grid train at once; add -m.")
    if multirun:
        from rnnzoo.commands.multirun import run_grid

        return run_grid(ctx, experiment, overrides, resume, run_dir, plugins, jobs)

    run_id = choose_run_id()
    if resume is not None:
        if run_dir is not None:
            raise UsageError("--resume continues a run in its own folder; leave out --run-dir.")
        folder = Path(resume)
        saved = folder / "config.yaml"
        if not saved.is_file():
            raise UsageError(
                f"'{folder}' is not an rnnzoo run folder (no config.yaml). Pass the folder "
                "a previous `rnnzoo train` wrote."
            )
        if experiment is not None:
            overrides = (experiment, *overrides)  # `train --resume DIR key=value`
        cfg = config.load(saved, overrides)
    else:
        if experiment is None:
            raise UsageError("Name an experiment file: rnnzoo train experiments/adding.yaml")
        cfg = config.load(experiment, overrides)
        folder = Path(run_dir or cfg.run_dir or default_run_dir(cfg, run_id))
    reg = registry(ctx, [*plugins, *cfg.plugins])
    # keep `-p` plugins in the run's config.yaml, so `--resume`, `eval` and
    # `sample` find them without repeating the option
    for spec in cli_plugins(ctx, plugins):
        recorded = str(Path(spec).resolve()) if spec.endswith(".py") else spec
        if recorded not in cfg.plugins:
            cfg.plugins.append(recorded)
    summary = Trainer(cfg, reg, folder, resume=resume is not None, run_id=run_id).fit()
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
        _print_summary(summary, folder)
    if summary.get("status") == "diverged":
        raise DivergedError(
            f"Training diverged: the run in '{folder}' stopped on non-finite values "
            "(summary.json says status: diverged). See the message above for the "
            "checkpoint to resume from with a lower optim.lr."
        )


@click.command("eval", context_settings=OVERRIDES)
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@plugin_option
@click.pass_context
def eval_command(
    ctx: click.Context, run_dir: str, overrides: tuple[str, ...], plugins: tuple[str, ...]
) -> None:
    """Evaluate the latest checkpoint of RUN_DIR on the task's validation data
    (OVERRIDES may point the task at other data); prints the metrics next to the
    task's trivial baseline and writes them to RUN_DIR/eval.json."""
    from rnnzoo.files import write_json
    from rnnzoo.training import load_run
    from rnnzoo.training.device import autocast
    from rnnzoo.training.evaluate import evaluate

    run = load_run(run_dir, overrides, cli_plugins(ctx, plugins))
    t = run.cfg.trainer
    amp = lambda: autocast(run.device, t.precision)  # noqa: E731
    metrics = {"step": float(run.step)}
    metrics.update(evaluate(run.model, run.task, t.batch_size, run.device, None, amp))
    metrics.update({f"baseline/{k}": v for k, v in run.task.baseline().items()})
    for key, value in metrics.items():  # the finished work first, whatever the folder allows
        click.echo(f"{key:<20} {value:.6g}")
    target = Path(run_dir) / "eval.json"
    try:
        write_json(target, metrics)
    except OSError as exc:
        click.echo(
            f"rnnzoo: warning: could not write '{target}': {exc.strerror or exc}; the "
            "metrics above are all there is.",
            err=True,
        )


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--prompt", default="", help="Text to continue.")
@click.option("--length", default=200, show_default=True, help="Tokens to generate.")
@click.option("--temperature", default=1.0, show_default=True, help="Below 1: more conservative.")
@click.option("--top-k", type=int, default=None, help="Sample only from the k most likely tokens.")
@click.option("--seed", type=int, default=0, show_default=True)
@plugin_option
@click.pass_context
def sample(
    ctx: click.Context,
    run_dir: str,
    prompt: str,
    length: int,
    temperature: float,
    top_k: int | None,
    seed: int,
    plugins: tuple[str, ...],
) -> None:
    """Continue PROMPT with a trained language model."""
    import torch

    from rnnzoo.training import load_run

    run = load_run(run_dir, (), cli_plugins(ctx, plugins))
    sample_from = getattr(run.model.head, "sample", None)
    if sample_from is None:
        raise UsageError(
            f"The run in '{run_dir}' uses head '{run.cfg.model.head}', which cannot "
            "sample; train with model.head=lm."
        )
    if not 0 < temperature < math.inf or length < 1 or (top_k is not None and top_k < 1):
        raise UsageError(
            "--temperature must be positive and finite (1 samples the model as it is); "
            "--length and --top-k at least 1."
        )
    ids = run.task.encode(prompt) if prompt else [0]
    generator = torch.Generator().manual_seed(seed)
    out = sample_from(run.model, ids, length, temperature, top_k, generator)
    click.echo(run.task.decode(ids + out) if prompt else run.task.decode(out))
