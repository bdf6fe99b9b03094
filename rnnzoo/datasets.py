"""The datasets rnnzoo knows by name, where their files live, and ``data:`` references.

An experiment names a file of a known dataset as ``data:DATASET/FILE``, e.g.
``task.train=data:tinyshakespeare/input.txt``. :func:`resolve` turns that into a
path in the data folder (``RNNZOO_DATA``, else ``$XDG_CACHE_HOME/rnnzoo``, else
``~/.cache/rnnzoo``), laid out as ``FOLDER/FILE``. A missing file is an error that
says to run ``rnnzoo data fetch DATASET``: nothing is downloaded during training.
``rnnzoo data fetch`` (:mod:`rnnzoo.download`) checks every file against the
SHA-256 pinned here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rnnzoo.errors import DataError, UsageError, did_you_mean

#: the prefix of a reference to a file of a known dataset
PREFIX = "data:"
#: environment variables: the data folder, and a mirror to download from
DATA_ENV = "RNNZOO_DATA"
URL_ENV = "RNNZOO_DATA_URL"

UD_EWT = "https://raw.githubusercontent.com/UniversalDependencies/UD_English-EWT/r2.16"
CHAR_RNN = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare"


@dataclass(frozen=True)
class DataFile:
    """One file of a dataset: its name, official URL, size in bytes and SHA-256."""

    name: str
    url: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Dataset:
    name: str
    #: the folder in the data folder that holds the files
    folder: str
    title: str
    licence: str
    source: str
    files: tuple[DataFile, ...]

    def file(self, name: str, reference: str, key: str) -> DataFile:
        for f in self.files:
            if f.name == name:
                return f
        names = [f.name for f in self.files]
        raise DataError(
            f"'{key}={reference}' names no file of the dataset '{self.name}'."
            f"{did_you_mean(name, names)} Its files are {', '.join(names)} "
            f"(rnnzoo data list); write '{key}={PREFIX}{self.name}/FILE'."
        )


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset(
            name="ud-ewt",
            folder="ud_english_ewt",
            title="Universal Dependencies English EWT r2.16 (CoNLL-U; UPOS and XPOS tags)",
            licence="CC BY-SA 4.0",
            source="https://github.com/UniversalDependencies/UD_English-EWT (tag r2.16)",
            files=(
                DataFile(
                    "en_ewt-ud-train.conllu",
                    f"{UD_EWT}/en_ewt-ud-train.conllu",
                    14_203_025,
                    "3fb78e2b55482c8ee00caa653af436c88c9e5bc9a73ce26e4ae3ddc79d2b7e7b",
                ),
                DataFile(
                    "en_ewt-ud-dev.conllu",
                    f"{UD_EWT}/en_ewt-ud-dev.conllu",
                    1_805_545,
                    "531a54ff90d6ab12201c5a50c3e78e6ddac4de69abc4bce5d275d3cd29efe2b6",
                ),
                DataFile(
                    "en_ewt-ud-test.conllu",
                    f"{UD_EWT}/en_ewt-ud-test.conllu",
                    1_804_515,
                    "e266e515a0a7547657ed3d90d9ba46487d6bd251f27ad4269d4e8a427c8555cd",
                ),
                DataFile(
                    "LICENSE.txt",
                    f"{UD_EWT}/LICENSE.txt",
                    20_014,
                    "b3d1b0f4c6ae151f7eb78738f46ebd5ee140f8a7f76501ba26af123140d35ae7",
                ),
            ),
        ),
        Dataset(
            name="tinyshakespeare",
            folder="tinyshakespeare",
            title="Tiny Shakespeare (karpathy/char-rnn): 1,115,394 characters of plays",
            licence="public domain",
            source="https://github.com/karpathy/char-rnn (data/tinyshakespeare)",
            files=(
                DataFile(
                    "input.txt",
                    f"{CHAR_RNN}/input.txt",
                    1_115_394,
                    "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
                ),
            ),
        ),
    )
}
#: a dataset may also be named by its folder (``ud_english_ewt`` for ``ud-ewt``)
ALIASES = {d.folder: d.name for d in DATASETS.values() if d.folder != d.name}


def data_root() -> Path:
    """The data folder: ``RNNZOO_DATA``, else the user's cache folder."""
    given = os.environ.get(DATA_ENV)
    if given:
        return Path(given).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    return (Path(cache) if cache else Path.home() / ".cache") / "rnnzoo"


def where_root() -> str:
    """The data folder and where its location comes from, for messages."""
    source = f"set by {DATA_ENV}" if os.environ.get(DATA_ENV) else f"the default; set {DATA_ENV}"
    return f"'{data_root()}' ({source})"


def dataset(name: str) -> Dataset:
    """The dataset called ``name`` (or by its folder's name); unknown names raise UsageError."""
    found = DATASETS.get(ALIASES.get(name, name))
    if found is None:
        raise UsageError(
            f"Unknown dataset '{name}'.{did_you_mean(name, [*DATASETS, *ALIASES])} "
            f"Known datasets: {', '.join(DATASETS)} (rnnzoo data list)."
        )
    return found


def path_of(d: Dataset, f: DataFile) -> Path:
    return data_root() / d.folder / f.name


def url_of(d: Dataset, f: DataFile) -> str:
    """The official URL, or the file's place on the mirror ``RNNZOO_DATA_URL``."""
    mirror = os.environ.get(URL_ENV)
    return f"{mirror.rstrip('/')}/{d.folder}/{f.name}" if mirror else f.url


def is_reference(value: str) -> bool:
    return value.startswith(PREFIX)


def resolve(reference: str, key: str) -> Path:
    """The path in the data folder of ``data:DATASET/FILE``, the value of config key
    ``key``. A malformed reference or an unknown name raises DataError; so does a
    file that is not there yet, saying how to fetch it (nothing is downloaded here)."""
    rest = reference[len(PREFIX) :]
    name, _, file_name = rest.partition("/")
    if not name or not file_name:
        raise DataError(
            f"'{key}={reference}' is not a data reference: write "
            f"'{key}={PREFIX}DATASET/FILE', e.g. '{key}={PREFIX}tinyshakespeare/input.txt' "
            "(rnnzoo data list shows the datasets and their files)."
        )
    try:
        d = dataset(name)
    except UsageError as exc:
        raise DataError(f"'{key}={reference}': {exc}") from None
    f = d.file(file_name, reference, key)
    path = path_of(d, f)
    if not path.is_file():
        raise DataError(
            f"The file '{f.name}' of the dataset '{d.name}' ('{key}={reference}') is not "
            f"in the data folder {where_root()}: looked for '{path}'. Download it once "
            f"with `rnnzoo data fetch {d.name}` (training never downloads by itself), set "
            f"{DATA_ENV} to a folder that holds '{d.folder}/{f.name}', or pass the path "
            f"of your copy: '{key}=PATH'."
        )
    return path
