"""char_lm and word_lm on a slice of Tiny Shakespeare: streams, vocabularies,
metrics, errors, and the train -> eval -> sample round trip."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from rnnzoo import build_model
from rnnzoo.cli import main
from rnnzoo.errors import ConfigError, DataError
from rnnzoo.task import Batch
from rnnzoo_plugins.tasks.text_lm import CharLMTask, WordLMTask

SHAKESPEARE = (
    Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "tinyshakespeare" / "input.txt"
)


@pytest.fixture(scope="module")
def text() -> str:
    if not SHAKESPEARE.is_file():
        message = (
            f"Tiny Shakespeare is missing at {SHAKESPEARE.resolve()} (see shared/data/README.md)"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return SHAKESPEARE.read_text(encoding="utf-8")[:20_000]


@pytest.fixture
def corpus(text: str, tmp_path: Path) -> Path:
    path = tmp_path / "shakespeare.txt"
    path.write_text(text, encoding="utf-8")
    return path


def test_char_vocabulary_split_and_round_trip(corpus: Path, text: str) -> None:
    task = CharLMTask(train=str(corpus), val_fraction=0.1)
    spec = task.spec
    vocab = task.vocab
    assert vocab is not None
    train_text = text[: int(len(text) * 0.9)]
    assert vocab["tokens"] == sorted(set(train_text)) + ["<unk>"]
    assert vocab["tokens"][0] == "\n"  # an empty prompt starts a fresh line
    assert spec.input_size == spec.output_size == len(vocab["tokens"]) and spec.stream
    assert task.decode(task.encode("ROMEO:\nAy me!")) == "ROMEO:\nAy me!"
    assert task.decode(task.encode("€")) == "\N{REPLACEMENT CHARACTER}"


def test_lanes_are_contiguous_streams_continued_batch_by_batch(corpus: Path, text: str) -> None:
    task = CharLMTask(train=str(corpus), bptt=50)
    train_text = text[: int(len(text) * 0.9)]
    lanes, lane_length = 4, (len(train_text) - 1) // 4
    batches = [task.train_batch(i, lanes) for i in range(3)]
    assert all(b.inputs.shape == (lanes, 50) and b.lengths is None for b in batches)
    for lane in range(lanes):
        inputs = torch.cat([b.inputs[lane] for b in batches]).tolist()
        targets = torch.cat([b.targets[lane] for b in batches]).tolist()
        start = lane * lane_length
        assert task.decode(inputs) == train_text[start : start + 150]
        assert task.decode(targets) == train_text[start + 1 : start + 151]
    windows = math.ceil(lane_length / 50)
    again = CharLMTask(train=str(corpus), bptt=50)
    assert torch.equal(again.train_batch(windows + 1, lanes).inputs, batches[1].inputs)
    assert again.train_batch(windows - 1, lanes).steps == lane_length - (windows - 1) * 50
    val = list(task.val_batches(2))
    val_text = text[int(len(text) * 0.9) :]
    lane_length = (len(val_text) - 1) // 2
    assert (
        task.decode(torch.cat([b.inputs[1] for b in val]).tolist())
        == val_text[lane_length : 2 * lane_length]
    )


def test_carried_state_equals_one_long_pass(corpus: Path) -> None:
    """What the trainer does with a stream task: batch i+1 starts from batch i's
    final state, which is exactly running the lanes in one go."""
    task = CharLMTask(train=str(corpus), bptt=20, reset_prob=0.0)
    torch.manual_seed(0)
    model = build_model(task.spec, cell="lstm", head="lm", hidden_size=16)
    first, second = task.train_batch(0, 3), task.train_batch(1, 3)
    out1 = model(first)
    out2 = model(second, out1.final_state)
    joined = torch.cat([first.inputs, second.inputs], 1)
    whole = model(Batch(inputs=joined, targets=joined))
    torch.testing.assert_close(
        torch.cat([out1.predictions, out2.predictions], 1), whole.predictions
    )
    # a lane marked for reset starts from the initial state; the others carry on
    second.reset = torch.tensor([True, False, False])
    mixed = model(second, out1.final_state).predictions
    fresh = model(Batch(inputs=second.inputs, targets=second.targets)).predictions
    torch.testing.assert_close(mixed[0], fresh[0])
    torch.testing.assert_close(mixed[1:], out2.predictions[1:])


def test_lanes_reset_when_they_wrap_and_at_random(corpus: Path) -> None:
    task = CharLMTask(train=str(corpus), bptt=10, reset_prob=0.1)
    lane_length = (int(len(corpus.read_text()) * 0.9) - 1) // 8
    windows = math.ceil(lane_length / 10)
    assert task.train_batch(0, 8).reset.all() and task.train_batch(windows, 8).reset.all()  # type: ignore[union-attr]
    resets = torch.stack([task.train_batch(i, 8).reset for i in range(1, windows)])  # type: ignore[misc]
    assert 0.05 < resets.float().mean() < 0.15
    again = CharLMTask(train=str(corpus), bptt=10, reset_prob=0.1)
    assert torch.equal(again.train_batch(7, 8).reset, task.train_batch(7, 8).reset)  # type: ignore[arg-type]
    assert not CharLMTask(train=str(corpus), reset_prob=0.0).train_batch(3, 8).reset.any()  # type: ignore[union-attr]


def test_bits_metric_and_unigram_baseline(corpus: Path) -> None:
    task = CharLMTask(train=str(corpus))
    batch = next(task.val_batches(4))
    uniform = torch.zeros(*batch.inputs.shape, task.spec.output_size)
    bits, count = task.metrics(uniform, batch)["bits_per_char"]
    assert count == batch.inputs.numel()
    assert bits / count == pytest.approx(math.log2(task.spec.output_size))
    baseline = task.baseline()
    assert baseline["bits_per_char"] == pytest.approx(baseline["loss"] / math.log(2))
    assert 2.5 < baseline["loss"] < math.log(task.spec.output_size)


def test_word_lm_tokens_eos_and_min_freq(corpus: Path, text: str) -> None:
    task = WordLMTask(train=str(corpus), min_freq=2)
    assert task.spec.input_size == task.spec.output_size
    vocab = task.vocab
    assert vocab is not None and task.spec.input_size == len(vocab["tokens"])
    tokens = vocab["tokens"]
    assert tokens[0] == "<eos>" and tokens[-1] == "<unk>"
    assert vocab["counts"][1] == max(vocab["counts"][1:-1])  # most frequent word first
    assert task.encode("First Citizen:\n") == [tokens.index("First"), tokens.index("Citizen:"), 0]
    assert task.decode(task.encode("You are all\nFirst Citizen:")) == "You are all\nFirst Citizen:"
    assert task.decode(task.encode("Zyzzyva")) == "<unk>"
    assert task.baseline()["bits_per_word"] > 5
    lower = WordLMTask(train=str(corpus), lowercase=True)
    assert lower.spec.input_size < WordLMTask(train=str(corpus)).spec.input_size


def test_bad_input(tmp_path: Path, corpus: Path) -> None:
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("first line\nsecond\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"line 3 is not UTF-8"):
        _ = CharLMTask(train=str(latin)).spec
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(DataError, match="empty"):
        _ = CharLMTask(train=str(empty)).spec
    with pytest.raises(DataError, match=r"No text file given: pass 'task\.train=PATH'"):
        _ = CharLMTask().spec
    with pytest.raises(DataError, match=r"'task\.dev'\) does not exist"):
        _ = CharLMTask(train=str(corpus), dev=str(tmp_path / "nope.txt")).spec
    short = tmp_path / "short.txt"
    short.write_text("To be, or not to be")
    with pytest.raises(DataError, match="too few for 64 parallel streams"):
        CharLMTask(train=str(short)).train_batch(0, 64)
    with pytest.raises(ConfigError, match="val_fraction"):
        CharLMTask(train=str(corpus), val_fraction=1.0)


def test_train_eval_and_sample_from_the_run_folder_alone(
    corpus: Path, tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    experiment = Path(__file__).resolve().parents[1] / "experiments" / "char_shakespeare.yaml"
    main(
        [
            *("train", str(experiment), "--run-dir", str(run_dir), f"task.train={corpus}"),
            *["task.bptt=50", "model.hidden_size=64", "model.input_dim=16", "optim.lr=0.01"],
            *["trainer.steps=60", "trainer.batch_size=16", "trainer.eval_every=60"],
            *["trainer.progress=false", "gradflow.every=0", "tracking.wandb_mode=disabled"],
        ]
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["val/loss"] < summary["baseline/loss"]
    assert summary["val/bits_per_char"] == pytest.approx(summary["val/loss"] / math.log(2))
    corpus.unlink()  # eval and sample need only the run folder (and the eval data)
    other = tmp_path / "other.txt"
    other.write_text(SHAKESPEARE.read_text(encoding="utf-8")[50_000:60_000], encoding="utf-8")
    capsys.readouterr()
    main(["eval", str(run_dir), f"task.dev={other}"])
    assert json.loads((run_dir / "eval.json").read_text())["val/loss"] < summary["baseline/loss"]
    capsys.readouterr()
    args = ["sample", str(run_dir), "--prompt", "ROMEO:"]
    args += ["--length", "80", "--temperature", "0.8", "--top-k", "10", "--seed", "1"]
    main(args)
    first = capsys.readouterr().out
    assert first.startswith("ROMEO:") and len(first) == len("ROMEO:") + 80 + 1
    main(args)
    assert capsys.readouterr().out == first  # a seed gives the same sample
    main(["sample", str(run_dir), "--length", "20"])  # no prompt: starts after a newline
    assert len(capsys.readouterr().out) == 20 + 1
