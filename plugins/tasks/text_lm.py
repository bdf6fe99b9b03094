"""Language modelling on a plain text file: characters or words, read as streams."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnzoo import Batch, Task, TaskSpec, hookimpl
from rnnzoo.errors import CheckpointError, ConfigError, DataError
from rnnzoo_plugins.tasks import textfile

UNK, EOS = "<unk>", "<eos>"
VOCAB_FILE = "vocab.json"


def lanes(ids: Tensor, batch_size: int, where: str) -> tuple[Tensor, Tensor]:
    """Inputs and next-token targets ``[batch_size, L]``: lane ``b`` is the ``b``-th
    contiguous slice of the stream."""
    length = (ids.numel() - 1) // batch_size
    if length < 1:
        raise DataError(
            f"{where} has {ids.numel()} tokens, too few for {batch_size} parallel streams. "
            "Use a longer text or a smaller trainer.batch_size."
        )
    inputs = ids[: batch_size * length].view(batch_size, length)
    targets = ids[1 : batch_size * length + 1].view(batch_size, length)
    return inputs, targets


class TextLMTask(Task):
    """Shared machinery of the character and word language models.

    The text is one token stream; ``trainer.batch_size`` lanes each read their own
    contiguous slice, ``bptt`` tokens per batch, so batch ``i + 1`` continues batch
    ``i`` lane by lane and the trainer carries the state across batches. The
    validation stream is ``dev`` or, without it, the last ``val_fraction`` of
    ``train``. A training lane starts again from the initial state when it wraps
    round and, at random, in a fraction ``reset_prob`` of batches: the text goes
    on, but the model learns to begin without context, as ``rnnzoo sample`` does
    (a state carried forever drifts to where a fresh start is out of reach).
    """

    kind = ""
    stream_unit = "token"

    def __init__(
        self,
        seed: int = 0,
        train: str | None = None,
        dev: str | None = None,
        val_fraction: float = 0.1,
        bptt: int = 100,
        lowercase: bool = False,
        reset_prob: float = 0.02,
    ) -> None:
        if bptt < 1:
            raise ConfigError(f"'task.bptt' must be at least 1, got {bptt}.")
        if not 0.0 <= reset_prob <= 1.0:
            raise ConfigError(f"'task.reset_prob' must be in [0, 1], got {reset_prob}.")
        if dev is None and not 0.0 < val_fraction < 1.0:
            raise ConfigError(
                f"'task.val_fraction' must be in (0, 1), got {val_fraction}; or pass "
                "a validation file as task.dev=PATH."
            )
        self.seed = seed
        self.train_path, self.dev_path = train, dev
        self.reset_prob = reset_prob
        self.val_fraction = val_fraction
        self.bptt = bptt
        self.lowercase = lowercase
        # filled from the training file on first use, or by load()
        self.vocab: dict[str, Any] | None = None
        self._index: dict[str, int] = {}
        self._streams: dict[str, Tensor] = {}
        self._lanes: dict[tuple[str, int], tuple[Tensor, Tensor]] = {}

    # -- text <-> tokens ---------------------------------------------------------

    def tokenize(self, text: str) -> list[str]:
        raise NotImplementedError

    def detokenize(self, tokens: list[str]) -> str:
        raise NotImplementedError

    def build_vocabulary(self, counts: Counter[str]) -> list[str]:
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        self._vocabulary()
        unk = self._index[UNK]
        text = text.lower() if self.lowercase else text
        return [self._index.get(t, unk) for t in self.tokenize(text)]

    def decode(self, ids: list[int]) -> str:
        tokens = self._vocabulary()["tokens"]
        return self.detokenize([tokens[i] for i in ids])

    # -- data --------------------------------------------------------------------

    def _tokens(self, key: str, path: str | None) -> list[str]:
        file = textfile.find(path, key, "text file")
        text = textfile.read_text(file, key)
        return self.tokenize(text.lower() if self.lowercase else text)

    def _split(self) -> tuple[list[str], list[str] | None]:
        """Training tokens, and validation tokens when they come from the same file."""
        tokens = self._tokens("task.train", self.train_path)
        if self.dev_path is not None:
            textfile.find(self.dev_path, "task.dev", "text file")  # fail before training
            return tokens, None
        cut = int(len(tokens) * (1 - self.val_fraction))
        return tokens[:cut], tokens[cut:]

    def _vocabulary(self) -> dict[str, Any]:
        if self.vocab is None:
            train, val = self._split()
            counts = Counter(train)
            tokens = self.build_vocabulary(counts)
            self._set_vocab(
                {
                    "kind": self.kind,
                    "lowercase": self.lowercase,
                    "tokens": tokens,
                    "counts": [counts[t] for t in tokens],
                }
            )
            self._streams["train"] = self._ids(train)
            if val is not None:
                self._streams["val"] = self._ids(val)
        return self.vocab  # type: ignore[return-value]

    def _set_vocab(self, vocab: dict[str, Any]) -> None:
        self.vocab = vocab
        self._index = {t: i for i, t in enumerate(vocab["tokens"])}
        self._streams, self._lanes = {}, {}

    def _ids(self, tokens: list[str]) -> Tensor:
        unk = self._index[UNK]
        return torch.tensor([self._index.get(t, unk) for t in tokens], dtype=torch.long)

    def _stream(self, name: str) -> Tensor:
        self._vocabulary()
        if name not in self._streams:
            if name == "val" and self.dev_path is not None:
                self._streams["val"] = self._ids(self._tokens("task.dev", self.dev_path))
            else:
                train, val = self._split()
                self._streams["train"] = self._ids(train)
                if val is not None:
                    self._streams["val"] = self._ids(val)
        return self._streams[name]

    def _lanes_of(self, name: str, batch_size: int) -> tuple[Tensor, Tensor]:
        key = (name, batch_size)
        if key not in self._lanes:
            where = "The validation text" if name == "val" else "The training text"
            self._lanes[key] = lanes(self._stream(name), batch_size, where)
        return self._lanes[key]

    # -- the task contract -------------------------------------------------------

    @property
    def spec(self) -> TaskSpec:  # type: ignore[override]
        size = len(self._vocabulary()["tokens"])
        return TaskSpec("tokens", size, "classes", size, per_token=True, stream=True)

    def train_batch(self, index: int, batch_size: int) -> Batch:
        inputs, targets = self._lanes_of("train", batch_size)
        windows = math.ceil(inputs.shape[1] / self.bptt)
        window = index % windows
        start, stop = window * self.bptt, (window + 1) * self.bptt
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        reset = torch.rand(batch_size, generator=g) < self.reset_prob
        if window == 0:  # each lane wraps round to the start of its slice
            reset[:] = True
        return Batch(inputs=inputs[:, start:stop], targets=targets[:, start:stop], reset=reset)

    def val_batches(self, batch_size: int) -> Iterator[Batch]:
        inputs, targets = self._lanes_of("val", batch_size)
        for start in range(0, inputs.shape[1], self.bptt):
            stop = start + self.bptt
            yield Batch(inputs=inputs[:, start:stop], targets=targets[:, start:stop])

    def metrics(self, predictions: Tensor, batch: Batch) -> dict[str, tuple[float, float]]:
        nats = F.cross_entropy(
            predictions.float().flatten(0, 1), batch.targets.flatten(), reduction="sum"
        )
        return {self.bits_metric: (float(nats) / math.log(2), float(batch.targets.numel()))}

    @property
    def bits_metric(self) -> str:
        return f"bits_per_{self.stream_unit}"

    def baseline(self) -> dict[str, float]:
        """The unigram model: training frequencies (add-one smoothed) on the validation text."""
        counts = torch.tensor(self._vocabulary()["counts"], dtype=torch.float64) + 1
        log_p = (counts / counts.sum()).log()
        nats = -float(log_p[self._stream("val")].mean())
        return {"loss": nats, self.bits_metric: nats / math.log(2)}

    def save(self, run_dir: Path) -> None:
        textfile.write_json(run_dir / VOCAB_FILE, self._vocabulary())

    def load(self, run_dir: Path) -> None:
        vocab = textfile.read_json(run_dir / VOCAB_FILE)
        if vocab.get("kind") != self.kind or not {"tokens", "counts"} <= vocab.keys():
            raise CheckpointError(
                f"'{run_dir / VOCAB_FILE}' is not a {self.kind}_lm vocabulary; the run "
                f"was trained on another task."
            )
        if vocab.get("lowercase") != self.lowercase:
            raise ConfigError(
                f"The run in '{run_dir}' was trained with task.lowercase="
                f"{vocab.get('lowercase')}; drop the override."
            )
        self._set_vocab(vocab)


class CharLMTask(TextLMTask):
    """Character language model on a plain text file, such as Tiny Shakespeare.

    Every character is a token; the vocabulary is the training text's characters
    (sorted, so the newline comes first) plus ``<unk>``. ``train`` is a UTF-8 text
    file (a path, or ``data:tinyshakespeare/input.txt`` after ``rnnzoo data fetch
    tinyshakespeare``); ``dev`` another one, or the last ``val_fraction`` of
    ``train``. Batches are ``bptt`` characters of ``trainer.batch_size`` contiguous
    streams, the state carried across batches. Metrics: loss (nats per character) and bits per
    character. ``rnnzoo sample RUN_DIR --prompt ...`` continues a text.
    """

    kind = "char"
    stream_unit = "char"

    def tokenize(self, text: str) -> list[str]:
        return list(text)

    def detokenize(self, tokens: list[str]) -> str:
        return "".join("\N{REPLACEMENT CHARACTER}" if t == UNK else t for t in tokens)

    def build_vocabulary(self, counts: Counter[str]) -> list[str]:
        return sorted(counts) + [UNK]


class WordLMTask(TextLMTask):
    """Word language model on a plain text file, such as Penn Treebank or WikiText.

    Words are whitespace-separated; every newline is the token ``<eos>``. The vocabulary
    holds ``<eos>`` (the end of a line), the training words seen at least ``min_freq`` times (most
    frequent first) and ``<unk>``. Files, split and batching as in ``char_lm``.
    Metrics: loss (nats per word; perplexity is exp of it) and bits per word.
    """

    kind = "word"
    stream_unit = "word"

    def __init__(
        self,
        seed: int = 0,
        train: str | None = None,
        dev: str | None = None,
        val_fraction: float = 0.1,
        bptt: int = 35,
        lowercase: bool = False,
        reset_prob: float = 0.02,
        min_freq: int = 1,
    ) -> None:
        if min_freq < 1:
            raise ConfigError(f"'task.min_freq' must be at least 1, got {min_freq}.")
        super().__init__(seed, train, dev, val_fraction, bptt, lowercase, reset_prob)
        self.min_freq = min_freq

    def tokenize(self, text: str) -> list[str]:
        lines = text.split("\n")
        tokens = [t for line in lines[:-1] for t in (*line.split(), EOS)]
        return tokens + lines[-1].split()

    def detokenize(self, tokens: list[str]) -> str:
        return " ".join(tokens).replace(f" {EOS} ", "\n").replace(EOS, "\n")

    def build_vocabulary(self, counts: Counter[str]) -> list[str]:
        kept = [t for t, n in counts.items() if n >= self.min_freq and t not in (EOS, UNK)]
        return [EOS] + sorted(kept, key=lambda t: (-counts[t], t)) + [UNK]


@hookimpl
def rnnzoo_tasks() -> dict[str, Any]:
    return {"char_lm": CharLMTask, "word_lm": WordLMTask}
