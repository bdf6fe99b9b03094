"""The benchmark suite stays runnable, and its plugin LSTM stays an LSTM.

Timings are never asserted here (benchmarks/ measures them); these tests run each
benchmark at toy sizes and check what it reports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from rnnzoo.plugins import plugin_manager
from rnnzoo.recurrence import Recurrence
from rnnzoo.registry import Registry

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def benchmark_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    """The benchmark scripts import each other as top-level modules."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))


def test_plugin_lstm_matches_nn_lstm() -> None:
    """Outputs, final state and every gradient of the benchmark's plugin LSTM, run
    through the engine's step loop, against nn.LSTM with the same weights."""
    from plugin_lstm import PluginLSTM

    torch.manual_seed(0)
    batch, steps, inputs, hidden = 3, 71, 5, 8
    reference = nn.LSTM(inputs, hidden, batch_first=True)
    engine = Recurrence(PluginLSTM, inputs, hidden)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(engine.cells[0], name).copy_(getattr(reference, f"{name}_l0"))
    x = torch.randn(batch, steps, inputs, requires_grad=True)
    weights = torch.randn(batch, steps, hidden)

    out = engine(x)
    (out.outputs * weights).sum().backward()
    expected, (h_n, c_n) = reference(x)
    grad_x = x.grad.clone()
    x.grad = None
    (expected * weights).sum().backward()

    torch.testing.assert_close(out.outputs, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.final_state[0][0], h_n[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.final_state[0][1], c_n[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad_x, x.grad, atol=1e-5, rtol=1e-5)
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        torch.testing.assert_close(
            getattr(engine.cells[0], name).grad,
            getattr(reference, f"{name}_l0").grad,
            atol=1e-5,
            rtol=1e-5,
        )


def test_cell_and_plugin_benchmarks_report_every_contender() -> None:
    import bench_cells
    import bench_plugin_cell

    lines: list[str] = []
    rows = bench_cells.run(Registry(plugin_manager()), [(8, 20, 64)], 1, 0.0, CPU, lines.append)
    assert [row["cell"] for row in rows] == ["elman", "lstm", "gru"]
    for row in rows:
        for contender in bench_cells.CONTENDERS:
            assert row[f"{contender} tok/s"] > 0
            assert row[f"{contender} peak MiB"] >= 0
        assert row["rnnzoo / torch.nn"] > 0
    lstm = rows[1]  # 8 x 20 steps x 4 gates x 64 units saved for backward: > 0.1 MiB
    assert lstm["rnnzoo peak MiB"] >= 0.1 and lstm["torch.nn peak MiB"] >= 0.1
    plugin = bench_plugin_cell.run(2, 5, 8, 1, 0.0, CPU, False, lines.append)
    for contender in ("torch.nn", "step_loop", "engine", "hand loop", "reference loop"):
        assert plugin[f"{contender} / torch.nn"] > 0
    assert plugin["torch.nn / torch.nn"] == 1.0
    assert len(lines) == 4  # one progress line per row


def test_training_loop_benchmark_times_every_contender_in_turns(tmp_path: Path) -> None:
    """benchmarks/overhead.py at a toy size: every contender a real process,
    each reporting its chunks; Lightning only where it is installed."""
    out = tmp_path / "rows.json"
    command = [sys.executable, str(BENCHMARKS / "overhead.py"), "--sizes", "tiny"]
    command += ["--rounds", "2", "--sets", "2", "--chunk", "3", "--warmup", "2"]
    command += ["--json", str(out)]
    command += [
        "--contenders",
        "hand",
        "rnnzoo",
        "rnnzoo-lean",
        "--baseline",
        str(BENCHMARKS.parent),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, check=False, cwd=tmp_path, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = result["rows"]
    head = subprocess.run(
        ["git", "-C", str(BENCHMARKS.parent), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    assert result["machine"]["torch"] == torch.__version__
    assert result["machine"]["baseline"] == (head or BENCHMARKS.parent.name)  # the checkout
    names = ["hand", "rnnzoo", "rnnzoo-lean", "rnnzoo@base", "rnnzoo-lean@base"]
    assert [row["contender"] for row in rows] == names
    for row in rows:  # two sets of processes, two rounds each
        assert row["rounds"] == 4 and row["chunk steps"] == 3
        assert row["ms/step (median)"] > 0 and row["x hand-written"] > 0
        assert len(row["x hand-written, per set"]) == 2
    assert rows[0]["x hand-written"] == 1.0
    assert done.stdout.count("round ") == 4  # a progress line per round
    assert done.stdout.count(": set ") == 2


def test_tbptt_memory_benchmark() -> None:
    import bench_training
    import report

    registry = Registry(plugin_manager())
    tbptt = bench_training.tbptt_memory(registry, [200, 800], 64, 8, 20, lambda _: None)
    truncated_200, truncated_800, full_200 = (row["peak MiB"] for row in tbptt)
    # truncated at 20 steps, the graph holds one window, however long the sequence
    assert truncated_200 < full_200 / 2 and truncated_800 < full_200 / 2
    text = report.markdown(
        {
            "profile": "test",
            "machine": {
                "cpu": "cpu",
                "cpu_count": 1,
                "torch_threads": 1,
                "torch": torch.__version__,
                "python": "3",
                "load_average_1min": 0.0,
            },
            "train": [{"contender": "hand", "x hand-written": 1.0}],
            "tbptt": tbptt,
            "compile": {
                "steady": [{"contender": "compile K=16", "x torch.nn": 0.6}],
                "compile": [{"K": 16, "cold compile s": 40.0, "warm compile s": 4.5}],
            },
        }
    )
    assert "## Training loop" in text and "## Truncated BPTT memory" in text
    assert "## model.compile" in text and "| compile K=16 | 0.6 |" in text
    assert "| 16 | 40 | 4.5 |" in text


def test_paired_benchmark_times_rnnzoo_and_the_hand_written_loop_step_by_step(
    tmp_path: Path,
) -> None:
    """benchmarks/overhead_paired.py at a toy size: a process per variant and run,
    each timing its chunks of rnnzoo steps against hand-written ones."""
    out = tmp_path / "paired.json"
    command = [sys.executable, str(BENCHMARKS / "overhead_paired.py"), "--size", "tiny"]
    command += ["--steps", "40", "--chunk", "20", "--warmup", "5", "--runs", "2"]
    command += ["--variants", "shipped", "lean", "--json", str(out)]
    # probes in the probe process: no hand-written step while one is in flight
    command += ["--set", "gradflow.every=10", "--set", "gradflow.process=always"]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [row["variant"] for row in rows] == ["shipped", "lean"]
    for row in rows:  # two runs of two chunks
        assert row["chunks"] == 4 and len(row["x hand-written, per run"]) == 2
        assert all(r > 0 for r in row["x hand-written, per run"])
    # shipped hands probes to the process, and no hand-written step runs meanwhile
    assert all(n > 0 for n in rows[0]["hand-written steps deferred, per run"])


def test_probe_overhead_benchmark_runs_and_probes_do_not_change_training(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "gradflow_overhead.py"),
            "trainer.steps=40",
            "gradflow.every=20",
            "model.hidden_size=8",
            "task.length=10",
            "tracking.wandb_mode=disabled",
            "--repeats",
            "1",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["probes_per_run"] == 2
    assert result["steps"] == 40
    assert result["same_training"] is True
    assert len(result["overhead_accounted"]) == 1
    assert result["overhead_accounted"][0] > 0


def test_zoo_benchmark_measures_every_column_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "zoo.json"
    toy = ["--seeds", "1", "--steps", "2", "--copy-steps", "2", "--length", "6"]
    toy += ["--hidden-size", "4", "--mingru-length", "16", "--mingru-size", "4"]
    command = [sys.executable, str(BENCHMARKS / "zoo.py"), "--configs", "lstm,mingru"]
    done = subprocess.run([*command, *toy, "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    assert list(data["cells"]) == ["lstm", "mingru"]
    for row in data["cells"].values():
        assert {"reach10", "reach1000", "decay", "adding", "copy", "tokens_per_s"} <= set(row)
        assert row["adding_baseline"] == pytest.approx(1 / 6)
    assert set(data["mingru_T2048"]) == {"nn.GRU", "mingru scan", "mingru step loop"}
    table = out.with_suffix(".md").read_text()
    assert "| `mingru` |" in table and "| T 16, B 16, H 4, forward + backward |" in table
    # a second run finds everything measured and only rewrites the table
    again = subprocess.run([*command, *toy, "--out", str(out)], capture_output=True, text=True)
    assert again.returncode == 0 and json.loads(out.read_text())["cells"] == data["cells"]


def test_step_parts_times_each_part_before_and_now(tmp_path: Path) -> None:
    out = tmp_path / "parts.json"
    command = [sys.executable, str(BENCHMARKS / "step_parts.py"), "--reps", "3", "--json", str(out)]
    env = {**os.environ, "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"}
    done = subprocess.run(
        command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["part"].split(" (")[0] for r in rows] == [
        "settings reads", "loss", "Adam step", "fused LSTM", "W&B row", "W&B table"
    ]  # fmt: skip
    for r in rows:
        assert r["before µs"] > 0 and r["now µs"] > 0


def test_threads_benchmark_runs_every_contender_and_stops_its_background(
    tmp_path: Path,
) -> None:
    """benchmarks/threads.py at a toy size: every contender trains in each condition,
    the loaded one had two background processes, and they are gone afterwards."""
    out = tmp_path / "threads.json"
    command = [sys.executable, str(BENCHMARKS / "threads.py"), "--steps", "6", "--rounds", "1"]
    command += ["--json", str(out), "task.length=6", "task.val_size=32", "model.hidden_size=8"]
    done = subprocess.run(
        [*command, "trainer.batch_size=8"], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert list(result["conditions"]) == ["idle", "loaded"]
    for name, condition in result["conditions"].items():
        cores = condition["cores"]
        fixed = ["threads=1"] + ([f"threads={cores}"] if cores > 1 else [])
        assert list(condition["contenders"]) == ["auto", "auto, passive", *fixed, "default"]
        assert condition["threads"]["auto"] == "auto"
        for contender in condition["contenders"].values():
            assert len(contender["train_s"]) == 1 and contender["train_s"][0] > 0
            assert contender["x_best_fixed"] > 0 and contender["x_default"] > 0
        assert condition["contenders"]["default"]["x_default"] == 1.0
        # the best fixed count is the fixed count with the smallest median time, and
        # its own ratio is 1; against each round's faster count none is above 1
        best = condition["best_fixed"]
        medians = {n: condition["contenders"][n]["median_train_s"] for n in fixed}
        assert medians[best] == min(medians.values())
        assert condition["contenders"][best]["x_best_fixed"] == 1.0
        assert all(condition["contenders"][n]["x_round_best"] <= 1.0 for n in fixed)
        # how OpenMP's threads waited, as each run logged it: torch's default spins
        # first; busy processes at launch make the command line choose passive
        # (auto logs it with its first choice, which runs this short may not reach)
        waits = {n: c["perf/omp_passive"] for n, c in condition["contenders"].items()}
        assert waits["default"] == [[0.0]] and waits["auto, passive"] in ([[1.0]], [[]])
        if name == "loaded":
            assert all(waits[n] == [[1.0]] for n in fixed)
            assert waits["auto"] in ([[1.0]], [[]])
        # a pinned count is logged once, at the start of its run
        assert [t for _, t in condition["contenders"]["threads=1"]["perf/threads"][0]] == [1]
        assert len(condition["background_pids"]) == (2 if name == "loaded" else 0)
        assert len(condition["load_start"]["loadavg"]) == 3 and condition["load_end"]["uptime"]
        for pid in condition["background_pids"]:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    table = out.with_suffix(".md").read_text()
    assert "| 2 busy processes |" in table and "| `trainer.threads=auto` |" in table
