"""What a person watching training sees: a progress bar with the loss and the
throughput, measured over each logging window."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


class Progress:
    """A tqdm bar on stderr (or nothing, when disabled) and the token count of the
    current logging window."""

    def __init__(self, total: int, initial: int, enabled: bool) -> None:
        self.bar = tqdm(
            total=total, initial=initial, disable=not enabled, dynamic_ncols=True,
            unit="step", file=sys.stderr,
        )  # fmt: skip
        self.window_start = time.perf_counter()
        self.tokens = 0

    def tokens_per_s(self) -> float:
        """Throughput since the window began; starts the next window."""
        now = time.perf_counter()
        rate = self.tokens / max(now - self.window_start, 1e-9)
        self.window_start, self.tokens = now, 0
        return rate

    def show(self, loss: float, tokens_per_s: float) -> None:
        self.bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens_per_s:.0f}", refresh=False)

    def step_done(self) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def say(text: str) -> None:
    """A line on stderr that does not break the progress bar."""
    tqdm.write(f"rnnzoo: {text}", file=sys.stderr)
