"""``rnnzoo data fetch`` and ``rnnzoo data list`` against a local mirror
(tests/data_server.py on 127.0.0.1): good, corrupted, cut-short and stalled
downloads, cached datasets, ``--force``; never a partial file in the data folder.

A toy dataset stands in for the real ones (their checksums are pinned for files
this machine cannot download); the data folder is a temporary one.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_run import rnnzoo
from data_server import Mirror, serve

from rnnzoo import datasets
from rnnzoo.datasets import DataFile, Dataset
from rnnzoo.download import DownloadError, download

A = bytes(range(256)) * 1200  # 300 kB: several blocks
B = b"1\tI\tI\tPRON\tPRP\t_\t2\tnsubj\t_\t_\n" * 10


def toy_dataset(url: str) -> Dataset:
    files = tuple(
        DataFile(name, f"{url}/official/{name}", len(body), hashlib.sha256(body).hexdigest())
        for name, body in (("a.bin", A), ("b.conllu", B))
    )
    return Dataset("toy", "toy_set", "A toy dataset", "CC0", "tests", files)


@pytest.fixture
def mirror(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Mirror]:
    """The toy dataset, served at URL/toy_set/FILE; RNNZOO_DATA is tmp_path/data."""
    with serve() as m:
        m.files.update({"/toy_set/a.bin": A, "/toy_set/b.conllu": B})
        monkeypatch.setitem(datasets.DATASETS, "toy", toy_dataset(m.url))
        monkeypatch.setenv("RNNZOO_DATA", str(tmp_path / "data"))
        monkeypatch.setenv("RNNZOO_DATA_URL", m.url)
        yield m


def cached(tmp_path: Path) -> list[str]:
    """Every file in the data folder, hidden ones too."""
    root = tmp_path / "data"
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_fetch_downloads_checks_and_caches(mirror: Mirror, tmp_path: Path) -> None:
    before = rnnzoo("data", "list")
    assert before.code == 0 and re.search(r"toy_set/a\.bin +\S+ kB +missing", before.out)
    assert "rnnzoo data fetch toy" in before.out
    result = rnnzoo("data", "fetch", "toy")
    assert result.code == 0, result.output
    assert f"downloading {mirror.url}/toy_set/a.bin" in result.out  # plain lines, no bar
    assert "toy: ready in" in result.out and "%|" not in result.err
    assert cached(tmp_path) == ["toy_set/a.bin", "toy_set/b.conllu"]
    assert (tmp_path / "data" / "toy_set" / "a.bin").read_bytes() == A
    after = rnnzoo("data", "list", "--verify")
    assert re.search(r"toy_set/a\.bin +\S+ kB +cached, SHA-256 OK", after.out)
    assert "rnnzoo data fetch toy" not in after.out
    assert datasets.resolve("data:toy/a.bin", "task.train") == tmp_path / "data/toy_set/a.bin"


def test_a_second_fetch_does_nothing_and_force_downloads_again(
    mirror: Mirror, tmp_path: Path
) -> None:
    assert rnnzoo("data", "fetch", "toy").code == 0
    assert len(mirror.requests) == 2
    again = rnnzoo("data", "fetch", "toy")
    assert again.code == 0 and "already in" in again.out and "nothing to do" in again.out
    assert len(mirror.requests) == 2
    forced = rnnzoo("data", "fetch", "toy", "--force")
    assert forced.code == 0 and len(mirror.requests) == 4
    assert cached(tmp_path) == ["toy_set/a.bin", "toy_set/b.conllu"]


def test_a_corrupted_download_is_refused_and_nothing_is_cached(
    mirror: Mirror, tmp_path: Path
) -> None:
    mirror.modes["/toy_set/a.bin"] = "corrupt"
    result = rnnzoo("data", "fetch", "toy")
    assert result.code == 1 and "Traceback" not in result.err
    spoilt = A[:-1] + bytes([A[-1] ^ 1])
    assert hashlib.sha256(A).hexdigest() in result.err  # expected
    assert hashlib.sha256(spoilt).hexdigest() in result.err  # got
    assert "Nothing was saved" in result.err
    assert cached(tmp_path) == []


def test_a_failed_forced_download_keeps_the_good_copy(mirror: Mirror, tmp_path: Path) -> None:
    assert rnnzoo("data", "fetch", "toy").code == 0
    mirror.modes["/toy_set/a.bin"] = "corrupt"
    assert rnnzoo("data", "fetch", "toy", "--force").code == 1
    assert (tmp_path / "data" / "toy_set" / "a.bin").read_bytes() == A
    assert cached(tmp_path) == ["toy_set/a.bin", "toy_set/b.conllu"]


def test_a_download_cut_short_leaves_no_partial_file(mirror: Mirror, tmp_path: Path) -> None:
    mirror.modes["/toy_set/a.bin"] = "short"
    result = rnnzoo("data", "fetch", "toy")
    assert result.code == 1
    assert f"closed after {len(A) // 2:,} of {len(A):,} bytes" in result.err
    assert cached(tmp_path) == []


def test_a_download_longer_than_the_file_is_stopped(mirror: Mirror, tmp_path: Path) -> None:
    mirror.modes["/toy_set/a.bin"] = "long"
    result = rnnzoo("data", "fetch", "toy")
    assert result.code == 1 and f"more than the {len(A):,} bytes" in result.err
    assert cached(tmp_path) == []


def test_a_stalled_server_times_out(mirror: Mirror, tmp_path: Path) -> None:
    mirror.modes["/toy_set/a.bin"] = "stall"
    result = rnnzoo("data", "fetch", "toy", "--timeout", "0.5")
    assert result.code == 1 and "no data came for 0.5 s" in result.err
    assert cached(tmp_path) == []


def test_missing_files_and_unreachable_servers_are_runtime_errors(
    mirror: Mirror, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    mirror.modes["/toy_set/b.conllu"] = "404"
    result = rnnzoo("data", "fetch", "toy")
    assert result.code == 1 and "answered 404" in result.err and "RNNZOO_DATA_URL" in result.err
    assert cached(tmp_path) == ["toy_set/a.bin"]  # the good file is kept
    closed = mirror.url.rsplit(":", 1)[0] + ":9"  # the discard port: nothing listens
    monkeypatch.setenv("RNNZOO_DATA_URL", closed)
    result = rnnzoo("data", "fetch", "toy")
    assert result.code == 1 and "cannot connect" in result.err
    assert cached(tmp_path) == ["toy_set/a.bin"]


def test_a_cached_file_that_differs_is_fetched_again(mirror: Mirror, tmp_path: Path) -> None:
    assert rnnzoo("data", "fetch", "toy").code == 0
    (tmp_path / "data" / "toy_set" / "b.conllu").write_bytes(B[:-5])
    listed = rnnzoo("data", "list")
    assert re.search(r"b\.conllu .*differs .*rnnzoo data fetch toy --force", listed.out)
    result = rnnzoo("data", "fetch", "toy")
    assert result.code == 0 and "does not match its SHA-256" in result.out
    assert mirror.requests[-1] == "/toy_set/b.conllu" and len(mirror.requests) == 3
    assert (tmp_path / "data" / "toy_set" / "b.conllu").read_bytes() == B


def test_an_unknown_dataset_is_a_usage_error(mirror: Mirror, tmp_path: Path) -> None:
    result = rnnzoo("data", "fetch", "toy", "tinyshakespear")
    assert result.code == 2 and "Did you mean 'tinyshakespeare'?" in result.err
    assert mirror.requests == []  # every name is checked before anything is fetched
    assert rnnzoo("data", "fetch").code == 2


def test_a_terminal_gets_a_progress_bar(mirror: Mirror, tmp_path: Path) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out, err = io.StringIO(), Terminal()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        from rnnzoo.cli import main

        main(["data", "fetch", "toy"])
    assert "a.bin" in err.getvalue() and "%|" in err.getvalue()
    assert cached(tmp_path) == ["toy_set/a.bin", "toy_set/b.conllu"]


def test_ctrl_c_during_a_download_leaves_no_partial_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    class Interrupted(io.BytesIO):
        headers = {"Content-Length": str(len(A))}

        def read(self, size: int | None = -1) -> bytes:
            if self.tell():
                raise KeyboardInterrupt
            return super().read(size)

    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: Interrupted(A))
    dest = tmp_path / "data" / "a.bin"
    with pytest.raises(KeyboardInterrupt):
        download("http://127.0.0.1:9/a.bin", dest, len(A), hashlib.sha256(A).hexdigest())
    assert os.listdir(dest.parent) == []


def test_an_unwritable_data_folder_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DownloadError, match="Cannot write to the data folder .*RNNZOO_DATA"):
        download("http://127.0.0.1:9/a", blocker / "a.bin", 1, "0" * 64)


def test_without_rnnzoo_data_the_user_cache_is_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("RNNZOO_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert datasets.data_root() == tmp_path / "xdg" / "rnnzoo"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert datasets.data_root() == tmp_path / "home" / ".cache" / "rnnzoo"
    assert "the default; set RNNZOO_DATA" in rnnzoo("data", "list").out
    monkeypatch.setenv("RNNZOO_DATA", str(tmp_path / "mine"))
    assert datasets.data_root() == tmp_path / "mine"


def test_the_official_urls_are_used_without_a_mirror(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RNNZOO_DATA_URL", raising=False)
    ewt, shakespeare = datasets.DATASETS["ud-ewt"], datasets.DATASETS["tinyshakespeare"]
    urls = [datasets.url_of(d, f) for d in (ewt, shakespeare) for f in d.files]
    base = "https://raw.githubusercontent.com/UniversalDependencies/UD_English-EWT/r2.16/"
    assert urls[:3] == [base + f"en_ewt-ud-{s}.conllu" for s in ("train", "dev", "test")]
    assert urls[-1] == (
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
    )
    monkeypatch.setenv("RNNZOO_DATA_URL", "http://mirror.example/data/")
    assert datasets.url_of(shakespeare, shakespeare.files[0]) == (
        "http://mirror.example/data/tinyshakespeare/input.txt"
    )
