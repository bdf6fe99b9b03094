"""How experiments use the datasets: ``data:DATASET/FILE`` references resolved in the
data folder (``RNNZOO_DATA``), an error that says how to fetch what is missing
(training never downloads), a local copy laid out like ``../shared/data`` that
works offline, and the pinned checksums against that copy.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cli_run import rnnzoo

from rnnzoo import config, datasets
from rnnzoo.errors import DataError
from rnnzoo_plugins.tasks import textfile

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / ".." / "shared" / "data"
EXPERIMENTS = {"char_shakespeare": ["task.train"], "pos_ewt": ["task.train", "task.dev"]}
TINY = [
    *("model.hidden_size=8", "model.input_dim=8", "trainer.steps=4", "trainer.batch_size=4"),
    *("trainer.eval_every=4", "trainer.progress=false", "gradflow.every=0"),
    "tracking.wandb_mode=disabled",
]
SENTENCES = [
    [("I", "PRON"), ("like", "VERB"), ("cake", "NOUN"), (".", "PUNCT")],
    [("You", "PRON"), ("eat", "VERB"), ("the", "DET"), ("bread", "NOUN"), ("!", "PUNCT")],
    [("We", "PRON"), ("see", "VERB"), ("a", "DET"), ("big", "ADJ"), ("dog", "NOUN")],
]


def shared() -> Path:
    if not (SHARED / "tinyshakespeare" / "input.txt").is_file():
        message = f"the shared data are missing at {SHARED.resolve()} (see shared/data/README.md)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return SHARED.resolve()


def conllu(n: int) -> str:
    blocks = []
    for i in range(n):
        words = SENTENCES[i % len(SENTENCES)]
        blocks.append(
            "".join(
                f"{j}\t{w}\t{w.lower()}\t{t}\t_\t_\t0\tdep\t_\t_\n"
                for j, (w, t) in enumerate(words, 1)
            )
        )
    return "\n".join(blocks) + "\n"


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A data folder laid out like ../shared/data, with small stand-in files; any
    attempt to download fails the test."""
    root = tmp_path / "local-copy"
    (root / "tinyshakespeare").mkdir(parents=True)
    (root / "tinyshakespeare" / "input.txt").write_text(
        "ROMEO:\nBut soft, what light through yonder window breaks?\n" * 200, encoding="utf-8"
    )
    (root / "ud_english_ewt").mkdir()
    (root / "ud_english_ewt" / "en_ewt-ud-train.conllu").write_text(conllu(60), encoding="utf-8")
    (root / "ud_english_ewt" / "en_ewt-ud-dev.conllu").write_text(conllu(12), encoding="utf-8")
    monkeypatch.setenv("RNNZOO_DATA", str(root))
    monkeypatch.setenv("RNNZOO_DATA_URL", "http://127.0.0.1:9")

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a download was attempted: {args}")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    return root


def test_the_experiments_name_datasets_not_paths() -> None:
    for name, keys in EXPERIMENTS.items():
        text = (ROOT / "experiments" / f"{name}.yaml").read_text(encoding="utf-8")
        assert "shared" not in text
        cfg = config.load(ROOT / "experiments" / f"{name}.yaml", [])
        for key in keys:
            value = cfg.task[key.split(".")[1]]
            assert value.startswith("data:"), (name, key, value)


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_an_experiment_trains_offline_from_a_local_copy(
    name: str, offline: Path, tmp_path: Path
) -> None:
    extra = ["task.char_dim=4"] if name == "pos_ewt" else ["task.bptt=20"]
    result = rnnzoo(
        "train", ROOT / "experiments" / f"{name}.yaml", "--run-dir", tmp_path / "run", *TINY, *extra
    )
    assert result.code == 0, result.output
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["step"] == 4


def test_a_missing_dataset_says_how_to_fetch_it_and_downloads_nothing(
    offline: Path, tmp_path: Path
) -> None:
    (offline / "tinyshakespeare" / "input.txt").unlink()
    experiment = ROOT / "experiments" / "char_shakespeare.yaml"
    result = rnnzoo("train", experiment, "--run-dir", tmp_path / "run", *TINY)
    assert result.code == 2 and "Traceback" not in result.err
    message = result.err.strip()
    assert "\n" not in message  # one paragraph
    assert "`rnnzoo data fetch tinyshakespeare`" in message
    assert "task.train=data:tinyshakespeare/input.txt" in message
    assert f"'{offline}' (set by RNNZOO_DATA)" in message
    assert "never downloads" in message and "'task.train=PATH'" in message
    assert not (offline / "tinyshakespeare" / "input.txt").exists()
    assert not (tmp_path / "run").exists()  # stopped before it started


def test_references_name_a_dataset_and_one_of_its_files(offline: Path) -> None:
    ewt = offline / "ud_english_ewt" / "en_ewt-ud-train.conllu"
    assert textfile.find("data:ud-ewt/en_ewt-ud-train.conllu", "task.train", "x") == ewt
    # the folder's name works too, as `rnnzoo data list` shows it
    assert datasets.resolve("data:ud_english_ewt/en_ewt-ud-train.conllu", "task.train") == ewt
    for reference, message in [
        ("data:tinyshakespeare", "write 'task.train=data:DATASET/FILE'"),
        ("data:/input.txt", "write 'task.train=data:DATASET/FILE'"),
        ("data:ud-ewt/en_ewt-ud-tran.conllu", "Did you mean 'en_ewt-ud-train.conllu'?"),
        ("data:ud-ewt/../tinyshakespeare/input.txt", "names no file of the dataset 'ud-ewt'"),
        ("data:ud-ewt/en_ewt-ud-test.conllu", "`rnnzoo data fetch ud-ewt`"),
        ("data:tinyshakespear/input.txt", "Did you mean 'tinyshakespeare'?"),
    ]:
        with pytest.raises(DataError, match="task.train") as info:
            datasets.resolve(reference, "task.train")
        assert message in str(info.value), reference


def test_a_plain_path_is_still_a_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data:odd").mkdir()
    (tmp_path / "input.txt").write_text("text", encoding="utf-8")
    assert textfile.find("input.txt", "task.train", "text file") == tmp_path / "input.txt"
    assert textfile.find("./data:odd/../input.txt", "task.train", "text file").is_file()


def test_the_shared_copy_works_as_the_data_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    root = shared()
    monkeypatch.setenv("RNNZOO_DATA", str(root))
    for name, keys in EXPERIMENTS.items():
        cfg = config.load(ROOT / "experiments" / f"{name}.yaml", [])
        for key in keys:
            path = datasets.resolve(cfg.task[key.split(".")[1]], key)
            assert path.is_file() and path.is_relative_to(root)
    listed = rnnzoo("data", "list", "--verify").out
    assert listed.count("cached, SHA-256 OK") == 4  # train, dev, LICENSE.txt, input.txt


def test_the_pinned_checksums_are_those_of_the_shared_copy() -> None:
    root = shared()
    sums = dict(reversed(line.split()) for line in (root / "SHA256SUMS").read_text().splitlines())
    pinned = {f"{d.folder}/{f.name}": f for d in datasets.DATASETS.values() for f in d.files}
    assert set(sums) <= set(pinned)
    for path, f in pinned.items():
        if (root / path).is_file():
            data = (root / path).read_bytes()
            assert (len(data), hashlib.sha256(data).hexdigest()) == (f.size, f.sha256), path
        if path in sums:
            assert sums[path] == f.sha256, path


def test_a_real_dataset_downloads_from_http_server_serving_a_copy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """docs/data.md: `python -m http.server --directory COPY` is a mirror."""
    root = shared()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("RNNZOO_DATA", str(tmp_path / "cache"))
        monkeypatch.setenv("RNNZOO_DATA_URL", f"http://127.0.0.1:{server.server_address[1]}")
        result = rnnzoo("data", "fetch", "tinyshakespeare")
    finally:
        server.shutdown()
        server.server_close()
    assert result.code == 0, result.output
    fetched = tmp_path / "cache" / "tinyshakespeare" / "input.txt"
    assert fetched.read_bytes() == (root / "tinyshakespeare" / "input.txt").read_bytes()


def test_the_documented_statistics_and_licences_hold() -> None:
    root = shared()
    doc = (ROOT / "docs" / "data.md").read_text(encoding="utf-8")
    for name, sentences, words in [("train", 12_544, 204_577), ("dev", 2_001, 25_147)]:
        text = (root / "ud_english_ewt" / f"en_ewt-ud-{name}.conllu").read_text("utf-8")
        ids = [line.split("\t")[0] for line in text.splitlines()]
        found = (sum(1 for b in text.split("\n\n") if b.strip()), sum(map(str.isdigit, ids)))
        assert found == (sentences, words), name
        assert f"({sentences:,} sentences, {words:,} words)" in doc
    shakespeare = (root / "tinyshakespeare" / "input.txt").read_text("ascii")
    stats = (len(shakespeare), len(set(shakespeare)), shakespeare.count("\n"))
    assert stats == (1_115_394, 65, 40_000)
    assert "(1,115,394 characters, 65 distinct, 40,000 lines)" in doc
    readme = (root / "ud_english_ewt" / "README.md").read_text("utf-8")
    assert "License: CC BY-SA 4.0" in readme and "**2025-05-15 v2.16**" in readme
    assert datasets.DATASETS["ud-ewt"].licence == "CC BY-SA 4.0"
    assert datasets.DATASETS["tinyshakespeare"].licence == "public domain"
    for d in datasets.DATASETS.values():
        assert f"| `{d.name}` |" in doc and f"| {d.licence} |" in doc
        for f in d.files:
            assert f"{f.sha256}  {d.folder}/{f.name}" in doc
