"""rnnzoo's speed and memory benchmarks against torch.nn and hand-written loops.

    python benchmarks/run.py            # the default set, about 22 minutes on 2 cores
    python benchmarks/run.py --quick    # one size per benchmark, about 7 minutes
    python benchmarks/run.py --full     # the whole size grid (40 to 60 minutes)
    nox -s bench -- --quick

Sections: ``cells`` (built-in cells against torch.nn and a hand-written loop),
``plugin`` (a plugin cell through the generic step loop), ``train`` (``rnnzoo
train`` against a hand-written training loop and Lightning, from
benchmarks/overhead.py, one thread each), ``tbptt`` (peak memory of truncated
BPTT), ``gradflow`` (probe overhead, from benchmarks/gradflow_overhead.py) and
``threads`` (``trainer.threads=auto`` against fixed counts and torch's default, idle
and with two busy background processes, from benchmarks/threads.py; about 5 minutes
of the default run on 2 otherwise idle cores, far longer on a busy machine); and, only
when asked for (``--only compile``: it compiles for minutes), ``compile``
(``model.compile`` and its compile times, from benchmarks/compile_loop.py).
Results go to ``benchmarks/results/<profile>.json`` and ``.md`` (``<profile>-variants``
with ``--variants``), rewritten after every section. Timings are
interleaved and reported as medians; compare ratios, not absolute numbers, on a
shared machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from itertools import product
from pathlib import Path

import bench_cells
import bench_plugin_cell
import bench_training
import overhead
import threads
import torch
from bench_common import devices, machine
from report import markdown

from rnnzoo.plugins import plugin_manager
from rnnzoo.registry import Registry

HERE = Path(__file__).resolve().parent
SECTIONS = ("cells", "plugin", "train", "tbptt", "gradflow", "threads", "compile")
#: what runs without --only: compile spends minutes compiling, so it is asked for by name
DEFAULT_SECTIONS = SECTIONS[:-1]
GRID = {
    "quick": list(product([64], [100], [256])),
    "default": list(product([16, 64], [100], [128, 256, 512])) + [(16, 1000, 256)],
    "full": list(product([16, 64], [100, 1000], [128, 256, 512])),
}
#: per profile: rounds, seconds per timing sample, training-loop rounds (of 100 steps),
#: gradflow_overhead args
#: (a short run overstates the probe overhead: the final figures are a fixed cost per run)
SETTINGS = {
    "quick": (3, 0.3, 4, ["trainer.steps=200", "--repeats", "1"]),
    "default": (5, 0.3, 8, ["--repeats", "4"]),
    "full": (7, 0.5, 12, ["--repeats", "4"]),
}


def gradflow_overhead(args: list[str], threads: int, log) -> dict[str, object]:
    script = HERE / "gradflow_overhead.py"
    if not script.exists():
        return {"skipped": "benchmarks/gradflow_overhead.py is not there"}
    command = [sys.executable, str(script), *args, "--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"failed": done.stderr.strip().splitlines()[-1:]}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    overheads = {k: v for k, v in result.items() if k.startswith("overhead")}
    log(f"gradflow probes: {overheads}")
    return result


def compile_loop(quick: bool, out: Path, log) -> dict[str, object]:
    """benchmarks/compile_loop.py in its own process (one thread; it starts fresh
    processes of its own for the compile times)."""
    command = [sys.executable, str(HERE / "compile_loop.py"), "--out", str(out)]
    done = subprocess.run(command + (["--quick"] if quick else []), check=False, text=True)
    if done.returncode != 0:
        return {"failed": f"benchmarks/compile_loop.py exited with {done.returncode}"}
    stem = out / ("compile-quick" if quick else "compile")
    result = json.loads(stem.with_suffix(".json").read_text())
    log(f"compile: wrote {stem}.md")
    return result


def write(results: dict[str, object], stem: Path) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="one size per benchmark")
    size.add_argument("--full", action="store_true", help="the whole size grid")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(DEFAULT_SECTIONS))
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument(
        "--variants",
        action="store_true",
        help="also time the step-loop variants that lost (preallocation, jit.script, "
        "torch.compile, which compiles for a minute or more)",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    profile = "quick" if args.quick else "full" if args.full else "default"
    rounds, min_time, chunks, gradflow_args = SETTINGS[profile]
    torch.set_num_threads(args.threads)
    registry = Registry(plugin_manager())
    stem = args.out / (profile + ("-variants" if args.variants else ""))
    started = time.perf_counter()

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f}s] {line}", flush=True)

    results: dict[str, object] = {"profile": profile, "machine": machine()}
    timings: dict[str, float] = {}
    for section in args.only:
        begin = time.perf_counter()
        if section == "cells":
            results["cells"] = [
                row
                for device in devices()
                for row in bench_cells.run(registry, GRID[profile], rounds, min_time, device, log)
            ]
        elif section == "plugin":
            sizes = [(64, 100, 256)] + ([] if profile == "quick" else [(16, 1000, 256)])
            results["plugin"] = [
                bench_plugin_cell.run(*s, rounds, min_time, device, args.variants, log)
                for device in devices()
                for s in sizes
            ]
        elif section == "train":
            names = overhead.contenders(list(overhead.CONTENDERS))
            sizes = ["readme"] + ([] if profile == "quick" else ["large"])
            turns = {"rounds": chunks, "chunk": 100, "warmup": 50}
            results["train"] = [
                row for size in sizes for row in overhead.measure(size, names, 1, log, **turns)
            ]
        elif section == "tbptt":
            results["tbptt"] = bench_training.tbptt_memory(
                registry, [1000, 10000], 256, 16, 100, log
            )
        elif section == "gradflow":
            results["gradflow"] = gradflow_overhead(gradflow_args, args.threads, log)
        elif section == "compile":
            results["compile"] = compile_loop(profile == "quick", args.out, log)
        elif section == "threads":
            threads.stop_on_sigterm()  # its background processes stop with the benchmark
            steps, runs = threads.PROFILES[profile]
            results["threads"] = threads.measure(list(threads.CONDITIONS), steps, runs, [], log)
        timings[section] = round(time.perf_counter() - begin, 1)
        results["seconds"] = timings
        results["load_average_1min_end"] = machine()["load_average_1min"]
        write(results, stem)  # after every section: a long run keeps its part
    log(f"wrote {stem}.json and .md")


if __name__ == "__main__":
    main()
