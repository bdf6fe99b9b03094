"""Generator head: next-token prediction, and sampling from it."""

from __future__ import annotations

from typing import Any

import torch

from rnnzoo import Batch, TaskSpec, hookimpl
from rnnzoo.errors import ConfigError, UsageError
from rnnzoo_plugins.heads.per_token import PerTokenHead


class LanguageModelHead(PerTokenHead):
    """Language model (generator): at every step a distribution over the next
    token. The task supplies next-token targets; :meth:`sample` continues a prompt
    one token at a time, feeding each sampled token back in."""

    def __init__(
        self,
        input_size: int,
        spec: TaskSpec,
        directions: int = 1,
        hidden: int = 0,
        dropout: float = 0.0,
    ) -> None:
        if directions != 1:
            raise ConfigError(
                "Head 'lm' predicts the next token, so it may only read left to right, but "
                "the model is bidirectional: set model.bidirectional=false."
            )
        super().__init__(input_size, spec, directions, hidden, dropout)

    @torch.no_grad()
    def sample(
        self,
        model: Any,
        prompt: list[int],
        length: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> list[int]:
        """Continue ``prompt`` (token ids) by ``length`` sampled tokens.

        ``temperature`` divides the logits (lower: more conservative, towards 0:
        greedy); ``top_k`` keeps only the k most likely tokens at each step. The
        model runs in eval mode (no dropout) and is put back as it was.
        """
        if not prompt:
            raise UsageError("sample() needs a prompt of at least one token id.")
        if top_k is not None and top_k < 1:
            raise UsageError(f"top_k must be at least 1 (or None for all tokens), got {top_k}.")
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        try:
            tokens = torch.tensor([prompt], device=device)
            state = None
            out: list[int] = []
            for _ in range(length):
                result = model(Batch(inputs=tokens, targets=tokens), state=state)
                state = result.final_state
                logits = result.predictions[0, -1].float() / max(temperature, 1e-6)
                if top_k is not None and top_k < logits.numel():
                    cutoff = torch.topk(logits, top_k).values[-1]
                    logits = logits.masked_fill(logits < cutoff, float("-inf"))
                probs = torch.softmax(logits, -1)
                token = int(torch.multinomial(probs.cpu(), 1, generator=generator))
                out.append(token)
                tokens = torch.tensor([[token]], device=device)
        finally:
            model.train(was_training)
        return out


@hookimpl
def rnnzoo_heads() -> dict[str, Any]:
    return {"lm": LanguageModelHead}
