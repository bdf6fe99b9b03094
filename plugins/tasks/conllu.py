"""Part-of-speech tagging on CoNLL-U files (Universal Dependencies)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from rnnzoo import Batch, Task, TaskSpec, hookimpl
from rnnzoo.adapters import DEFAULT_EMBEDDING_DIM
from rnnzoo.errors import CheckpointError, ConfigError, DataError
from rnnzoo_plugins.tasks import textfile
from rnnzoo_plugins.tasks.char_features import WordCharEncoder

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
#: tag columns of a CoNLL-U word line (0-based)
COLUMNS = {"upos": 3, "xpos": 4}
#: longer words keep their first and last half of this many characters
MAX_WORD_CHARS = 30
#: training batches are drawn from pools of this many batches, sorted by length
POOL_BATCHES = 50
VOCAB_FILE = "vocab.json"


@dataclass
class Sentence:
    words: list[str]
    tags: list[str]
    #: file and line of each word, for error messages
    where: list[str]


def parse_conllu(text: str, path: Path, column: int) -> list[Sentence]:
    """Sentences of a CoNLL-U file: words and the tag in ``column``.

    Lines end at a newline (a carriage return before it is dropped). Comment
    lines, multiword-token lines (``3-4``) and empty nodes (``8.1``) are skipped;
    anything that is not ten tab-separated fields with a word id raises
    DataError naming the file and line.
    """
    sentences: list[Sentence] = []
    current = Sentence([], [], [])
    tag_name = "UPOS" if column == COLUMNS["upos"] else "XPOS"
    # lines end at "\n" only: str.splitlines would also break inside a field at
    # U+2028, U+0085, a form feed and others, which a word may hold
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.removesuffix("\r")
        where = f"'{path}' line {number}"
        if not line.strip():
            if current.words:
                sentences.append(current)
                current = Sentence([], [], [])
            continue
        if line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 10:
            raise DataError(
                f"{where} is not a CoNLL-U line: {len(fields)} tab-separated field(s) where "
                f"10 are expected ({line[:60]!r}). Is this a CoNLL-U file?"
            )
        token_id = fields[0]
        if "-" in token_id or "." in token_id:  # multiword token or empty node
            continue
        if not token_id.isdigit() or int(token_id) != len(current.words) + 1:
            raise DataError(
                f"{where}: word id {token_id!r} should be {len(current.words) + 1} (ids count "
                "1, 2, 3, ... within a sentence; a blank line ends a sentence)."
            )
        tag = fields[column]
        if tag in ("", "_"):
            other = "xpos" if tag_name == "UPOS" else "upos"
            raise DataError(
                f"{where}: the word {fields[1]!r} has no {tag_name} tag. Tag every word, or "
                f"choose the other column with task.target={other}."
            )
        current.words.append(fields[1])
        current.tags.append(tag)
        current.where.append(where)
    if current.words:
        sentences.append(current)
    if not sentences:
        raise DataError(f"'{path}' holds no sentences (no CoNLL-U word lines).")
    return sentences


def clip_word(word: str) -> str:
    """At most MAX_WORD_CHARS characters: long words keep their prefix and suffix."""
    if len(word) <= MAX_WORD_CHARS:
        return word
    half = MAX_WORD_CHARS // 2
    return word[:half] + word[-half:]


@dataclass
class Encoded:
    """One sentence as tensors: word ids, tag ids and character ids ``[T, W]``."""

    words: Tensor
    tags: Tensor
    chars: Tensor


def pad_batch(items: list[Encoded]) -> Batch:
    lengths = torch.tensor([len(e.words) for e in items])
    steps = int(lengths.max())
    width = max(e.chars.shape[1] for e in items)
    words = torch.full((len(items), steps), PAD_ID, dtype=torch.long)
    tags = torch.zeros(len(items), steps, dtype=torch.long)
    chars = torch.zeros(len(items), steps, width, dtype=torch.long)
    for b, e in enumerate(items):
        n = len(e.words)
        words[b, :n] = e.words
        tags[b, :n] = e.tags
        chars[b, :n, : e.chars.shape[1]] = e.chars
    return Batch(inputs=words, targets=tags, lengths=lengths, extras={"chars": chars})


class ConlluTaggingTask(Task):
    """Part-of-speech tagging of CoNLL-U (Universal Dependencies) files.

    ``train`` and ``dev`` are CoNLL-U files; ``target`` picks the UPOS or XPOS
    column. The word vocabulary is built from the training file (words seen at least
    ``min_freq`` times; the rest share ``<unk>``), optionally lowercased.
    ``char_features`` adds a character-CNN encoding of each word (``char_dim``
    filters; it always sees the original spelling) so unknown words can still be
    tagged; ``dropout`` applies to the word features. ``word_dropout`` replaces
    that fraction of training words by ``<unk>``, so the model learns to tag from
    context and spelling alone. Metrics: token accuracy ``acc`` and ``oov_acc``,
    the accuracy on words outside the vocabulary. Vocabularies and the tag set are
    stored in the run folder.
    """

    main_metric = "acc"
    main_metric_mode = "max"

    def __init__(
        self,
        seed: int = 0,
        train: str | None = None,
        dev: str | None = None,
        target: Literal["upos", "xpos"] = "upos",
        min_freq: int = 2,
        lowercase: bool = False,
        char_features: bool = True,
        char_dim: int = 50,
        dropout: float = 0.0,
        word_dropout: float = 0.0,
    ) -> None:
        if min_freq < 1:
            raise ConfigError(f"'task.min_freq' must be at least 1, got {min_freq}.")
        if char_dim < 1:
            raise ConfigError(f"'task.char_dim' must be at least 1, got {char_dim}.")
        for key, value in (("dropout", dropout), ("word_dropout", word_dropout)):
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"'task.{key}' must be in [0, 1), got {value}.")
        self.seed = seed
        self.train_path, self.dev_path = train, dev
        self.target = target
        self.min_freq = min_freq
        self.lowercase = lowercase
        self.use_chars = char_features
        self.char_dim = char_dim
        self.dropout = dropout
        self.word_dropout = word_dropout
        # filled from the training file on first use, or by load()
        self.vocab: dict[str, Any] | None = None
        self._train: list[Encoded] | None = None
        self._dev: list[Encoded] | None = None
        self._plans: dict[tuple[int, int], list[list[int]]] = {}

    # -- data --------------------------------------------------------------------

    def _read(self, key: str, path: str | None) -> list[Sentence]:
        file = textfile.find(path, key, "CoNLL-U file")
        return parse_conllu(textfile.read_text(file, key), file, COLUMNS[self.target])

    def _vocabulary(self) -> dict[str, Any]:
        if self.vocab is None:
            sentences = self._read("task.train", self.train_path)
            textfile.find(self.dev_path, "task.dev", "CoNLL-U file")  # fail before training
            words = Counter(self._form(w) for s in sentences for w in s.words)
            chars = Counter(c for s in sentences for w in s.words for c in clip_word(w))
            tags = Counter(t for s in sentences for t in s.tags)
            self.vocab = {
                "target": self.target,
                "lowercase": self.lowercase,
                "words": [PAD, UNK] + sorted(w for w, n in words.items() if n >= self.min_freq),
                "chars": [PAD, UNK] + sorted(chars),
                "tags": sorted(tags),
                "tag_counts": [tags[t] for t in sorted(tags)],
            }
            self._train = self._encode(sentences, "task.train")
        return self.vocab

    def _form(self, word: str) -> str:
        return word.lower() if self.lowercase else word

    def _encode(self, sentences: list[Sentence], key: str) -> list[Encoded]:
        vocab = self._vocabulary()
        word_ids = {w: i for i, w in enumerate(vocab["words"])}
        char_ids = {c: i for i, c in enumerate(vocab["chars"])}
        tag_ids = {t: i for i, t in enumerate(vocab["tags"])}
        out = []
        for s in sentences:
            for tag, where in zip(s.tags, s.where, strict=True):
                if tag not in tag_ids:
                    raise DataError(
                        f"{where} ('{key}'): the {self.target.upper()} tag {tag!r} never "
                        f"occurs in the training data, so the model cannot predict it "
                        f"(known tags: {', '.join(vocab['tags'])}). Fix the tag or train "
                        "on data that has it."
                    )
            clipped = [clip_word(w) for w in s.words]
            width = max(len(w) for w in clipped)
            chars = torch.zeros(len(clipped), width, dtype=torch.long)
            for i, w in enumerate(clipped):
                chars[i, : len(w)] = torch.tensor([char_ids.get(c, UNK_ID) for c in w])
            out.append(
                Encoded(
                    words=torch.tensor([word_ids.get(self._form(w), UNK_ID) for w in s.words]),
                    tags=torch.tensor([tag_ids[t] for t in s.tags]),
                    chars=chars,
                )
            )
        return out

    def _train_data(self) -> list[Encoded]:
        if self._train is None:
            self._vocabulary()
        if self._train is None:  # vocabulary came from a run folder
            self._train = self._encode(self._read("task.train", self.train_path), "task.train")
        return self._train

    def _dev_data(self) -> list[Encoded]:
        if self._dev is None:
            self._vocabulary()
            self._dev = self._encode(self._read("task.dev", self.dev_path), "task.dev")
        return self._dev

    # -- the task contract -------------------------------------------------------

    @property
    def spec(self) -> TaskSpec:  # type: ignore[override]
        vocab = self._vocabulary()
        return TaskSpec(
            "tokens", len(vocab["words"]), "classes", len(vocab["tags"]), per_token=True
        )

    def input_adapter(self, input_dim: int | None) -> nn.Module:
        vocab = self._vocabulary()
        return WordCharEncoder(
            len(vocab["words"]),
            input_dim or DEFAULT_EMBEDDING_DIM,
            len(vocab["chars"]) if self.use_chars else 0,
            self.char_dim,
            self.dropout,
        )

    def _plan(self, epoch: int, batch_size: int) -> list[list[int]]:
        """Epoch ``epoch``'s batches: sentences shuffled, sorted by length within
        pools of POOL_BATCHES batches (little padding), batches shuffled."""
        key = (epoch, batch_size)
        if key not in self._plans:
            data = self._train_data()
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(len(data), generator=g).tolist()
            pool = batch_size * POOL_BATCHES
            batches = []
            for start in range(0, len(order), pool):
                chunk = sorted(order[start : start + pool], key=lambda i: len(data[i].words))
                batches += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
            shuffle = torch.randperm(len(batches), generator=g).tolist()
            self._plans = {key: [batches[i] for i in shuffle]}
        return self._plans[key]

    def train_batch(self, index: int, batch_size: int) -> Batch:
        data = self._train_data()
        full, rest = divmod(len(data), batch_size * POOL_BATCHES)
        per_epoch = full * POOL_BATCHES + -(-rest // batch_size)
        plan = self._plan(index // per_epoch, batch_size)
        batch = pad_batch([data[i] for i in plan[index % per_epoch]])
        if self.word_dropout > 0:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + index + (1 << 40))
            drop = torch.rand(batch.inputs.shape, generator=g) < self.word_dropout
            batch.inputs = batch.inputs.masked_fill(drop & batch.mask(), UNK_ID)
        return batch

    def val_batches(self, batch_size: int) -> Iterator[Batch]:
        data = self._dev_data()
        order = sorted(range(len(data)), key=lambda i: len(data[i].words))
        for start in range(0, len(order), batch_size):
            yield pad_batch([data[i] for i in order[start : start + batch_size]])

    def metrics(self, predictions: Tensor, batch: Batch) -> dict[str, tuple[float, float]]:
        real = batch.mask()
        correct = (predictions.argmax(-1) == batch.targets) & real
        oov = real & (batch.inputs == UNK_ID)
        return {
            "acc": (float(correct.sum()), float(real.sum())),
            "oov_acc": (float((correct & oov).sum()), float(oov.sum())),
        }

    def baseline(self) -> dict[str, float]:
        """Always the most frequent training tag; loss of the training tag frequencies."""
        counts = torch.tensor(self._vocabulary()["tag_counts"], dtype=torch.float64)
        log_p = (counts / counts.sum()).log()
        dev_tags = torch.cat([e.tags for e in self._dev_data()])
        return {
            "acc": float((dev_tags == int(counts.argmax())).double().mean()),
            "loss": -float(log_p[dev_tags].mean()),
        }

    def save(self, run_dir: Path) -> None:
        textfile.write_json(run_dir / VOCAB_FILE, self._vocabulary())

    def load(self, run_dir: Path) -> None:
        vocab = textfile.read_json(run_dir / VOCAB_FILE)
        if not {"words", "chars", "tags", "tag_counts"} <= vocab.keys():
            raise CheckpointError(f"'{run_dir / VOCAB_FILE}' is not a conllu_tagging vocabulary.")
        for key in ("target", "lowercase"):
            if vocab.get(key) != getattr(self, key):
                raise ConfigError(
                    f"The run in '{run_dir}' was trained with task.{key}={vocab.get(key)}, "
                    f"not {getattr(self, key)}; drop the override or use task.{key}="
                    f"{vocab.get(key)}."
                )
        self.vocab = vocab
        self._train = self._dev = None
        self._plans = {}


@hookimpl
def rnnzoo_tasks() -> dict[str, Any]:
    return {"conllu_tagging": ConlluTaggingTask}
