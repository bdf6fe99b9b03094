"""Tracking: the run folder, metrics.jsonl and the W&B offline run, read back from
the run's own files (W&B is not mocked)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from jsonl import read_jsonl
from wandb_records import payloads, read_run, run_files

from rnnzoo import config
from rnnzoo.files import truncate_jsonl
from rnnzoo.plugins import plugin_manager
from rnnzoo.registry import Registry
from rnnzoo.tracking import Tracker
from rnnzoo.training import Trainer

REGISTRY = Registry(plugin_manager())
KEYS = ["train/loss", "val/loss", "val/mse", "grad/norm_preclip", "clip/rate", "perf/tokens_per_s"]


@pytest.fixture(autouse=True)
def one_thread():
    """Small models run fastest, and identically in every process, on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")


def test_a_training_run_in_wandb(tmp_path, offline):
    run = tmp_path / "run"
    cfg = config.load(
        None,
        [
            "task.length=6",
            "task.val_size=32",
            "model.hidden_size=8",
            "trainer.batch_size=8",
            "trainer.steps=6",
            "trainer.log_every=2",
            "trainer.eval_every=3",
            "trainer.progress=false",
            "gradflow.every=3",
            "controllers.clip_norm.max_norm=0.5",
            "tracking.project=rnnzoo-tests",
            "tracking.group=adding-lstm",
            "tracking.name=tracked",
            "tracking.tags=[smoke]",
        ],
    )
    summary = Trainer(cfg, REGISTRY, run).fit()

    for name in ("config.yaml", "metrics.jsonl", "summary.json", "run.json"):
        assert (run / name).is_file(), name
    assert list((run / "checkpoints").glob("ckpt-*.pt"))
    files = run_files(run)
    assert len(files) == 1
    run_id = json.loads((run / "run.json").read_text())["run_id"]
    assert files[0].name == f"run-{run_id}.wandb"

    wb = read_run(files[0])
    assert wb.run_id == run_id
    assert (wb.project, wb.group, wb.name) == ("rnnzoo-tests", "adding-lstm", "tracked")
    assert {"cell:lstm", "activation:tanh", "controller:clip_norm", "task:adding", "smoke"} <= set(
        wb.tags
    )
    # the config is the flattened experiment config, so the run table groups by model.cell
    assert wb.config["model.cell"] == "lstm"
    assert wb.config["controllers.clip_norm.max_norm"] == 0.5
    assert wb.config["trainer.steps"] == 6
    assert wb.config["task.name"] == "adding"

    # every value of metrics.jsonl is in the W&B history at the same trainer/step
    history = [h for h in wb.history if "trainer/step" in h]
    jsonl = read_jsonl(run / "metrics.jsonl")
    for key in KEYS:
        assert any(key in row for row in jsonl), key
    for row in jsonl:
        match = [
            h
            for h in history
            if h["trainer/step"] == row["step"] and row.keys() - {"step"} <= h.keys()
        ]
        assert match, row
        for key, value in row.items():
            if key != "step":
                assert match[0][key] == pytest.approx(value, rel=1e-12), key
    assert any("gradflow/reach10" in h for h in history)
    # the summary, keyed like the logs
    written = json.loads((run / "summary.json").read_text())
    assert written["val/mse"] == summary["val/mse"]
    # the main metric's W&B summary is its best and its last value (define_metric)
    assert wb.metrics["val/mse"] == {"step_metric": "trainer/step", "summary": {"min", "last"}}
    assert wb.summary["val/mse"] == {
        "min": pytest.approx(summary["best/val/mse"]),
        "last": pytest.approx(summary["val/mse"]),
    }
    assert wb.summary["best/val/mse"] == pytest.approx(summary["best/val/mse"])
    assert "exit" in wb.record_types


def test_records_that_span_blocks_are_reassembled(tmp_path, offline):
    """A logged value larger than a 32 KiB block is split into FIRST, MIDDLE and
    LAST records; the reader puts it back together."""
    tracker = Tracker(
        tmp_path,
        run_id="spanning",
        config={"a.b": 1},
        project="rnnzoo-tests",
        name="big",
        group=None,
        tags=[],
        wandb_mode="offline",
    )
    text = "".join(chr(ord("a") + i % 26) for i in range(80_000))
    tracker.log(1, {"train/loss": 0.5, "note": text})
    tracker.close()
    (path,) = run_files(tmp_path)
    assert max(len(p) for p in payloads(path)) > 2 * 32 * 1024
    wb = read_run(path)
    row = next(h for h in wb.history if "note" in h)
    assert row["note"] == text and row["train/loss"] == 0.5
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 1, "train/loss": 0.5}


def test_a_corrupt_record_is_detected(tmp_path, offline):
    tracker = Tracker(
        tmp_path,
        run_id="corrupt",
        config={},
        project="p",
        name="n",
        group=None,
        tags=[],
        wandb_mode="offline",
    )
    tracker.log(1, {"train/loss": 0.25})
    tracker.close()
    (path,) = run_files(tmp_path)
    data = bytearray(path.read_bytes())
    data[40] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt record"):
        list(payloads(path))


def test_wandb_mode_from_the_environment_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    tracker = Tracker(
        tmp_path,
        run_id="off",
        config={},
        project="p",
        name="n",
        group=None,
        tags=[],
        wandb_mode="offline",
    )
    tracker.log(3, {"train/loss": 1.0, "image": object()})
    tracker.summary({"val/loss": float("nan")})
    tracker.close()
    assert not (tmp_path / "wandb").exists()
    assert read_jsonl(tmp_path / "metrics.jsonl") == [{"step": 3, "train/loss": 1.0}]
    # JSON has no NaN: it is written as a string, and the file stays valid JSON
    assert json.loads((tmp_path / "summary.json").read_text()) == {"val/loss": "nan"}


def test_truncate_jsonl_drops_later_steps_and_a_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(
        '{"step": 1, "a": 1}\n{"step": 2, "a": 2}\n{"step": 3, "a": 3}\n{"step": 4, "a"'
    )
    truncate_jsonl(path, 2)
    assert read_jsonl(path) == [{"step": 1, "a": 1}, {"step": 2, "a": 2}]
    truncate_jsonl(Path(tmp_path / "absent.jsonl"), 1)  # nothing to do
