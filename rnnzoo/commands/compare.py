"""``rnnzoo compare``: finished runs side by side, offline, from their folders."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("compare")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where compare.md and compare.png go (default: the group folder when one is "
    "given, else ./compare-out).",
)
def compare_command(paths: tuple[Path, ...], out_dir: Path | None) -> None:
    """Compare runs: RUN or GROUP folders (every run folder below a GROUP, such as
    the group folder of `rnnzoo train -m`).

    Runs that differ only in trainer.seed form one configuration; the table has one
    row per configuration: the final and best main metric over seeds (mean ± sd),
    the step of the best evaluation, reach10, reach1000 and decay at the first and
    last gradient-flow probe, tokens/s, and how many runs ended in each status. Runs
    that did not finish, or diverged, are listed and left out of the numbers. Writes
    compare.md and compare.png (the main metric over training, the gradient's reach
    at the first probe, reach10 over training) and prints the table.
    """
    from rnnzoo import compare, compare_plot, compare_report
    from rnnzoo.files import write_text_atomic

    runs = compare.load(list(paths))
    where = ", ".join(f"'{p}'" for p in paths)
    key = compare.check(runs, where)
    confs = compare.configurations(runs)
    rows = [compare.stats(conf, key) for conf in confs]
    budget = compare.budgets(runs)
    if out_dir is None:
        one_group = len(paths) == 1 and not (paths[0] / "config.yaml").is_file()
        out_dir = paths[0] if one_group else Path("compare-out")
    out_dir.mkdir(parents=True, exist_ok=True)
    png = compare_plot.figure(out_dir / "compare.png", confs, key)
    text = compare_report.markdown(confs, rows, key, runs, budget, png.name)
    write_text_atomic(out_dir / "compare.md", text)
    click.echo("\n".join(compare_report.table(confs, rows, key)))
    if budget:
        click.echo(budget)
    left = compare_report.left_out(confs)
    if left:
        click.echo("Left out of the numbers (not finished, or diverged):")
        click.echo("\n".join(left))
    click.echo(f"wrote {out_dir / 'compare.md'} and {png}")
