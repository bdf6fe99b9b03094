"""Comparing cells: the recipe of docs/comparing-cells.md, tiny.

One ``rnnzoo train -m`` trains the variants lstm and elman-relu over two seeds,
two at a time, as real processes with W&B offline; ``rnnzoo compare`` on the
group folder writes compare.md, whose every number is recomputed here from the
run folders' own files, and compare.png; each run's offline W&B log holds its
gradient-flow tables. Runs of two tasks, unfinished runs and budgets are checked
on copies of them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_run import rnnzoo
from jsonl import read_jsonl
from wandb_records import logged_tables, read_run, rows_by_step, run_files

from rnnzoo.compare import Run, budgets, configurations
from rnnzoo_plugins.gradflow_table import COLUMNS, TABLE

ROOT = Path(__file__).resolve().parents[1]
ADDING = ROOT / "experiments" / "adding.yaml"
RNNZOO = Path(sys.executable).with_name("rnnzoo")
#: the grid of the docs' recipe, tiny
TINY = [
    "task.length=8",
    "task.val_size=32",
    "model.hidden_size=4",
    "trainer.steps=6",
    "trainer.eval_every=3",
    "trainer.log_every=3",
    "gradflow.every=3",
    "trainer.batch_size=8",
    "trainer.progress=false",
]
#: the variants of experiments/adding.yaml the tiny grid trains, and their cells
VARIANTS = {"lstm": ("lstm", "tanh"), "elman-relu": ("elman", "relu")}
NAMES = ["0-variant=lstm,seed=0", "1-variant=lstm,seed=1"]
NAMES += ["2-variant=elman-relu,seed=0", "3-variant=elman-relu,seed=1"]


def cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``rnnzoo ARGS`` as a process in ``cwd``, W&B offline with its files in ``cwd``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    env |= {"WANDB_DIR": str(cwd / "wandb-dir"), "WANDB_CACHE_DIR": str(cwd / "wandb-cache")}
    env.pop("WANDB_SWEEP_ID", None)
    return subprocess.run(
        [str(RNNZOO), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
    )


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The group folder of the tiny grid, and what the command printed."""
    cwd = tmp_path_factory.mktemp("compare")
    result = cli(
        "train",
        ADDING,
        "-m",
        "variant=lstm,elman-relu",
        "trainer.seed=0,1",
        *TINY,
        "--jobs",
        "2",
        cwd=cwd,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (group,) = (cwd / "runs").iterdir()
    return group, result


def test_the_grid_trains_every_combination_in_its_own_folder(grid) -> None:
    group, result = grid
    assert re.fullmatch(r"multirun-\d{8}-\d{6}-[0-9a-f]{8}", group.name)
    names = NAMES
    assert sorted(p.name for p in group.iterdir() if p.is_dir()) == sorted(names)
    lines = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert len(lines) == 4 and all("\r" not in line for line in result.stdout.splitlines())
    for line in lines:
        assert re.fullmatch(
            r"\[[1-4]/4\] variant=(lstm|elman-relu) trainer\.seed=[01]: finished, "
            r"val/mse [0-9.e+-]+ \(\d+ s\)",
            line,
        ), line
    assert sorted(line[:5] for line in lines) == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]
    assert f"compare them: rnnzoo compare {Path('runs') / group.name}" in result.stdout
    recorded = json.loads((group / "multirun.json").read_text())
    assert recorded["group"] == group.name and recorded["jobs"] == 2
    assert recorded["overrides"][:2] == ["variant=lstm,elman-relu", "trainer.seed=0,1"]
    for name, run in zip(names, recorded["runs"], strict=True):
        assert Path(run["run_dir"]).name == name
        assert (run["status"], run["exit_code"]) == ("finished", 0)
        variant, seed = re.match(r"\d-variant=([\w-]+),seed=(\d)", name).groups()  # type: ignore[union-attr]
        assert run["swept"] == [f"variant={variant}", f"trainer.seed={seed}"]
        config = yaml.safe_load((group / name / "config.yaml").read_text())
        model = config["model"]
        assert (config["variant"], config["trainer"]["seed"]) == (variant, int(seed))
        assert (model["cell"], model["activation"]) == VARIANTS[variant]  # the joint settings
        assert config["tracking"]["group"] == group.name  # one W&B group for the grid
        assert "run folder:" in (group / name / "train.log").read_text()


# -- compare: the numbers, recomputed --------------------------------------------


def table(markdown: str) -> list[dict[str, str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split(" | ")]
    return [
        dict(zip(header, (c.strip() for c in line.strip("|").split(" | ")), strict=True))
        for line in lines[1:]
    ]


def g4(value: float) -> str:
    return f"{value:.4g}"


def expected(runs: list[Path]) -> dict[str, str]:
    """One configuration's row, from its run folders' files."""
    summaries = [json.loads((r / "summary.json").read_text()) for r in runs]
    finals = [s["val/mse"] for s in summaries]
    best_steps = []
    for run in runs:
        evals = [
            (row["val/mse"], row["step"])
            for row in read_jsonl(run / "metrics.jsonl")
            if "val/mse" in row
        ]
        best_steps.append(min(evals)[1])  # mse: lower is better; the first of equals
    probes = [read_jsonl(r / "gradflow.jsonl") for r in runs]

    def first_last(name: str) -> str:
        first = statistics.mean(p[0][f"gradflow/{name}"] for p in probes)
        last = statistics.mean(p[-1][f"gradflow/{name}"] for p in probes)
        return f"{g4(first)} → {g4(last)}"

    speeds = [
        row["perf/tokens_per_s"]
        for r in runs
        for row in read_jsonl(r / "metrics.jsonl")
        if "perf/tokens_per_s" in row
    ]
    return {
        "seeds": str(len(runs)),
        "val/mse (mean ± sd)": f"{g4(statistics.mean(finals))} ± {g4(statistics.stdev(finals))}",
        "best val/mse": g4(statistics.mean(s["best/val/mse"] for s in summaries)),
        "best step": g4(statistics.mean(best_steps)),
        "reach10 (first → last probe)": first_last("reach10"),
        "reach1000 (first → last)": first_last("reach1000"),
        "decay (first → last)": first_last("decay"),
        "tokens/s": f"{statistics.median(speeds):,.0f}",
        "runs": f"finished {len(runs)}",
    }


def test_compare_writes_numbers_checkable_from_the_run_folders(grid) -> None:
    group, _ = grid
    result = cli("compare", group, cwd=group.parent.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    markdown = (group / "compare.md").read_text()
    rows = table(markdown)
    assert [r["configuration"] for r in rows] == ["variant=lstm", "variant=elman-relu"]
    for row, variant in zip(rows, VARIANTS, strict=True):
        runs = sorted(group.glob(f"*-variant={variant},seed=*"))
        assert {k: row[k] for k in expected(runs)} == expected(runs)
    assert "Equal budgets: all runs: trainer.steps=6." in markdown
    assert "Gradient-flow probes: the first at step 3, the last at step 6." in markdown
    assert "![compare.png](compare.png)" in markdown and "Left out" not in markdown
    assert "| configuration | seeds | val/mse (mean ± sd) |" in result.stdout  # the table
    png = (group / "compare.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def test_each_run_logged_its_gradient_flow_tables_to_wandb(grid) -> None:
    """Each run's offline W&B log (in its run folder) carries the run's id, group and
    variant, the main metric's summary of summary.json, and, for every probe, rows of
    the table gradflow/curves that hold the numbers of gradflow.jsonl (a table may
    hold several probes' rows, each row naming its probe's step)."""
    group, _ = grid
    for name in NAMES:
        run = group / name
        (log,) = run_files(run)
        wb = read_run(log)
        summary = json.loads((run / "summary.json").read_text())
        assert wb.run_id == json.loads((run / "run.json").read_text())["run_id"]
        assert (wb.group, wb.config["variant"]) == (group.name, name.split(",")[0].split("=")[1])
        assert wb.summary["val/mse"]["last"] == pytest.approx(summary["val/mse"], rel=1e-12)
        assert wb.summary["val/mse"]["min"] == pytest.approx(summary["best/val/mse"], rel=1e-12)
        cell = VARIANTS[wb.config["variant"]][0]  # what the variant stands for
        assert wb.config["model.cell"] == cell
        probes = {r["step"]: r for r in read_jsonl(run / "gradflow.jsonl")}
        assert {t["columns"] == list(COLUMNS) for _, t in logged_tables(log, TABLE)} == {True}
        logged = rows_by_step(log, TABLE)
        assert sorted(logged) == sorted(probes) == [3, 6]
        for step, rows in logged.items():
            record, T = probes[step], probes[step]["loss_step"]
            assert {(r["step"], r["cell"], r["layer"], r["direction"]) for r in rows} == {
                (step, cell, 0, 0)
            }
            assert {r["curve"] for r in rows} == set(record["grad_h"]) == {"layer0/dir0"}
            rows.sort(key=lambda r: r["t"])
            assert [r["t"] for r in rows] == list(range(8))  # each row once
            assert [r["grad_h"] for r in rows] == record["grad_h"]["layer0/dir0"]
            assert [r["distance"] for r in rows] == [T - t if t <= T else None for t in range(8)]
            last = [r["grad_h_last_loss"] for r in rows if r["t"] <= T]
            assert last == record["grad_h_last_loss"]["layer0/dir0"]


def copy_run(source: Path, target: Path, edit: Any = None, summary: Any = None) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("checkpoints", ".lock", "wandb"))
    if summary is not None:
        path = target / "summary.json"
        data = json.loads(path.read_text())
        summary(data)
        path.write_text(json.dumps(data)) if data else path.unlink()
    return target


def test_unfinished_and_diverged_runs_are_listed_and_left_out(grid, tmp_path: Path) -> None:
    group, _ = grid
    lstm = group / NAMES[0]
    extra = tmp_path / "extra"
    unfinished = copy_run(lstm, extra / "unfinished", summary=lambda d: d.clear())
    diverged = copy_run(lstm, extra / "diverged", summary=lambda d: d.update(status="diverged"))
    result = rnnzoo("compare", group, extra, "--out", tmp_path / "out")
    assert result.code == 0, result.output
    rows = table((tmp_path / "out" / "compare.md").read_text())
    runs = sorted(group.glob("*-variant=lstm,seed=*"))
    assert {k: rows[0][k] for k in expected(runs) if k != "runs"} == {
        k: v for k, v in expected(runs).items() if k != "runs"
    }
    assert rows[0]["runs"] == "finished 2, diverged 1, unfinished 1"
    text = (tmp_path / "out" / "compare.md").read_text()
    assert f"- `{unfinished}` (variant=lstm, seed 0): unfinished" in text
    assert f"- `{diverged}` (variant=lstm, seed 0): diverged" in text
    assert "Left out of the numbers" in result.out


def test_runs_of_two_tasks_are_not_mixed(grid, tmp_path: Path) -> None:
    group, _ = grid
    other = copy_run(
        group / NAMES[0],
        tmp_path / "copy-run",
        summary=lambda d: d.update({"best/val/acc": 0.5}),
    )
    config = yaml.safe_load((other / "config.yaml").read_text())
    config["task"] = {"name": "copy_memory"}
    (other / "config.yaml").write_text(yaml.safe_dump(config))
    result = rnnzoo("compare", group, other)
    assert result.code == 2, result.output
    assert (
        result.err.startswith("Error: The runs have different tasks")
        and result.err.count("\n") == 1
    )
    assert f"copy_memory: {other}" in result.err and f"adding: {group}" in result.err
    assert "Traceback" not in result.output and not (tmp_path / "compare-out").exists()


def test_a_folder_without_finished_runs_is_an_error(grid, tmp_path: Path) -> None:
    group, _ = grid
    copy_run(group / NAMES[2], tmp_path / "g" / "a", summary=lambda d: d.clear())
    result = rnnzoo("compare", tmp_path / "g")
    assert result.code == 2 and "No finished run in" in result.err and "(unfinished)" in result.err
    (tmp_path / "empty").mkdir()
    result = rnnzoo("compare", tmp_path / "empty")
    assert result.code == 2 and "holds no run folder" in result.err


# -- configurations and budgets, from configs alone ---------------------------------


def run(name: str, **config: Any) -> Run:
    flat = {"task.name": "adding", "trainer.seed": 0, "trainer.steps": 100, **config}
    return Run(
        Path(name), {k.replace("__", "."): v for k, v in flat.items()}, {"status": "finished"}
    )


def test_configurations_differ_in_everything_but_the_seed() -> None:
    runs = [
        run("a", model__cell="lstm", trainer__seed=0, tracking__group="x"),
        run("b", model__cell="lstm", trainer__seed=1, tracking__group="y"),
        run("c", model__cell="elman", model__activation="relu"),
    ]
    confs = configurations(runs)
    assert [(c.label, [r.path.name for r in c.runs]) for c in confs] == [
        ("model.cell=lstm model.activation=null", ["a", "b"]),
        ("model.cell=elman model.activation=relu", ["c"]),
    ]
    assert [c.label for c in configurations(runs[:2])] == ["all runs"]


def test_equal_budgets_are_named_and_differing_ones_listed() -> None:
    same = [run("a", trainer__max_time=60), run("b", trainer__max_time=60)]
    assert budgets(same) == "Equal budgets: all runs: trainer.max_time=60, trainer.steps=100."
    assert budgets([run("a"), run("b")]) == "Equal budgets: all runs: trainer.steps=100."
    differ = budgets([run("a", trainer__max_tokens=1000), run("b"), run("c", trainer__steps=5)])
    assert differ == (
        "Budgets differ. trainer.max_tokens differs: 1000 (1 runs: a); null (2 runs: b, c). "
        "trainer.steps differs: 100 (2 runs: a, b); 5 (1 runs: c)."
    )
