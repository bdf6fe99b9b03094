"""What goes to W&B beyond scalars: the gradient-flow curves as tables and charts,
the main metric's summary, checkpoints as model artifacts, W&B's own settings, and
a resumed run. Read back from the offline run's own files (W&B is not mocked)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import wandb
from jsonl import read_jsonl
from wandb_records import logged_tables, read_run, rows_by_step, run_files, tables

from rnnzoo import config, wandb_tables
from rnnzoo.plugins import plugin_manager
from rnnzoo.registry import Registry
from rnnzoo.tracking import Tracker
from rnnzoo.training import Trainer
from rnnzoo.wandb_support import address, announce
from rnnzoo_plugins.gradflow_table import COLUMNS, TABLE

REGISTRY = Registry(plugin_manager())
QUIET = ["trainer.progress=false", "tracking.project=rnnzoo-tests"]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Offline W&B, whatever the environment says; small models on one thread."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tracker(run_dir: Path, run_id: str, **options) -> Tracker:
    run_dir.mkdir(exist_ok=True)
    return Tracker(
        run_dir,
        run_id=run_id,
        config={"model.cell": "gru", "trainer.steps": 3},
        project="rnnzoo-tests",
        name=run_id,
        group=None,
        tags=[],
        wandb_mode="offline",
        **options,
    )


def test_gradient_flow_curves_are_a_wandb_table_and_chart(tmp_path):
    """Every probe's curves reach the table gradflow/curves: one row per layer,
    direction and time step, with the values of gradflow.jsonl, each row once (a
    table may hold several probes' rows); and the line chart of the newest."""
    run = tmp_path / "run"
    overrides = [*QUIET, "model.cell=gru", "model.num_layers=2", "model.bidirectional=true"]
    overrides += ["task.length=7", "task.val_size=8", "model.hidden_size=4", "trainer.steps=4"]
    overrides += ["trainer.batch_size=4", "gradflow.every=2", "gradflow.batch_size=4"]
    Trainer(config.load(None, overrides), REGISTRY, run).fit()

    (log,) = run_files(run)
    probes = {r["step"]: r for r in read_jsonl(run / "gradflow.jsonl")}
    assert {t["columns"] == list(COLUMNS) for _, t in logged_tables(log, TABLE)} == {True}
    logged = rows_by_step(log, TABLE)
    assert sorted(logged) == sorted(probes) == [2, 4]
    for step, rows in logged.items():
        record = probes[step]
        T = record["loss_step"]
        curves = {"layer0/dir0", "layer0/dir1", "layer1/dir0", "layer1/dir1"}
        assert {r["curve"] for r in rows} == curves == set(record["grad_h"])
        for curve in curves:
            mine = sorted((r for r in rows if r["curve"] == curve), key=lambda r: r["t"])
            assert [r["t"] for r in mine] == list(range(7))  # each row once
            assert [r["grad_h"] for r in mine] == record["grad_h"][curve]
            assert {(r["step"], r["cell"]) for r in mine} == {(step, "gru")}
            assert {(r["layer"], r["direction"]) for r in mine} == {(int(curve[5]), int(curve[-1]))}
            assert [r["distance"] for r in mine] == [T - t if t <= T else None for t in range(7)]
            last = [r["grad_h_last_loss"] for r in mine if r["t"] <= T]
            assert last == record["grad_h_last_loss"].get(curve, [None] * (T + 1))

    # the line chart, beside each table: ||dL_T/dh_t|| against the distance, one line
    # per forward curve, of the newest probe in the table (the last: step 4)
    charts = tables(log, f"{TABLE}_plot_table")
    assert sorted(charts) == sorted(tables(log, TABLE)) and max(charts) == 4
    points = [dict(zip(charts[4]["columns"], row, strict=True)) for row in charts[4]["data"]]
    assert {p["lineKey"] for p in points} == {"layer0/dir0", "layer1/dir0"}
    for p in points:
        assert p["lineVal"] == probes[4]["grad_h_last_loss"][p["lineKey"]][T - p["step"]]
    panel = read_run(log).config[f"_wandb/visualize/{TABLE}_plot"]
    assert panel["panel_config"]["panelDefId"] == "wandb/lineseries/v0"
    # the images stay
    assert any("gradflow/heatmap/_type" in h for h in read_run(log).history)


def test_tables_within_a_share_wait_and_go_out_together_at_the_end(tmp_path):
    """log_table with a share: the first table goes at once; once W&B's time on
    the key exceeds the share, rows wait for a later table and the run's end sends
    them, at the last step logged; the chart shows the newest call's rows. Rows
    under other columns go first as their own table; no share: every call sent."""
    t = tracker(tmp_path, "shares")
    columns, line = ["step", "x", "y"], ("x", "y", "step")
    for step in (1, 2, 3):
        t.log(step, {"loss": 1.0 / step})
        t.log_table(step, "curves", columns, [[step, 0, step], [step, 1, 2 * step]], line, 1e-9)
    for step in (1, 2):
        t.log_table(step, "every", ["a"], [[step]])
    t.log_table(3, "changed", ["a"], [[1]], share=1e-9)  # first: sent at once
    t.log_table(3, "changed", ["a"], [[2]], share=1e-9)  # waits ...
    t.log_table(3, "changed", ["a", "b"], [[3, 4]], share=1e-9)  # ... goes first
    t.log(5, {"loss": 0.1})
    t.close()
    (log,) = run_files(tmp_path)
    assert [step for step, _ in logged_tables(log, "curves")] == [1, 5]  # no table twice
    sent = tables(log, "curves")
    assert sent[1]["data"] == [[1, 0, 1], [1, 1, 2]]
    assert sent[5]["data"] == [[2, 0, 2], [2, 1, 4], [3, 0, 3], [3, 1, 6]]
    chart = tables(log, "curves_plot_table")[5]
    points = {tuple(row) for row in chart["data"]}
    assert chart["columns"] == ["step", "lineKey", "lineVal"]  # W&B's names: x, series, y
    assert points == {(0, "3", 3), (1, "3", 6)}  # the rows of step 3 alone
    assert {k: v["data"] for k, v in tables(log, "every").items()} == {1: [[1]], 2: [[2]]}
    changed = [table for _, table in logged_tables(log, "changed")]
    assert [(d["columns"], d["data"]) for d in changed] == [
        (["a"], [[1]]), (["a"], [[2]]), (["a", "b"], [[3, 4]])
    ]  # fmt: skip


def test_waiting_rows_go_before_a_checkpoint_and_never_past_wandbs_row_limit(tmp_path, monkeypatch):
    """flush() (called before every checkpoint) sends the rows still waiting; rows
    that would make a table longer than W&B keeps go first as their own table; a
    call without rows sends nothing and leaves the chart to the newest rows."""
    assert wandb_tables.MAX_ROWS == wandb.Table.MAX_ROWS  # what W&B keeps
    monkeypatch.setattr(wandb_tables, "MAX_ROWS", 5)
    t = tracker(tmp_path, "limits")
    columns, line = ["step", "x", "y"], ("x", "y", "step")
    rows = {s: [[s, x, s * x] for x in range(2)] for s in range(1, 6)}
    t.log_table(1, "c", columns, rows[1], line, 1e-9)  # at once
    t.log_table(2, "c", columns, rows[2], line, 1e-9)  # waits
    t.flush()  # a checkpoint: step 2's rows go now
    for s in (3, 4, 5):  # 2 + 2 wait; 2 more would pass 5, so 3 and 4 go first
        t.log_table(s, "c", columns, rows[s], line, 1e-9)
    t.log_table(6, "c", columns, [], line, 1e-9)  # nothing new: nothing sent
    t.log(7, {"loss": 0.5})
    t.close()  # step 5's rows, with step 5's chart
    (log,) = run_files(tmp_path)
    sent = logged_tables(log, "c")
    assert [step for step, _ in sent] == [1, 2, 5, 7]
    assert [table["data"] for _, table in sent] == [rows[1], rows[2], rows[3] + rows[4], rows[5]]
    _, last = logged_tables(log, "c_plot_table")[-1]
    assert {row[1] for row in last["data"]} == {"5"}


@pytest.mark.parametrize("share", [0, -0.5, float("nan"), float("inf")])
def test_a_share_is_a_positive_number(tmp_path, monkeypatch, share):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    t = tracker(tmp_path, "share")
    with pytest.raises(ValueError, match="give a number > 0, or None"):
        t.log_table(1, "x", ["a"], [[1]], share=share)
    t.close()


def test_a_table_needs_rows_of_its_columns_and_nothing_goes_without_wandb(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    t = tracker(tmp_path, "tables")
    t.log_table(1, "x", ["a", "b"], [[1, 2.0], [2, float("nan")]], line=("a", "b", "a"))
    with pytest.raises(ValueError, match="a row has 1 values for 2 columns"):
        t.log_table(1, "x", ["a", "b"], [[1]])
    with pytest.raises(ValueError, match="names columns not in"):
        t.log_table(1, "x", ["a", "b"], [[1, 2]], line=("a", "c", "a"))
    t.close()
    assert not (tmp_path / "wandb").exists()
    assert (tmp_path / "metrics.jsonl").read_text() == ""


def test_checkpoints_are_model_artifacts_with_config_step_and_metric(tmp_path):
    """log_checkpoint: a new version of model-<run id>, the file model.pt, metadata
    the flattened config, the step and the main metric (best value for "best");
    a resumed run remembers its best value from metrics.jsonl."""
    ckpt = tmp_path / "ckpt-00000003.pt"
    ckpt.write_bytes(b"weights")
    t = tracker(tmp_path / "run", "models", main_metric=("val/mse", "min"))
    for step, mse in [(1, 0.5), (2, 0.2), (3, 0.3)]:
        t.log(step, {"val/mse": mse})
    t.log_checkpoint(ckpt, ["latest"])
    t.log_checkpoint(ckpt, ["best"])
    t.close()
    resumed = tracker(tmp_path / "run", "models", main_metric=("val/mse", "min"))
    resumed.log(4, {"val/mse": 0.4})
    resumed.log_checkpoint(ckpt, ["best", "final"], step=4)
    resumed.close()

    first, second = (read_run(f) for f in run_files(tmp_path / "run"))
    models = [a for run in (first, second) for a in run.artifacts if a["type"] == "model"]
    assert [(a["name"], sorted(a["aliases"])) for a in models] == [  # W&B adds "latest"
        ("model-models", ["latest"]),
        ("model-models", ["best", "latest"]),
        ("model-models", ["best", "final", "latest"]),
    ]
    assert [a["metadata"] for a in models] == [
        {"model.cell": "gru", "trainer.steps": 3, "step": 3, "val/mse": 0.3},
        {"model.cell": "gru", "trainer.steps": 3, "step": 2, "val/mse": 0.2},
        {"model.cell": "gru", "trainer.steps": 3, "step": 4, "val/mse": 0.2},
    ]
    for a in models:  # W&B keeps its own copy until the upload
        assert a["files"]["model.pt"].read_bytes() == b"weights"
    # the main metric's summary is its best and last value
    assert first.metrics["val/mse"] == {"step_metric": "trainer/step", "summary": {"min", "last"}}
    assert first.summary["val/mse"] == {"min": 0.2, "last": 0.3}


def test_system_metrics_and_console_follow_the_wandb_settings(tmp_path, monkeypatch):
    """W&B's defaults (system metrics, console capture) unless WANDB_* turn them off.
    W&B runs in a process of its own; what this process prints reaches its console
    log all the same, and the streams are this process's own again after close."""
    monkeypatch.setenv("WANDB_X_STATS_SAMPLING_INTERVAL", "0.1")  # a sample comes soon
    stdout, stderr = sys.stdout, sys.stderr
    on = tracker(tmp_path / "on", "defaults")
    print("a line for the console log", flush=True)
    on.log(1, {"train/loss": 1.0})
    on.flush()
    time.sleep(1.0)  # ten sampling intervals
    on.close()
    assert (sys.stdout, sys.stderr) == (stdout, stderr)
    monkeypatch.setenv("WANDB_X_DISABLE_STATS", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    off = tracker(tmp_path / "off", "switched-off")
    assert (sys.stdout, sys.stderr) == (stdout, stderr)  # nothing passed on
    print("a line for nobody", flush=True)
    off.log(1, {"train/loss": 1.0})
    off.flush()
    time.sleep(1.0)
    off.close()
    (defaults,) = run_files(tmp_path / "on")
    (switched,) = run_files(tmp_path / "off")
    assert {"stats", "output_raw"} <= read_run(defaults).record_types
    assert "a line for the console log" in read_run(defaults).output
    assert not {"stats", "output_raw"} & read_run(switched).record_types


def test_an_online_run_prints_its_address_on_one_line(capsys):
    url = "https://wandb.ai/someone/rnnzoo/runs/abc123"
    announce(address(SimpleNamespace(offline=False, disabled=False, url=url)))
    announce(address(SimpleNamespace(offline=True, disabled=False, url=None)))
    out = capsys.readouterr()
    assert (out.out, out.err) == ("", f"rnnzoo: W&B run {url}\n")


def test_a_resumed_run_continues_its_wandb_run_in_one_offline_folder(tmp_path):
    """The same run id, resume="allow", and one offline folder: the resumed part's
    log joins the first part's as run-ID.part2.wandb, its files beside the first's,
    so `wandb sync FOLDER` finds both parts (W&B's own listing, --dry-run). The two
    logs hold every row of metrics.jsonl once, and each part's gradient-flow tables
    are read from the folder's files/."""
    run = tmp_path / "run"
    overrides = [*QUIET, "task.length=5", "task.val_size=8", "model.hidden_size=4"]
    overrides += ["trainer.batch_size=4", "trainer.log_every=1", "trainer.eval_every=2"]
    overrides += ["trainer.checkpoint_every=2", "gradflow.every=2", "gradflow.batch_size=4"]
    Trainer(config.load(None, [*overrides, "trainer.steps=4"]), REGISTRY, run).fit()
    cfg = config.load(run / "config.yaml", ["trainer.steps=8"])
    Trainer(cfg, REGISTRY, run, resume=True).fit()

    run_id = json.loads((run / "run.json").read_text())["run_id"]
    (folder,) = (run / "wandb").glob("offline-run-*")
    assert [f.name for f in run_files(run)] == [f"run-{run_id}.wandb", f"run-{run_id}.part2.wandb"]
    assert (run / "wandb" / "latest-run").resolve() == folder.resolve()
    assert {p.name for p in (folder / "logs").iterdir()} >= {"debug.log", "debug.part2.log"}
    listed = subprocess.run(
        [sys.executable, "-m", "wandb", "sync", "--dry-run", str(folder)],
        capture_output=True, text=True, cwd=tmp_path, check=True,
    )  # fmt: skip
    assert "Would sync 2 run(s)" in listed.stdout + listed.stderr
    assert all(f.name in listed.stdout + listed.stderr for f in run_files(run))

    parts = [read_run(f) for f in run_files(run)]
    assert {p.run_id for p in parts} == {run_id}
    logged = [[h["trainer/step"] for h in p.history if "train/loss" in h] for p in parts]
    assert logged == [[1, 2, 3, 4], [5, 6, 7, 8]]
    jsonl = [r for r in read_jsonl(run / "metrics.jsonl") if "train/loss" in r]
    history = {h["trainer/step"]: h for p in parts for h in p.history if "train/loss" in h}
    assert [r["step"] for r in jsonl] == sorted(history)
    for row in jsonl:
        assert history[row["step"]]["train/loss"] == pytest.approx(row["train/loss"], rel=1e-12)
    assert parts[1].summary["val/mse"]["min"] == pytest.approx(
        min(r["val/mse"] for r in read_jsonl(run / "metrics.jsonl") if "val/mse" in r)
    )
    probes = {r["step"]: r for r in read_jsonl(run / "gradflow.jsonl")}
    first, second = (tables(f, TABLE) for f in run_files(run))
    assert (sorted(first), sorted(second), sorted(probes)) == ([2, 4], [6, 8], [2, 4, 6, 8])
    for step, table in {**first, **second}.items():
        rows = [dict(zip(COLUMNS, row, strict=True)) for row in table["data"]]
        assert {r["step"] for r in rows} == {step}


@pytest.mark.parametrize(
    ("log_model", "expected"),
    [
        ("all", [["latest"], ["latest"]]),  # every rotating checkpoint, as it is written
        ("best", [["best", "latest"]]),  # best.pt, at the end
        ("false", []),
    ],
)
def test_train_logs_checkpoints_as_tracking_log_model_says(
    tmp_path, log_model: str, expected: list[list[str]]
) -> None:
    from cli_run import rnnzoo

    run = tmp_path / "run"
    result = rnnzoo(
        "train", Path(__file__).resolve().parents[1] / "experiments" / "adding.yaml",
        "task.length=6", "task.val_size=16",
        "model.hidden_size=4", "trainer.steps=4", "trainer.batch_size=4",
        "trainer.eval_every=2", "trainer.checkpoint_every=2", "trainer.progress=false",
        "gradflow.every=0", "tracking.wandb_mode=offline", f"tracking.log_model={log_model}",
        "--run-dir", run,
    )  # fmt: skip
    assert result.code == 0, result.output
    (record,) = (read_run(f) for f in run_files(run))
    models = [a for a in record.artifacts if a["type"] == "model"]
    assert [sorted(a["aliases"]) for a in models] == expected
    if log_model == "best":
        best = (run / "checkpoints" / "best.pt").read_bytes()
        assert models[0]["files"]["model.pt"].read_bytes() == best
