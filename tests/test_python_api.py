"""Training from Python: rnnzoo.train, rnnzoo.load_run, plain-tensor inputs, and
the runnable examples of docs/python-api.md."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import rnnzoo
from rnnzoo.task import Batch
from rnnzoo.training.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "task.length=12",
    "task.val_size=32",
    "model.hidden_size=8",
    "trainer.steps=6",
    "trainer.eval_every=3",
    "trainer.log_every=2",
    "trainer.batch_size=8",
    "trainer.progress=false",
    "gradflow.every=3",
    "tracking.wandb_mode=disabled",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> rnnzoo.api.RunResult:
    run_dir = tmp_path_factory.mktemp("api") / "run"
    return rnnzoo.train(
        ROOT / "experiments" / "adding.yaml", [*TINY, "model.cell=gru"], run_dir=run_dir
    )


def test_train_returns_the_summary_history_and_folder(trained: rnnzoo.api.RunResult) -> None:
    assert trained.summary == json.loads((trained.run_dir / "summary.json").read_text())
    rows = [json.loads(line) for line in (trained.run_dir / "metrics.jsonl").open()]
    assert trained.history == rows
    assert [step for step, _ in trained.metric("val/mse")] == [3, 6]
    assert trained.metric("val/mse")[-1][1] == trained.summary["val/mse"]
    assert "model:\n  cell: gru" in (trained.run_dir / "config.yaml").read_text()


def test_load_run_gives_the_trained_model(trained: rnnzoo.api.RunResult) -> None:
    run = rnnzoo.load_run(trained.run_dir)
    assert run.step == 6 and run.cfg.model.cell == "gru" and not run.model.training
    saved = torch.load(trained.run_dir / "checkpoints" / "ckpt-00000006.pt", weights_only=True)[
        "model"
    ]
    for name, value in run.model.state_dict().items():
        torch.testing.assert_close(value, saved[name], rtol=0, atol=0)
    metrics = evaluate(run.model, run.task, run.cfg.trainer.batch_size, run.device)
    assert metrics["val/mse"] == pytest.approx(trained.summary["val/mse"], rel=1e-6)
    before = sorted(p.name for p in trained.run_dir.rglob("*"))
    rnnzoo.load_run(trained.run_dir)
    assert sorted(p.name for p in trained.run_dir.rglob("*")) == before


def test_a_model_takes_a_plain_tensor_as_well_as_a_batch(trained: rnnzoo.api.RunResult) -> None:
    run = rnnzoo.load_run(trained.run_dir)
    batch = next(iter(run.task.val_batches(4)))
    from_batch = run.model(batch).predictions
    from_tensor = run.model(batch.inputs).predictions
    torch.testing.assert_close(from_tensor, from_batch, rtol=0, atol=0)
    assert isinstance(batch, Batch)


def test_train_refuses_a_folder_that_holds_a_run(trained: rnnzoo.api.RunResult) -> None:
    with pytest.raises(rnnzoo.errors.UsageError, match="already holds a run"):
        rnnzoo.train(None, TINY, run_dir=trained.run_dir)


def code_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), re.S)


def test_the_python_api_doc_runs_as_written(tmp_path: Path) -> None:
    """Each example of docs/python-api.md, run from a folder holding the
    experiments, as a reader would paste it."""
    blocks = code_blocks(ROOT / "docs" / "python-api.md")
    assert len(blocks) >= 2
    (tmp_path / "experiments").symlink_to(ROOT / "experiments")
    outputs = []
    for block in blocks:
        result = subprocess.run(
            [sys.executable, "-c", block],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
            env={"PATH": "/usr/bin:/bin", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"},
        )
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    assert all("torch.Size([4, 1])" in out for out in outputs)
    assert re.search(r"^\[\(20, [0-9.e-]+\), \(40, [0-9.e-]+\)\]$", outputs[0], re.M)
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("adding-gru-")
    assert (runs[0] / "summary.json").is_file()
