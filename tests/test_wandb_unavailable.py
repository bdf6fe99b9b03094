"""W&B that cannot start or dies mid-run: training goes on with one warning, and
metrics.jsonl holds every value. Nothing here leaves the machine: the W&B server
is a closed port on localhost and no API key is set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_run import rnnzoo, write

ROOT = Path(__file__).resolve().parents[1]
ADDING = ROOT / "experiments" / "adding.yaml"
STEPS = 12
SMALL = (
    "task.length=6",
    "task.val_size=16",
    "model.hidden_size=4",
    f"trainer.steps={STEPS}",
    "trainer.batch_size=4",
    "trainer.log_every=1",
    "trainer.eval_every=4",
    "trainer.checkpoint_every=4",
    "trainer.progress=false",
    "gradflow.every=6",
    "gradflow.batch_size=4",
)
#: a port nothing listens on (the discard service), so nothing leaves the machine
CLOSED_SERVER = "http://127.0.0.1:9"


def isolation(home: Path) -> dict[str, str]:
    """No credentials, no user settings, and a W&B server that is not there."""
    return {
        "HOME": str(home),
        "NETRC": str(home / "no-netrc"),
        "WANDB_CONFIG_DIR": str(home / "wandb-config"),
        "WANDB_BASE_URL": CLOSED_SERVER,
    }


def isolated_environment(home: Path) -> dict[str, str]:
    """os.environ without W&B credentials, settings or a running W&B service."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    return {**env, **isolation(home)}


def assert_complete(run: Path) -> None:
    """metrics.jsonl holds a training row for every step, the evaluations and the
    gradient-flow probes; the run finished with its summary."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/loss" in r] == list(range(1, STEPS + 1))
    assert [r["step"] for r in rows if "val/loss" in r] == [4, 8, 12]
    assert [r["step"] for r in rows if any(k.startswith("gradflow/") for k in r)] == [6, 12]
    assert json.loads((run / "summary.json").read_text())["step"] == STEPS
    assert (run / "checkpoints" / f"ckpt-{STEPS:08d}.pt").exists()


def test_online_without_an_api_key_or_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    for key, value in isolation(tmp_path).items():
        monkeypatch.setenv(key, value)
    run = tmp_path / "run"
    started = time.monotonic()
    with pytest.warns(UserWarning) as caught:
        result = rnnzoo("train", ADDING, *SMALL, "tracking.wandb_mode=online", "--run-dir", run)
    elapsed = time.monotonic() - started
    assert result.code == 0, result.output
    unavailable = [w for w in caught if "W&B is unavailable" in str(w.message)]
    assert len(unavailable) == 1, [str(w.message) for w in caught]
    assert "No API key configured" in str(unavailable[0].message)
    assert str(run / "metrics.jsonl") in str(unavailable[0].message)
    assert elapsed < 60, f"W&B took {elapsed:.0f} s to give up"
    assert_complete(run)


def test_online_with_a_key_but_no_network_waits_only_the_init_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a key, W&B retries until WANDB_INIT_TIMEOUT (default 90 s): that is the
    only wait, then training goes on."""
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    for key, value in isolation(tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "3")
    run = tmp_path / "run"
    started = time.monotonic()
    with pytest.warns(UserWarning) as caught:
        result = rnnzoo("train", ADDING, *SMALL, "tracking.wandb_mode=online", "--run-dir", run)
    elapsed = time.monotonic() - started
    assert result.code == 0, result.output
    unavailable = [str(w.message) for w in caught if "W&B is unavailable" in str(w.message)]
    assert len(unavailable) == 1, [str(w.message) for w in caught]
    assert "127.0.0.1:9" in unavailable[0]
    assert elapsed < 60, f"W&B took {elapsed:.0f} s to give up"
    assert_complete(run)


KILL_WANDB = """
import os
import signal
from pathlib import Path

from rnnzoo import hookimpl

TARGET = os.environ["KILL_TARGET"]


def descendants(pid):
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            child = int(stat.parent.name)
            yield child
            yield from descendants(child)


@hookimpl
def rnnzoo_step_end(step):
    if step == 5:  # a W&B process dies
        for pid in descendants(os.getpid()):
            if TARGET.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
                print(f"killed {TARGET} {pid}", flush=True)
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("target", ["rnnzoo.wandb_worker", "wandb-core"])
def test_wandb_killed_mid_run(tmp_path: Path, target: str) -> None:
    """W&B runs offline in a process of its own (rnnzoo.wandb_worker), which runs
    W&B's service (wandb-core); SIGKILL either at step 5 and the run completes with
    one warning, no traceback, and every value in metrics.jsonl."""
    plugin = write(tmp_path / "kill_wandb.py", KILL_WANDB)
    env = {**isolated_environment(tmp_path), "OMP_NUM_THREADS": "1", "KILL_TARGET": target}
    run = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from rnnzoo.cli import main; main()",
            "-p",
            str(plugin),
            "train",
            str(ADDING),
            *SMALL,
            "tracking.wandb_mode=offline",
            "--run-dir",
            str(run),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"killed {target}" in proc.stdout, f"{target} was not found"
    assert proc.stderr.count("W&B is unavailable") == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert (run / "wandb").is_dir()  # W&B did start before it died
    assert_complete(run)
