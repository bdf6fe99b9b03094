"""CPU threads on a shared machine: ``rnnzoo train experiments/adding.yaml`` with
``trainer.threads=auto`` against fixed thread counts and torch's default, on the
machine as it is and with two busy background processes.

    python benchmarks/threads.py                # idle and loaded, 3 rounds of 300 steps
                                                # (about 5 minutes on 2 otherwise idle
                                                # cores; far longer on a busy machine)
    python benchmarks/threads.py --quick        # 2 rounds of 100 steps
    python benchmarks/threads.py --conditions idle --json benchmarks/results/threads.json
    python benchmarks/threads.py --steps 8 --rounds 1 task.length=6   # overrides last

Conditions: ``idle`` starts nothing (its load average is recorded: on a shared
machine "idle" is the machine as it is); ``loaded`` starts two busy background
processes (pure-Python spin loops) and stops them when the condition ends, also
on Ctrl-C, SIGTERM or an error; a spinner also stops by itself once this script's
process is gone.

Contenders, each a real ``rnnzoo train`` process, one at a time (never two at
once), in rounds whose order rotates:

- ``auto``: ``trainer.threads=auto`` through ``python -m rnnzoo``, as shipped
  (the command line lets OpenMP's threads spin when the machine is idle at launch
  and makes them wait passively when it is busy; each run's choice is recorded);
- ``auto, passive``: the same with ``OMP_WAIT_POLICY=PASSIVE`` set, whatever the
  load (what the command line always did before it chose at launch);
- ``threads=1`` and ``threads=N`` (N = the cores this process may use): fixed
  counts, the same command line;
- ``default``: what a plain torch user gets: torch's own thread count with
  OpenMP's default wait policy (spin, then sleep). The command line is entered
  through ``rnnzoo.cli.main``, which does not set the wait policy, and
  ``trainer.threads`` is set to torch's default count, which leaves it as it is.

No contender sees ``OMP_NUM_THREADS`` or ``OMP_WAIT_POLICY`` from this script's
environment. Every run: W&B disabled, gradient-flow probes off, evaluation and
checkpoint only at the end. The time of a run is ``time/train_s`` of its
``summary.json``: training from the start of ``fit()`` to the last step's
backward (the pre-flight check of the data, ``auto``'s measuring steps and the
steps themselves; not the process start-up nor the final evaluation). The best
fixed count is the fixed count with the smallest median time over the rounds;
per round, a contender's ratio is that count's time over its own (above 1:
faster); ``x default`` likewise against ``default``; ``x round best`` against
the faster fixed count of each round, a stricter yardstick (no single count is
that fast); the table shows medians over rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
EXPERIMENT = HERE.parent / "experiments" / "adding.yaml"
CONDITIONS = ("idle", "loaded")
BACKGROUND = 2  # busy processes in the loaded condition
#: per profile: steps per run, rounds
PROFILES = {"quick": (100, 2), "default": (300, 3), "full": (600, 5)}
#: a busy process: spins until killed or until its parent (given) is gone
SPIN = "import os,sys\np=int(sys.argv[1])\nwhile os.getppid()==p:\n  for _ in range(10**6): pass\n"
CLI_WITHOUT_WAIT_POLICY = "from rnnzoo.cli import main; main()"

Log = Callable[[str], None]


def clean_env() -> dict[str, str]:
    """This environment without the OpenMP settings the contenders choose themselves."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    env.update(WANDB_MODE="disabled", WANDB_SILENT="true")
    return env


def torch_default_threads() -> int:
    """The thread count torch starts with in a plain process."""
    done = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
        env=clean_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.strip())


def contenders(cores: int, default_threads: int) -> dict[str, tuple[list[str], str]]:
    """Name: (the command before ``train``, ``trainer.threads``)."""
    cli = [sys.executable, "-m", "rnnzoo"]
    found = {"auto": (cli, "auto")}
    # what the command line did before it chose the policy at launch: always passive
    found["auto, passive"] = (["env", "OMP_WAIT_POLICY=PASSIVE", *cli], "auto")
    for n in sorted({1, cores}):
        found[f"threads={n}"] = (cli, str(n))
    found["default"] = ([sys.executable, "-c", CLI_WITHOUT_WAIT_POLICY], str(default_threads))
    return found


def fixed(names: list[str]) -> list[str]:
    return [n for n in names if n.startswith("threads=")]


def train(head: list[str], threads: str, steps: int, overrides: list[str], out: Path) -> dict:
    """One ``rnnzoo train`` run; its training time and the thread counts it logged."""
    settings = [f"trainer.steps={steps}", f"trainer.eval_every={steps}"]
    settings += [f"trainer.checkpoint_every={steps}", "trainer.progress=false"]
    settings += ["gradflow.every=0", "tracking.wandb_mode=disabled", f"trainer.threads={threads}"]
    command = [*head, "train", str(EXPERIMENT), "--run-dir", str(out), *settings, *overrides]
    done = subprocess.run(command, env=clean_env(), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = [[r["step"], r["perf/threads"]] for r in rows if "perf/threads" in r]
    passive = [r["perf/omp_passive"] for r in rows if "perf/omp_passive" in r]
    return {"train_s": summary["time/train_s"], "perf/threads": logged, "perf/omp_passive": passive}


@contextmanager
def background(count: int) -> Iterator[list[int]]:
    """``count`` busy processes while the block runs; stopped however it ends."""
    procs: list[subprocess.Popen] = []
    try:
        for _ in range(count):
            procs.append(subprocess.Popen([sys.executable, "-c", SPIN, str(os.getpid())]))
        time.sleep(1.0)  # let them get going
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def load() -> dict[str, Any]:
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False)
    return {"loadavg": [round(x, 2) for x in os.getloadavg()], "uptime": uptime.stdout.strip()}


def ratios(times: dict[str, list[float]], base: list[float]) -> dict[str, float]:
    """Per contender: the median over rounds of ``base`` time / its time."""
    return {
        n: round(statistics.median(b / t for b, t in zip(base, ts, strict=True)), 3)
        for n, ts in times.items()
    }


def condition(
    name: str, steps: int, rounds: int, overrides: list[str], default_threads: int, log: Log
) -> dict:
    """Every contender ``rounds`` times, one at a time, the order rotating."""
    from rnnzoo.threads import available_cores

    cores = available_cores()
    runs = contenders(cores, default_threads)
    names = list(runs)
    result: dict[str, Any] = {"started": datetime.now(UTC).isoformat(timespec="seconds")}
    result.update(steps=steps, rounds=rounds, overrides=overrides, cores=cores)
    result["threads"] = {n: runs[n][1] for n in names}
    result["load_start"] = load()
    times: dict[str, list[float]] = {n: [] for n in names}
    logged: dict[str, list] = {n: [] for n in names}
    passive: dict[str, list] = {n: [] for n in names}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, background(BACKGROUND * (name == "loaded")) as pids:
        result["background_pids"] = pids
        for r in range(rounds):
            for n in names[r % len(names) :] + names[: r % len(names)]:
                out = Path(tmp) / f"{n.replace('=', '').replace(', ', '-')}-{r}"
                run = train(runs[n][0], runs[n][1], steps, overrides, out)
                times[n].append(run["train_s"])
                logged[n].append(run["perf/threads"])
                passive[n].append(run["perf/omp_passive"])
            log(
                f"{name} round {r + 1}/{rounds}: "
                + ", ".join(f"{n} {times[n][-1]:.2f} s" for n in names)
            )
    result["load_end"] = load()
    result["seconds"] = round(time.perf_counter() - started, 1)
    best = min(fixed(names), key=lambda n: statistics.median(times[n]))
    oracle = [min(ts) for ts in zip(*(times[n] for n in fixed(names)), strict=True)]
    x_best, x_default = ratios(times, times[best]), ratios(times, times["default"])
    x_oracle = ratios(times, oracle)
    result["best_fixed"] = best
    result["contenders"] = {
        n: {
            "train_s": [round(t, 3) for t in times[n]],
            "median_train_s": round(statistics.median(times[n]), 3),
            "x_best_fixed": x_best[n],
            "x_round_best": x_oracle[n],
            "x_default": x_default[n],
            "perf/threads": logged[n],
            "perf/omp_passive": passive[n],
        }
        for n in names
    }
    return result


def measure(conditions: list[str], steps: int, rounds: int, overrides: list[str], log: Log,
            previous: dict | None = None) -> dict:  # fmt: skip
    """The conditions asked for; those of ``previous`` that were not are kept."""
    from bench_common import cpu_name

    found = dict((previous or {}).get("conditions", {}))
    default_threads = torch_default_threads()  # before any background load
    for name in conditions:
        found[name] = condition(name, steps, rounds, overrides, default_threads, log)
    return {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "python": sys.version.split()[0],
            "conditions": {c: found[c] for c in CONDITIONS if c in found}}  # fmt: skip


def stop_on_sigterm() -> None:
    """SIGTERM ends the benchmark like Ctrl-C: the background processes are stopped."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="2 rounds of 100 steps")
    size.add_argument("--full", action="store_true", help="5 rounds of 600 steps")
    parser.add_argument("--steps", type=int, help="steps per run (overrides the profile)")
    parser.add_argument("--rounds", type=int, help="rounds (overrides the profile)")
    parser.add_argument("--conditions", nargs="+", choices=CONDITIONS, default=list(CONDITIONS))
    parser.add_argument(
        "--json",
        type=Path,
        help="write the results here after each condition (and the tables beside it, "
        ".md); conditions not measured in this run are kept from the file",
    )
    parser.add_argument("overrides", nargs="*", help="more rnnzoo overrides for every run")
    args = parser.parse_args()
    steps, rounds = PROFILES["quick" if args.quick else "full" if args.full else "default"]
    steps, rounds = args.steps or steps, args.rounds or rounds
    stop_on_sigterm()
    started = time.perf_counter()

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - started:5.0f}s] {line}", flush=True)

    from report import threads_markdown

    result = None
    if args.json is not None and args.json.is_file():
        result = json.loads(args.json.read_text())
    for name in args.conditions:  # the file is written after each condition
        result = measure([name], steps, rounds, args.overrides, log, result)
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=1) + "\n")
            args.json.with_suffix(".md").write_text(threads_markdown(result))
    assert result is not None
    print(threads_markdown(result))


if __name__ == "__main__":
    main()
