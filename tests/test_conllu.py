"""The conllu_tagging task on slices of UD English EWT, and its CLI round trip."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest
import torch

from rnnzoo.cli import main
from rnnzoo.errors import ConfigError, DataError
from rnnzoo.task import Batch
from rnnzoo_plugins.tasks.char_features import WordCharEncoder
from rnnzoo_plugins.tasks.conllu import UNK_ID, ConlluTaggingTask, parse_conllu

UD = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ud_english_ewt"


@pytest.fixture(scope="module")
def ud() -> Path:
    if not (UD / "en_ewt-ud-train.conllu").is_file():
        message = f"UD English EWT is missing at {UD.resolve()} (see shared/data/README.md)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return UD


def head_sentences(path: Path, n: int) -> str:
    """The first ``n`` sentences of a CoNLL-U file, comments and all."""
    blocks = path.read_text(encoding="utf-8").split("\n\n")
    return "\n\n".join(blocks[:n]) + "\n\n"


@pytest.fixture(scope="module")
def slices(ud: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("ud")
    train, dev = folder / "train.conllu", folder / "dev.conllu"
    # 300 sentences hold multiword tokens ("don't" = do + n't) and an empty node (8.1)
    train.write_text(head_sentences(ud / "en_ewt-ud-train.conllu", 300), encoding="utf-8")
    dev.write_text(head_sentences(ud / "en_ewt-ud-dev.conllu", 100), encoding="utf-8")
    return train, dev


def make_task(slices: tuple[Path, Path], **kwargs: object) -> ConlluTaggingTask:
    return ConlluTaggingTask(train=str(slices[0]), dev=str(slices[1]), **kwargs)  # type: ignore[arg-type]


def test_parse_skips_multiword_tokens_and_empty_nodes(slices: tuple[Path, Path]) -> None:
    text = slices[0].read_text(encoding="utf-8")
    sentences = parse_conllu(text, slices[0], column=3)
    word_lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    words = [line for line in word_lines if line.split("\t")[0].isdigit()]
    assert any("-" in line.split("\t")[0] for line in word_lines)
    assert any("." in line.split("\t")[0] for line in word_lines)
    assert len(sentences) == 300
    assert sum(len(s.words) for s in sentences) == len(words)
    first = sentences[0]
    assert first.words[:3] == ["Al", "-", "Zaman"]
    assert first.tags[:3] == ["PROPN", "PUNCT", "PROPN"]
    xpos = parse_conllu(text, slices[0], column=4)
    assert xpos[0].tags[:3] == ["NNP", "HYPH", "NNP"]


def test_vocabulary_min_freq_lowercase_and_spec(slices: tuple[Path, Path]) -> None:
    task = make_task(slices, min_freq=2)
    spec = task.spec
    vocab = task.vocab
    assert vocab is not None
    assert vocab["words"][:2] == ["<pad>", "<unk>"]
    counts = Counter(w for s in parse_conllu(slices[0].read_text(), slices[0], 3) for w in s.words)
    assert set(vocab["words"][2:]) == {w for w, n in counts.items() if n >= 2}
    assert "the" in vocab["words"] and min(counts.values()) == 1
    assert len(vocab["tags"]) == 17
    assert spec.input_size == len(vocab["words"]) and spec.output_size == 17
    everything = make_task(slices, min_freq=1).spec.input_size
    lower = make_task(slices, min_freq=1, lowercase=True).spec.input_size
    assert lower < everything and len(vocab["words"]) < everything


def test_train_batches_are_pure_bucketed_and_cover_an_epoch(slices: tuple[Path, Path]) -> None:
    a, b = make_task(slices, seed=3), make_task(slices, seed=3)
    for index in (0, 5, 13):
        x, y = a.train_batch(index, 16), b.train_batch(index, 16)
        assert torch.equal(x.inputs, y.inputs) and torch.equal(x.extras["chars"], y.extras["chars"])
    per_epoch = -(-300 // 16)
    epoch = [a.train_batch(i, 16) for i in range(per_epoch)]
    assert sum(len(batch.lengths) for batch in epoch) == 300  # type: ignore[arg-type]
    tokens = sum(batch.num_tokens() for batch in epoch)
    padded = sum(batch.inputs.numel() for batch in epoch)
    assert tokens / padded > 0.85  # sorted pools: little padding
    assert not torch.equal(a.train_batch(0, 16).inputs, a.train_batch(per_epoch, 16).inputs)
    batch = epoch[0]
    assert batch.extras["chars"].shape[:2] == batch.inputs.shape
    assert bool((batch.inputs[~batch.mask()] == 0).all())


def test_word_dropout_hides_training_words_only(slices: tuple[Path, Path]) -> None:
    plain = make_task(slices, min_freq=1)
    dropped, again = (make_task(slices, min_freq=1, word_dropout=0.2) for _ in range(2))
    clean, noisy = plain.train_batch(4, 64), dropped.train_batch(4, 64)
    assert torch.equal(noisy.inputs, again.train_batch(4, 64).inputs)
    real = clean.mask()
    hidden = (noisy.inputs != clean.inputs) & real
    assert bool((noisy.inputs[hidden] == UNK_ID).all())
    assert bool((noisy.inputs[~real] == clean.inputs[~real]).all())
    assert 0.15 < float(hidden.sum()) / float(real.sum()) < 0.25
    assert torch.equal(next(dropped.val_batches(64)).inputs, next(plain.val_batches(64)).inputs)


def test_metrics_accuracy_and_oov_accuracy(slices: tuple[Path, Path]) -> None:
    task = make_task(slices)
    batch = next(task.val_batches(64))
    n_classes = task.spec.output_size
    perfect = torch.nn.functional.one_hot(batch.targets, n_classes).float()
    metrics = task.metrics(perfect, batch)
    real = int(batch.lengths.sum())  # type: ignore[union-attr]
    oov = int(((batch.inputs == UNK_ID) & batch.mask()).sum())
    assert metrics["acc"] == (real, real) and metrics["oov_acc"] == (oov, oov) and oov > 0
    wrong_on_oov = perfect.clone()
    wrong_on_oov[batch.inputs == UNK_ID] = perfect[batch.inputs == UNK_ID].roll(1, -1)
    metrics = task.metrics(wrong_on_oov, batch)
    assert metrics["acc"] == (real - oov, real) and metrics["oov_acc"] == (0, oov)


def test_char_features_do_not_depend_on_padding() -> None:
    torch.manual_seed(0)
    encoder = WordCharEncoder(vocab_size=10, word_dim=4, char_vocab_size=8, char_dim=5)
    chars = torch.tensor([[[2, 3, 4, 0], [5, 0, 0, 0], [0, 0, 0, 0]]])
    wider = torch.cat([chars, torch.zeros(1, 3, 6, dtype=torch.long)], -1)
    inputs = torch.tensor([[3, 4, 0]])
    narrow = encoder(Batch(inputs, inputs, extras={"chars": chars}))
    wide = encoder(Batch(inputs, inputs, extras={"chars": wider}))
    assert narrow.shape == (1, 3, 9) and encoder.output_size == 9
    torch.testing.assert_close(narrow, wide)
    assert bool((narrow[0, 2, 4:] == 0).all())  # a padding token has no char features
    narrow.sum().backward()
    assert encoder.conv.weight.grad is not None and encoder.conv.weight.grad.abs().sum() > 0


def write(path: Path, text: str | bytes) -> str:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


def test_bad_input_names_file_and_line(slices: tuple[Path, Path], tmp_path: Path) -> None:
    lines = slices[0].read_text(encoding="utf-8").splitlines()
    good = "\n".join(lines[:40]) + "\n"
    bad_line = lines[5].split("\t")
    broken = "\n".join(lines[:5] + ["\t".join(bad_line[:9])] + lines[6:40])
    task = ConlluTaggingTask(train=write(tmp_path / "broken.conllu", broken), dev=str(slices[1]))
    with pytest.raises(DataError, match=r"broken\.conllu' line 6 .*9 tab-separated"):
        _ = task.spec
    utf = ConlluTaggingTask(
        train=write(tmp_path / "latin1.conllu", good.encode() + "1\tcafé\n".encode("latin-1")),
        dev=str(slices[1]),
    )
    with pytest.raises(DataError, match=r"line 41 is not UTF-8"):
        _ = utf.spec
    empty = ConlluTaggingTask(train=write(tmp_path / "empty.conllu", "\n\n"), dev=str(slices[1]))
    with pytest.raises(DataError, match="empty"):
        _ = empty.spec
    comments = ConlluTaggingTask(train=write(tmp_path / "c.conllu", "# only\n"), dev=str(slices[1]))
    with pytest.raises(DataError, match="no sentences"):
        _ = comments.spec
    missing = ConlluTaggingTask(train=str(tmp_path / "nope.conllu"), dev=str(slices[1]))
    with pytest.raises(DataError, match=r"does not exist.*task\.train=PATH"):
        _ = missing.spec
    with pytest.raises(DataError, match=r"No CoNLL-U file given: pass 'task\.train=PATH'"):
        _ = ConlluTaggingTask().spec
    unseen = good.replace("\tPROPN\t", "\tNOUN\t").replace("\tPUNCT\t", "\tSYM\t")
    only_nouns = ConlluTaggingTask(train=write(tmp_path / "t.conllu", unseen), dev=str(slices[1]))
    with pytest.raises(DataError, match=r"dev\.conllu' line \d+ .*never occurs in the training"):
        list(only_nouns.val_batches(8))
    with pytest.raises(ConfigError, match="min_freq"):
        ConlluTaggingTask(min_freq=0)


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    main(args)
    return capsys.readouterr().out


def test_train_then_eval_a_self_contained_run_folder(
    slices: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train = tmp_path / "train.conllu"
    train.write_bytes(slices[0].read_bytes())
    run_dir = tmp_path / "run"
    experiment = Path(__file__).resolve().parents[1] / "experiments" / "pos_ewt.yaml"
    run_cli(
        [
            *("train", str(experiment), "--run-dir", str(run_dir)),
            *(f"task.train={train}", f"task.dev={slices[1]}"),
            *["model.hidden_size=32", "model.input_dim=32", "task.char_dim=16"],
            *["trainer.steps=80", "trainer.batch_size=16", "trainer.eval_every=80"],
            *[
                "optim.lr=0.01",
                "optim.schedule=constant",
                "task.dropout=0",
                "model.head_args.dropout=0",
            ],
            *["trainer.progress=false", "gradflow.every=0", "tracking.wandb_mode=disabled"],
        ],
        capsys,
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["val/acc"] > summary["baseline/acc"] + 0.3
    vocab = json.loads((run_dir / "vocab.json").read_text())
    assert len(vocab["tags"]) == 17
    train.unlink()  # the run folder alone must be enough to evaluate
    other = tmp_path / "other.conllu"
    other.write_text(head_sentences(UD / "en_ewt-ud-dev.conllu", 150), encoding="utf-8")
    out = run_cli(["eval", str(run_dir), f"task.dev={other}"], capsys)
    assert "val/acc" in out and "val/oov_acc" in out
    metrics = json.loads((run_dir / "eval.json").read_text())
    assert metrics["val/acc"] > summary["baseline/acc"] + 0.3
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", str(run_dir), f"task.dev={tmp_path / 'missing.conllu'}"])
    assert exit_info.value.code == 2
    assert "task.dev=PATH" in capsys.readouterr().err


def conllu_line(word_id: int, form: str, upos: str = "NOUN") -> str:
    return f"{word_id}\t{form}\t_\t{upos}\t_\t_\t0\troot\t_\t_"


@pytest.mark.parametrize(
    "char",
    ["\u2028", "\u2029", "\x85", "\x0c", "\x0b", "\x1c", "\x1d", "\x1e", "\r"],
    ids=["U+2028", "U+2029", "U+0085", "form-feed", "vertical-tab", "FS", "GS", "RS", "CR"],
)
def test_only_a_newline_ends_a_line(char: str, tmp_path: Path) -> None:
    """CoNLL-U lines end at '\\n' (a '\\r' before it is dropped): a character that
    str.splitlines also takes for a line break stays inside its field, and line
    numbers in messages count '\\n' only."""
    form = f"a{char}b"
    text = f"{conllu_line(1, form)}\n{conllu_line(2, 'c', 'PUNCT')}\n\n"
    sentences = parse_conllu(text, tmp_path / "x.conllu", column=3)
    assert [(s.words, s.tags) for s in sentences] == [([form, "c"], ["NOUN", "PUNCT"])]
    broken = f"{conllu_line(1, form)}\n2\tc\n"
    with pytest.raises(DataError, match=r"x\.conllu' line 2 is not a CoNLL-U line"):
        parse_conllu(broken, tmp_path / "x.conllu", column=3)


def test_windows_line_ends(tmp_path: Path) -> None:
    text = (
        f"{conllu_line(1, 'a')}\r\n{conllu_line(2, 'b', 'VERB')}\r\n\r\n{conllu_line(1, 'c')}\r\n"
    )
    sentences = parse_conllu(text, tmp_path / "x.conllu", column=3)
    assert [(s.words, s.tags) for s in sentences] == [
        (["a", "b"], ["NOUN", "VERB"]),
        (["c"], ["NOUN"]),
    ]
