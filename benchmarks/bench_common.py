"""Shared benchmark machinery: interleaved timing, peak memory, machine description.

Shared machines are noisy, so contenders are never timed one after the other:
each round runs every contender once (in a rotated order) and results are
reported as the median over rounds, ratios as the median of per-round ratios.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

Fn = Callable[[], object]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Fn, calls: int, device: torch.device) -> float:
    """Seconds per call of ``fn`` over ``calls`` calls, waiting for the device."""
    sync(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    sync(device)
    return (time.perf_counter() - start) / calls


def interleaved(
    contenders: dict[str, Fn], rounds: int, min_time: float, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per call of each contender, one sample per round.

    One untimed warm-up call each, then ``rounds`` rounds; in each, every contender
    is called often enough for its sample to last at least ``min_time`` seconds.
    """
    calls = {}
    for name, fn in contenders.items():
        fn()
        calls[name] = max(1, round(min_time / max(timed(fn, 1, device), 1e-6)))
    names = list(contenders)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(timed(contenders[name], calls[name], device))
    return samples


def median(values: list[float]) -> float:
    return statistics.median(values)


def ratio_summary(groups: list[list[float]], per: str) -> dict[str, object]:
    """Ratios to the hand-written loop measured in ``groups`` (sets of processes,
    runs): their pooled median and quartiles, and each group's median."""
    pooled = [r for ratios in groups for r in ratios]
    quartiles = statistics.quantiles(pooled, n=4) if len(pooled) > 1 else pooled * 3
    return {
        "x hand-written": round(statistics.median(pooled), 3),
        "x hand-written, quartiles": [round(q, 3) for q in quartiles],
        f"x hand-written, {per}": [round(statistics.median(r), 3) for r in groups],
    }


def speed_ratio(samples: dict[str, list[float]], name: str, baseline: str) -> float:
    """Median over rounds of ``baseline time / name time``: above 1, ``name`` is faster."""
    pairs = zip(samples[name], samples[baseline], strict=True)
    return statistics.median(base / own for own, base in pairs)


def peak_memory(fn: Fn, device: torch.device) -> int:
    """Peak bytes allocated by tensors during one call of ``fn``, above what was
    live before it.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the allocation and free events
    that ``torch.profiler`` records with ``profile_memory=True`` (every tensor that
    goes through PyTorch's CPU allocator, in time order); their running sum is the
    live memory, and its maximum the peak. Scratch memory that a library (oneDNN,
    BLAS) allocates for itself is not counted.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = prof.profiler.kineto_results.events()  # type: ignore[union-attr]
    deltas = sorted(
        (e.start_ns(), e.nbytes())
        for e in events
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
    )
    live = peak = 0
    for _, nbytes in deltas:
        live += nbytes
        peak = max(peak, live)
    return peak


def devices() -> list[torch.device]:
    """The CPU always, and the first CUDA device when there is one."""
    found = [torch.device("cpu")]
    if torch.cuda.is_available():
        found.append(torch.device("cuda"))
    return found


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, object]:
    info: dict[str, object] = {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    return info


def mib(nbytes: float) -> float:
    return round(nbytes / 2**20, 1)
