"""The ``rnnzoo`` command line."""

from __future__ import annotations

import copy
import fnmatch
import sys
import textwrap
import time
import traceback
from pathlib import Path
from typing import Any

import click

from rnnzoo import __version__, config
from rnnzoo.errors import RnnzooError, UsageError, did_you_mean
from rnnzoo.plugins import PluginManager, plugin_manager
from rnnzoo.registry import KINDS, Component, Registry

PLURALS = {plural: kind for kind, (_, plural) in KINDS.items()}
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


def _registry(ctx: click.Context, extra: tuple[str, ...] | list[str] = ()) -> Registry:
    names = list(ctx.obj.get("plugins", ())) + list(extra)
    return Registry(plugin_manager(names))


def _load_config(
    path: str | Path | None, overrides: tuple[str, ...] | list[str]
) -> tuple[Any, list[str]]:
    """The config and the plugins it names (relative paths already resolved)."""
    cfg = config.load(path, overrides)
    return cfg, list(cfg.plugins)


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


# -- inspection ----------------------------------------------------------------


SUMMARY_WIDTH = 72


def _summary(c: Component) -> str:
    return textwrap.shorten(c.summary, SUMMARY_WIDTH, placeholder=" ...")


@cli.command("list")
@click.argument("kind", required=False, type=click.Choice(sorted(PLURALS)))
@click.option("--filter", "pattern", default="*", help="Glob on names, e.g. 'clip_*'.")
@plugin_option
@click.pass_context
def list_command(
    ctx: click.Context, kind: str | None, pattern: str, plugins: tuple[str, ...]
) -> None:
    """List registered components (all kinds, or one), with their plugin."""
    registry = _registry(ctx, plugins)
    shown = 0
    for plural in [kind] if kind else sorted(PLURALS):
        rows = [c for c in registry.components(PLURALS[plural]) if fnmatch.fnmatch(c.name, pattern)]
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
    return "\n".join(lines)


@cli.command()
@click.argument("name")
@plugin_option
@click.pass_context
def describe(ctx: click.Context, name: str, plugins: tuple[str, ...]) -> None:
    """Show a component's kind, plugin, documentation and parameters."""
    registry = _registry(ctx, plugins)
    found = registry.find(name)
    if not found:
        every = {n for kind in KINDS for n in registry.names(kind)}
        raise UsageError(
            f"No component is called '{name}'.{did_you_mean(name, every)} (see: rnnzoo list)"
        )
    click.echo("\n\n".join(_describe(c, registry.origin(c.plugin)) for c in found))


@cli.command("plugins")
@plugin_option
@click.pass_context
def plugins_command(ctx: click.Context, plugins: tuple[str, ...]) -> None:
    """List loaded plugins: name, where they came from, and their file."""
    pm: PluginManager = plugin_manager(list(ctx.obj.get("plugins", ())) + list(plugins))
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


@cli.command("config", context_settings=OVERRIDES)
@click.argument("experiment", type=click.Path(dir_okay=False), required=False)
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@plugin_option
@click.pass_context
def config_command(
    ctx: click.Context, experiment: str | None, overrides: tuple[str, ...], plugins: tuple[str, ...]
) -> None:
    """Print the resolved and validated config of EXPERIMENT with OVERRIDES."""
    from rnnzoo.build import validate

    cfg, extra = _load_config(experiment, overrides)
    validate(cfg, _registry(ctx, list(plugins) + extra))
    click.echo(config.to_yaml(cfg), nl=False)


# -- training and evaluation -----------------------------------------------------


def _default_run_dir(cfg: Any) -> Path:
    name = cfg.tracking.name or f"{cfg.task.name}-{cfg.model.cell}"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path("runs") / f"{name}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = Path("runs") / f"{name}-{stamp}-{n}"
    return path


def _print_summary(summary: dict[str, float], run_dir: Path) -> None:
    click.secho(f"\nrun folder: {run_dir}", bold=True)
    for key, value in summary.items():
        text = f"{value:.6g}" if isinstance(value, float) else str(value)
        click.echo(f"  {key:<28} {text}")


@cli.command(context_settings=OVERRIDES)
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
@plugin_option
@click.pass_context
def train(
    ctx: click.Context,
    experiment: str | None,
    overrides: tuple[str, ...],
    resume: str | None,
    run_dir: str | None,
    plugins: tuple[str, ...],
) -> None:
    """Train EXPERIMENT (a YAML file) with key=value OVERRIDES.

    With --resume RUN_DIR the run continues from its last checkpoint with its own
    config.yaml (OVERRIDES still apply, e.g. trainer.steps=3000 to train longer).
    Ctrl-C finishes the current step, writes a checkpoint and stops.
    """
    from rnnzoo.trainer import Trainer

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
        cfg, extra = _load_config(saved, overrides)
    else:
        if experiment is None:
            raise UsageError("Name an experiment file: rnnzoo train experiments/adding.yaml")
        cfg, extra = _load_config(experiment, overrides)
        folder = Path(run_dir or cfg.run_dir or _default_run_dir(cfg))
        if (folder / "config.yaml").exists():
            raise UsageError(
                f"'{folder}' already holds a run; a new one would mix its checkpoints and "
                f"metrics with it. Continue it with `rnnzoo train --resume {folder}`, or "
                "pass another --run-dir."
            )
    registry = _registry(ctx, list(plugins) + extra)
    # keep `-p` plugins in the run's config.yaml, so `--resume`, `eval` and
    # `sample` find them without repeating the option
    for spec in [*ctx.obj.get("plugins", ()), *plugins]:
        recorded = str(Path(spec).resolve()) if spec.endswith(".py") else spec
        if recorded not in cfg.plugins:
            cfg.plugins.append(recorded)
    trainer = Trainer(cfg, registry, folder, resume=resume is not None)
    summary = trainer.fit()
    _print_summary(summary, folder)


def _trained(
    ctx: click.Context, run_dir: str, overrides: tuple[str, ...], plugins: tuple[str, ...]
) -> Any:
    from rnnzoo.trainer import Trainer

    folder = Path(run_dir)
    saved = folder / "config.yaml"
    if not saved.is_file():
        raise UsageError(f"'{folder}' is not an rnnzoo run folder (no config.yaml).")
    cfg, extra = _load_config(saved, overrides)
    return Trainer(cfg, _registry(ctx, list(plugins) + extra), folder, resume=True)


@cli.command("eval", context_settings=OVERRIDES)
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
    from rnnzoo.tracking import write_json

    trainer = _trained(ctx, run_dir, overrides, plugins)
    metrics = {"step": float(trainer.step), **trainer.evaluate()}
    metrics.update({f"baseline/{k}": v for k, v in trainer.task.baseline().items()})
    write_json(Path(run_dir) / "eval.json", metrics)
    for key, value in metrics.items():
        click.echo(f"{key:<20} {value:.6g}")


@cli.command()
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

    trainer = _trained(ctx, run_dir, (), plugins)
    head = trainer.model.head
    if not hasattr(head, "sample"):
        raise UsageError(
            f"The run in '{run_dir}' uses head '{trainer.cfg.model.head}', which cannot "
            "sample; train with model.head=lm."
        )
    if temperature <= 0 or length < 1 or (top_k is not None and top_k < 1):
        raise UsageError("--temperature must be positive; --length and --top-k at least 1.")
    ids = trainer.task.encode(prompt) if prompt else [0]
    generator = torch.Generator().manual_seed(seed)
    trainer.model.eval()
    out = head.sample(trainer.model, ids, length, temperature, top_k, generator)
    click.echo(trainer.task.decode(ids + out) if prompt else trainer.task.decode(out))


@cli.command("gradflow")
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

    registry = _registry(ctx, plugins)
    rows = run_demo(
        registry,
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


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; rnnzoo's own errors become one paragraph and an exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    # plugin commands go on a copy, so one process can run main() many times
    app = copy.copy(cli)
    app.commands = dict(cli.commands)
    try:
        plugin_manager(_early_plugins(args)).hook.rnnzoo_add_commands(cli=app)
        code = app.main(args=args, prog_name="rnnzoo", standalone_mode=False)
    except RnnzooError as exc:
        if debug:
            traceback.print_exc()
        click.secho(f"Error: {exc}", fg="red", err=True)
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
        )
        sys.exit(1)
    if isinstance(code, int) and code:  # ctx.exit(N) under standalone_mode=False
        sys.exit(code)
