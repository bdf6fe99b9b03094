"""Train the NLP experiments end to end and report quality and wall time.

    python benchmarks/nlp.py                       # both experiments, full length
    python benchmarks/nlp.py pos_ewt trainer.steps=400
    python benchmarks/nlp.py char_shakespeare --out /tmp/nlp-bench

Each experiment trains in its own run folder under ``--out`` (W&B disabled) and one
JSON line per experiment is printed: the final validation metrics, the best value
of the main metric, training wall time, and the torch thread count it ran with.
Acceptance on a 2-core CPU: pos_ewt val/acc >= 0.93, char_shakespeare
val/loss <= 1.6 nats per character. The data come from the data folder
(``rnnzoo data fetch ud-ewt tinyshakespeare``; docs/data.md); when RNNZOO_DATA is
unset and the repository's ``../shared/data`` copy exists, that copy is used.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from rnnzoo import config
from rnnzoo.plugins import plugin_manager
from rnnzoo.registry import Registry
from rnnzoo.training import Trainer

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
NAMES = ("pos_ewt", "char_shakespeare")
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def run(name: str, overrides: list[str], out: Path) -> dict[str, float | str]:
    cfg = config.load(
        EXPERIMENTS / f"{name}.yaml",
        [*overrides, "tracking.wandb_mode=disabled", "trainer.progress=false"],
    )
    started = time.perf_counter()
    summary = Trainer(cfg, Registry(plugin_manager()), out / name).fit()
    return {
        "experiment": name,
        **{k: v for k, v in summary.items() if k.startswith(("val/", "best/", "baseline/"))},
        "steps": summary["step"],
        "wall_s": round(time.perf_counter() - started, 1),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "experiments", nargs="*", help=f"some of {', '.join(NAMES)}, then key=value"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/nlp-bench"))
    args = parser.parse_args()
    if SHARED_DATA.is_dir():
        os.environ.setdefault("RNNZOO_DATA", str(SHARED_DATA))
    names = [a for a in args.experiments if "=" not in a] or list(NAMES)
    overrides = [a for a in args.experiments if "=" in a]
    for name in names:
        if name not in NAMES:
            parser.error(f"unknown experiment '{name}'; choose from {', '.join(NAMES)}")
        print(json.dumps(run(name, overrides, args.out)), flush=True)


if __name__ == "__main__":
    main()
