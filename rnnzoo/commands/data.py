"""``rnnzoo data list`` and ``rnnzoo data fetch``: the datasets of the example
experiments, downloaded once into the data folder and checked against pinned SHA-256s."""

from __future__ import annotations

import sys

import click

from rnnzoo.datasets import (
    DATASETS,
    PREFIX,
    DataFile,
    Dataset,
    data_root,
    dataset,
    path_of,
    url_of,
    where_root,
)
from rnnzoo.download import TIMEOUT, download, sha256_of, size_text


@click.group("data")
def data_group() -> None:
    """The datasets the experiments name (data:DATASET/FILE): list and fetch them.

    Files live in the data folder: RNNZOO_DATA, else ~/.cache/rnnzoo. Training
    never downloads; `rnnzoo data fetch DATASET` does, once.
    """


def _status(d: Dataset, f: DataFile, verify: bool) -> str:
    path = path_of(d, f)
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != f.size:
        return f"differs ({size:,} bytes, not {f.size:,}): rnnzoo data fetch {d.name} --force"
    if not verify:
        return "cached"
    if sha256_of(path) != f.sha256:
        return f"differs (SHA-256): rnnzoo data fetch {d.name} --force"
    return "cached, SHA-256 OK"


@data_group.command("list")
@click.option("--verify", is_flag=True, help="Also check the SHA-256 of every cached file.")
def list_command(verify: bool) -> None:
    """The known datasets: their files, sizes, licences, and whether they are cached."""
    click.echo(f"data folder: {where_root()}")
    for d in DATASETS.values():
        click.echo()
        click.secho(f"{d.name}: {d.title}", bold=True)
        click.echo(f"  licence: {d.licence}; source: {d.source}")
        width = max(len(f.name) for f in d.files) + len(d.folder) + 1
        statuses = [_status(d, f, verify) for f in d.files]
        for f, status in zip(d.files, statuses, strict=True):
            click.echo(f"  {d.folder + '/' + f.name:<{width}}  {size_text(f.size):>8}  {status}")
        click.echo(f"  in an experiment: task.train={PREFIX}{d.name}/{d.files[0].name}")
        if "missing" in statuses:
            click.echo(f"  to fetch: rnnzoo data fetch {d.name}")


@data_group.command("fetch")
@click.argument("names", nargs=-1, required=True, metavar="DATASET...")
@click.option("--force", is_flag=True, help="Download again even if the files are cached.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=TIMEOUT,
    show_default=True,
    help="Seconds to wait for the server to connect or send more data.",
)
def fetch_command(names: tuple[str, ...], force: bool, timeout: float) -> None:
    """Download datasets into the data folder and check their SHA-256.

    A file is saved under its name only once its checksum matches; cached files
    that match are kept (--force downloads them again). RNNZOO_DATA_URL names a
    mirror laid out like the data folder (URL/FOLDER/FILE).
    """
    chosen = [dataset(name) for name in dict.fromkeys(names)]  # all names, before any download
    bar = sys.stderr.isatty()
    for d in chosen:
        folder = data_root() / d.folder
        todo = []
        for f in d.files:
            path = path_of(d, f)
            if force or not path.is_file():
                todo.append(f)
            elif sha256_of(path) != f.sha256:
                click.echo(f"{d.name}: '{path}' does not match its SHA-256; fetching it again.")
                todo.append(f)
        if not todo:
            click.echo(
                f"{d.name}: already in '{folder}' ({len(d.files)} file(s), SHA-256 OK); "
                "nothing to do. --force downloads it again."
            )
            continue
        for f in todo:
            url = url_of(d, f)
            click.echo(f"{d.name}: downloading {url} ({size_text(f.size)})")
            download(url, path_of(d, f), f.size, f.sha256, timeout, bar)
            click.echo(f"{d.name}: saved '{path_of(d, f)}' (SHA-256 OK)")
        click.echo(f"{d.name}: ready in '{folder}' (licence: {d.licence}).")
