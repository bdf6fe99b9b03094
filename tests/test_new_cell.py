"""``rnnzoo new-cell``: the package it writes installs, registers its cell, keeps
the cell contract, trains and shows its gradient flow, all as real processes with
the interpreter of a throw-away virtual environment."""

from __future__ import annotations

import os
import site
import subprocess
import sys
from pathlib import Path

import pytest
from cli_run import rnnzoo

ROOT = Path(__file__).resolve().parents[1]
NAME = "zoo_scaffold_test"


def throwaway_venv(folder: Path) -> Path:
    """A virtual environment whose Python also sees this interpreter's packages
    (rnnzoo, torch, pip, setuptools), so nothing is downloaded; its own
    site-packages come first, so what is installed there goes there."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    own = subprocess.run(
        [str(python), "-c", "import site; print(site.getsitepackages()[0])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    outer = "".join(f"site.addsitedir({p!r}); " for p in site.getsitepackages())
    (Path(own) / "_outer_packages.pth").write_text(f"import site; {outer}\n")
    return python


def run(python: Path, *args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WANDB_SILENT": "true", "WANDB_MODE": "disabled"}
    return subprocess.run(
        [str(python), *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env
    )


@pytest.mark.slow
def test_the_scaffolded_package_installs_checks_trains_and_probes(tmp_path: Path) -> None:
    made = rnnzoo("new-cell", NAME, "--dir", tmp_path)
    assert made.code == 0, made.output
    package = tmp_path / "rnnzoo-zoo-scaffold-test"
    cell_file = package / "rnnzoo_zoo_scaffold_test" / "cell.py"
    assert {"pyproject.toml", "README.md", "experiments"} <= {p.name for p in package.iterdir()}
    source = cell_file.read_text()
    assert "self.activation(z)" in source and "def recurrent_weights" in source
    assert "h' = (1 - a) * h + a * g(z)" in source  # the equations, in the docstring

    python = throwaway_venv(tmp_path / "venv")
    install = run(
        python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", package,
        cwd=tmp_path,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr

    listed = run(python, "-m", "rnnzoo", "list", "cells", cwd=package)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.split()[:1] == [NAME])
    assert row.endswith(f"[{NAME}]")  # the entry point's name is the plugin's
    plugins = run(python, "-m", "rnnzoo", "plugins", cwd=package)
    assert f"entry point '{NAME}' of rnnzoo-zoo-scaffold-test 0.1.0" in plugins.stdout

    checked = run(python, "-m", "rnnzoo", "check-cell", NAME, cwd=package)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "0 failed" in checked.stdout and "passed   activation " in checked.stdout

    tested = run(python, "-m", "pytest", "-q", "-p", "no:cacheprovider", package, cwd=package)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "3 passed" in tested.stdout

    trained = run(
        python, "-m", "rnnzoo", "train", "experiments/adding.yaml", "trainer.steps=30",
        "trainer.eval_every=30", "task.length=20", "task.val_size=64", "trainer.progress=false",
        "gradflow.every=10", "tracking.wandb_mode=disabled", "--run-dir", tmp_path / "run",
        cwd=package,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert (tmp_path / "run" / "gradflow.jsonl").is_file()
    assert "status                       finished" in trained.stdout

    probed = run(
        python, "-m", "rnnzoo", "gradflow", "--configs", f"{NAME},{NAME}:relu", "-T", "12",
        "--seeds", "1", "--hidden-size", "8", "--out", tmp_path / "gradflow", cwd=package,
    )  # fmt: skip
    assert probed.returncode == 0, probed.stderr
    assert f"{NAME}:relu" in probed.stdout and (tmp_path / "gradflow" / "gradflow.json").is_file()


def test_new_cell_refuses_a_taken_name_a_bad_name_and_a_full_folder(tmp_path: Path) -> None:
    taken = rnnzoo("new-cell", "lstm", "--dir", tmp_path)
    assert taken.code == 2 and "A cell called 'lstm' exists already" in taken.err
    bad = rnnzoo("new-cell", "My-Cell", "--dir", tmp_path)
    assert bad.code == 2 and "lower-case letters" in bad.err
    (tmp_path / "rnnzoo-mine" / "x").mkdir(parents=True)
    full = rnnzoo("new-cell", "mine", "--dir", tmp_path)
    assert full.code == 2 and "exists and is not empty" in full.err
    assert list(tmp_path.iterdir()) == [tmp_path / "rnnzoo-mine"]
