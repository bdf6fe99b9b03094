"""``rnnzoo train EXPERIMENT -m key=a,b ... --jobs N``: a grid of runs.

Every combination of the swept values (:mod:`rnnzoo.multirun`) is trained by its
own ``python -m rnnzoo train`` process in its own run folder, under one group
folder ``runs/multirun-TIME-ID/N-DESCRIPTION/``, ``--jobs`` at a time
(:mod:`rnnzoo.processpool`). A line is printed as each run ends, a table at the
end; ``multirun.json`` in the group folder records every run's overrides, command,
exit code and status. Ctrl-C stops every run after its current step, with a
checkpoint, and prints how to resume each.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import threading
import time
from pathlib import Path

import click

from rnnzoo import config, waitpolicy
from rnnzoo.commands.common import cli_plugins
from rnnzoo.errors import RnnzooError, UsageError
from rnnzoo.files import write_text_atomic
from rnnzoo.multirun import Job, expand, has_key
from rnnzoo.processpool import Launch, LocalPool
from rnnzoo.runfiles import fmt, is_run, main_key, read_summary

#: exit codes of a run stopped by a signal (the trainer's own, and Python's)
INTERRUPTED = {130, -2, -15}
#: lines of a failed run's log shown in the report
TAIL = 6


def run_grid(
    ctx: click.Context,
    experiment: str | None,
    overrides: tuple[str, ...],
    resume: str | None,
    run_dir: str | None,
    plugins: tuple[str, ...],
    jobs: int,
) -> None:
    """Train the grid of ``overrides`` (see the module's docstring); exits 0 when
    every run ended well, 1 when one failed, 130 when interrupted."""
    if resume is not None:
        raise UsageError(
            "--resume continues one run, not a grid: resume each run of a grid with "
            "`rnnzoo train --resume RUN` (an interrupted grid prints the commands)."
        )
    if experiment is None or "=" in experiment:
        raise UsageError(
            "Name an experiment file before the overrides: rnnzoo train "
            "experiments/adding.yaml -m model.cell=lstm,gru trainer.seed=0,1"
        )
    if jobs < 1:
        raise UsageError(
            f"--jobs is the number of runs trained at once; got {jobs}, use 1 or more."
        )
    grid = expand(overrides)
    extra = cli_plugins(ctx, plugins)
    check(experiment, grid, extra)
    group = group_folder(run_dir)
    launches = [launch(experiment, job, group, overrides, extra, jobs) for job in grid]
    report = GridReport(experiment, overrides, jobs, group, grid, launches)
    click.echo(f"{len(grid)} runs in {group}, {jobs} at a time")
    report.write()
    received = LocalPool(launches, jobs, report.ended).run(report.signalled)
    report.table()
    if received:
        report.resume_hints()
        ctx.exit(130)
    failed = [(j, lc) for j, lc in zip(grid, launches, strict=True) if lc.exit_code != 0]
    if failed:
        raise RnnzooError(
            f"{len(failed)} of {len(grid)} runs did not finish: "
            + "; ".join(
                f"{j.label} ({report.status(j, lc)}, exit {lc.exit_code})" for j, lc in failed
            )
            + f". The end of each one's log is shown above (RUN/train.log, or beside the "
            f"run folder when the run never created it); the other runs are in {group}."
        )
    click.echo(f"compare them: rnnzoo compare {group}")


def check(experiment: str, grid: list[Job], plugins: list[str]) -> None:
    """Load and validate every run's config before any starts: a typo fails now,
    not in N processes."""
    from rnnzoo.build import validate
    from rnnzoo.plugins import plugin_manager
    from rnnzoo.registry import Registry

    registries: dict[tuple[str, ...], Registry] = {}
    for job in grid:
        try:
            cfg = config.load(experiment, job.overrides)
            names = (*plugins, *cfg.plugins)
            if names not in registries:
                registries[names] = Registry(plugin_manager(list(names)))
            validate(cfg, registries[names])
        except RnnzooError as exc:
            raise UsageError(
                f"Run {job.n} of the grid ({job.label}) cannot start, so none was started: {exc}"
            ) from exc


def group_folder(run_dir: str | None) -> Path:
    """``--run-dir`` (new or empty), or ``runs/multirun-TIME-ID``; created."""
    if run_dir is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        group = Path("runs") / f"multirun-{stamp}-{os.urandom(4).hex()}"
    else:
        group = Path(run_dir)
        if group.exists() and (not group.is_dir() or any(group.iterdir())):
            raise UsageError(
                f"'{group}' already exists and is not an empty folder; with -m, --run-dir "
                "names the group folder of the grid's runs. Pass a new folder."
            )
    group.mkdir(parents=True, exist_ok=True)
    return group


def launch(
    experiment: str,
    job: Job,
    group: Path,
    overrides: tuple[str, ...],
    plugins: list[str],
    jobs: int,
) -> Launch:
    """The ``python -m rnnzoo train`` process of one run. The runs share the W&B
    group named after the group folder, and show no progress bar (their output
    goes to a log file), unless the command line sets those keys."""
    fixed = []
    if not has_key(overrides, "tracking.group"):
        fixed.append(f"tracking.group={group.name}")
    if not has_key(overrides, "trainer.progress"):
        fixed.append("trainer.progress=false")
    argv = [sys.executable, "-m", "rnnzoo", "train", experiment, *job.overrides, *fixed]
    argv += ["--run-dir", str(group / job.folder_name)]
    argv += [arg for spec in plugins for arg in ("-p", spec)]
    env = waitpolicy.for_runs(os.environ, jobs)
    env["PYTHONUNBUFFERED"] = "1"
    # N runs at once on C cores: C/N threads each, unless the user says otherwise
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    # the log stays beside the run folder until the run has created it: a new run
    # refuses a folder that already holds files
    return Launch(argv, group / f"{job.folder_name}.log", env)


class GridReport:
    """What the grid says as it goes: a line per finished run, the final table,
    ``multirun.json`` and the resume commands."""

    def __init__(
        self,
        experiment: str,
        overrides: tuple[str, ...],
        jobs: int,
        group: Path,
        grid: list[Job],
        launches: list[Launch],
    ) -> None:
        self.experiment, self.overrides, self.jobs = experiment, overrides, jobs
        self.group, self.grid, self.launches = group, grid, launches
        self.done = 0
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S")
        self._lock = threading.Lock()

    def folder(self, job: Job) -> Path:
        return self.group / job.folder_name

    def log_of(self, job: Job, launch: Launch) -> Path:
        """``RUN/train.log`` once the run has a folder, else the log beside it."""
        moved = self.folder(job) / "train.log"
        return moved if moved.is_file() else launch.log

    def status(self, job: Job, launch: Launch) -> str:
        summary = read_summary(self.folder(job)) or {}
        if launch.state == "skipped":
            return "not started"
        if launch.state != "done":
            return launch.state
        if launch.exit_code == 0:
            return str(summary.get("status", "finished"))
        if launch.exit_code == 3:
            return "diverged"
        return "interrupted" if launch.exit_code in INTERRUPTED else "failed"

    def metric(self, job: Job) -> str:
        """``val/mse 0.0123``: the run's final main metric, or ""."""
        summary = read_summary(self.folder(job)) or {}
        key = main_key(summary)
        value = summary.get(key) if key else None
        return f"{key} {fmt(float(value))}" if isinstance(value, (int, float)) else ""

    def ended(self, launch: Launch) -> None:
        """One run ended: move its log into its folder, print its line, update
        ``multirun.json`` (called from the pool's worker threads)."""
        job = self.grid[self.launches.index(launch)]
        if is_run(self.folder(job)):
            os.replace(launch.log, self.folder(job) / "train.log")
        status, metric = self.status(job, launch), self.metric(job)
        with self._lock:
            self.done += 1
            what = f"{status}, {metric}" if metric and launch.exit_code == 0 else status
            if launch.exit_code not in (0, *INTERRUPTED):
                what += f", exit {launch.exit_code}"
            click.echo(
                f"[{self.done}/{len(self.grid)}] {job.label}: {what} ({launch.wall_s or 0:.0f} s)"
            )
            if launch.exit_code not in (0, *INTERRUPTED):
                click.echo(f"  the end of {self.log_of(job, launch)}:")
                for line in tail(self.log_of(job, launch)):
                    click.echo(f"    {line}")
            self.write()

    def signalled(self, count: int) -> None:
        running = sum(1 for launch in self.launches if launch.state == "running")
        click.echo(
            f"Interrupted: asking the {running} running run(s) to stop after their current "
            "step, with a checkpoint"
            + (" (press Ctrl-C again to stop them at once)" if count == 1 else "; stopping now"),
            err=True,
        )

    def write(self) -> None:
        """``multirun.json``: the grid, and each run's state so far."""
        runs = [
            {
                "n": job.n,
                "run_dir": str(self.folder(job)),
                "overrides": list(job.overrides),
                "swept": list(job.swept),
                "command": shlex.join(["rnnzoo", *launch.argv[3:]]),
                "status": self.status(job, launch),
                "exit_code": launch.exit_code,
                "wall_s": launch.wall_s,
            }
            for job, launch in zip(self.grid, self.launches, strict=True)
        ]
        data = {
            "group": self.group.name,
            "experiment": self.experiment,
            "overrides": list(self.overrides),
            "jobs": self.jobs,
            "started": self.started,
            "runs": runs,
        }
        write_text_atomic(self.group / "multirun.json", json.dumps(data, indent=2) + "\n")

    def table(self) -> None:
        rows = [
            (str(job.n), job.label, self.status(job, launch), self.metric(job),
             f"{launch.wall_s:.0f} s" if launch.wall_s is not None else "", str(self.folder(job)))
            for job, launch in zip(self.grid, self.launches, strict=True)
        ]  # fmt: skip
        header = ("#", "run", "status", "main metric", "time", "folder")
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        click.echo()
        for row in [header, *rows]:
            click.echo(
                "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            )

    def resume_hints(self) -> None:
        """How to finish the grid: resume the interrupted runs, start the others."""
        lines = []
        for job, launch in zip(self.grid, self.launches, strict=True):
            folder = self.folder(job)
            if self.status(job, launch) not in ("interrupted", "not started"):
                continue
            if is_run(folder):
                lines.append(shlex.join(["rnnzoo", "train", "--resume", str(folder)]))
            else:
                lines.append(shlex.join(["rnnzoo", *launch.argv[3:]]))
        if lines:
            click.echo("\nInterrupted. To finish the grid, run:", err=True)
            for line in lines:
                click.echo(f"  {line}", err=True)


def tail(path: Path, lines: int = TAIL) -> list[str]:
    """The last non-empty lines of a log."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    kept = [line.rstrip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return kept[-lines:]
