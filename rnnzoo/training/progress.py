"""What a person watching training sees: on a terminal a progress bar with the loss
and the throughput; in a log file (stderr not a terminal) a plain line per logging
window, at most every few seconds, with the step, loss, throughput and time left."""

from __future__ import annotations

import sys
import time
from typing import Any

import torch
from tqdm import tqdm

#: the least time between two plain progress lines (the last one always shows)
PLAIN_EVERY_S = 5.0


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class Progress:
    """Progress on stderr (nothing when disabled) and the token count of the current
    logging window."""

    def __init__(self, total: int, initial: int, enabled: bool) -> None:
        self.plain = enabled and not sys.stderr.isatty()
        self.total, self.step = total, initial
        self.bar = tqdm(
            total=total, initial=initial, disable=not enabled or self.plain,
            dynamic_ncols=True, unit="step", file=sys.stderr,
        )  # fmt: skip
        self.started = self.window_start = self.last_line = time.perf_counter()
        self.first = initial
        self.tokens = 0

    def tokens_per_s(self) -> float:
        """Throughput since the window began; starts the next window."""
        now = time.perf_counter()
        rate = self.tokens / max(now - self.window_start, 1e-9)
        self.window_start, self.tokens = now, 0
        return rate

    def show(self, loss: float, tokens_per_s: float) -> None:
        """The latest logging window's loss and throughput."""
        if not self.plain:
            self.bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens_per_s:.0f}", refresh=False)
            return
        now = time.perf_counter()
        if now - self.last_line < PLAIN_EVERY_S and self.step < self.total:
            return
        self.last_line = now
        per_step = (now - self.started) / max(self.step - self.first, 1)
        eta = _duration(per_step * (self.total - self.step))
        print(
            f"rnnzoo: step {self.step}/{self.total}  loss {loss:.4f}  "
            f"{tokens_per_s:,.0f} tokens/s  eta {eta}",
            file=sys.stderr,
            flush=True,
        )

    def step_done(self) -> None:
        self.step += 1
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def say(text: str) -> None:
    """A line on stderr that does not break the progress bar."""
    tqdm.write(f"rnnzoo: {text}", file=sys.stderr)


def notices(cfg: Any, device: torch.device) -> list[str]:
    """Lines to say as training starts about settings that act unlike they read:
    bf16 off the GPU, and ``model.compile``'s slow first step."""
    lines = []
    if cfg.trainer.precision == "bf16" and device.type != "cuda":
        lines.append("trainer.precision=bf16 needs CUDA; training in fp32")
    if cfg.model.compile:
        lines.append(
            f"model.compile: torch.compile compiles blocks of {cfg.model.compile_steps} steps "
            "the first time a cell runs the step loop; that step takes about half a minute "
            "on a small CPU, seconds once the compiler's cache is warm"
        )
    return lines
