"""Download one file, check its SHA-256, and only then give it its name.

The bytes go to a temporary file beside the destination (``.NAME-XXXX.part``) that
is renamed over the destination once the checksum matches; on any failure (network,
checksum, short body, Ctrl-C) the temporary file is deleted, so the data folder
never holds a partial or unverified file under a dataset's name.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from rnnzoo import __version__
from rnnzoo.errors import RnnzooError

#: seconds to wait for the connection and then for each block of data
TIMEOUT = 30.0
CHUNK = 1 << 16
HINT = (
    "Check the connection (urllib honours https_proxy), try again later, download from "
    "a mirror laid out like the data folder (RNNZOO_DATA_URL=URL), or copy the files "
    "into the data folder by hand (RNNZOO_DATA)."
)


class DownloadError(RnnzooError):
    """A download failed or its file does not match the pinned checksum; exit code 1."""


def size_text(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _network_error(url: str, exc: BaseException, timeout: float) -> DownloadError:
    if isinstance(exc, urllib.error.HTTPError):
        what = f"the server answered {exc.code} {exc.reason}"
    elif isinstance(exc, TimeoutError) or (
        isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, TimeoutError)
    ):
        what = f"no data came for {timeout:g} s"
    elif isinstance(exc, urllib.error.URLError):
        what = f"cannot connect: {exc.reason}"
    else:
        what = f"the connection failed: {exc or type(exc).__name__}"
    return DownloadError(f"Downloading '{url}' failed: {what}. Nothing was saved. {HINT}")


def _copy(
    url: str, out: BinaryIO, size: int, timeout: float, advance: Callable[[int], None]
) -> tuple[int, str]:
    """Stream ``url`` into ``out``; the byte count and SHA-256 of what came. More
    than ``size`` bytes (the pinned size) stops the download: a file that is too long
    cannot match, and an endless one must not fill the disk."""
    request = urllib.request.Request(url, headers={"User-Agent": f"rnnzoo/{__version__}"})
    digest, got = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            announced = int(length) if length and length.isdigit() else None
            while block := response.read(CHUNK):
                out.write(block)
                digest.update(block)
                got += len(block)
                advance(len(block))
                if got > size:
                    raise DownloadError(
                        f"Downloading '{url}' stopped: the server sent more than the "
                        f"{size:,} bytes of the pinned file. Nothing was saved. {HINT}"
                    )
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as exc:
        raise _network_error(url, exc, timeout) from exc
    if announced is not None and got < announced:
        raise DownloadError(
            f"Downloading '{url}' failed: the connection closed after {got:,} of "
            f"{announced:,} bytes. Nothing was saved. {HINT}"
        )
    return got, digest.hexdigest()


def download(
    url: str, dest: Path, size: int, sha256: str, timeout: float = TIMEOUT, bar: bool = False
) -> None:
    """Download ``url`` to ``dest`` if it has the SHA-256 ``sha256``; else raise
    DownloadError and leave ``dest`` as it was. ``bar``: a tqdm bar on stderr."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}-", suffix=".part", dir=dest.parent)
    except OSError as exc:
        raise DownloadError(
            f"Cannot write to the data folder '{dest.parent}': {exc.strerror or exc}. Set "
            "RNNZOO_DATA to a folder you can write to, then fetch again."
        ) from exc
    try:
        with os.fdopen(fd, "wb") as out:
            if bar:
                from tqdm import tqdm

                with tqdm(
                    total=size,
                    desc=dest.name,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    file=sys.stderr,
                    leave=False,
                ) as progress:
                    got, digest = _copy(url, out, size, timeout, progress.update)
            else:
                got, digest = _copy(url, out, size, timeout, lambda n: None)
            out.flush()
            os.fsync(out.fileno())
        if digest != sha256:
            raise DownloadError(
                f"The download of '{url}' does not match its pinned checksum: expected "
                f"SHA-256 {sha256} ({size:,} bytes), got {digest} ({got:,} bytes). Nothing "
                "was saved. The file changed upstream or was damaged on the way (a proxy, a "
                "login page); try again, or download from a trusted mirror (RNNZOO_DATA_URL)."
            )
        os.replace(tmp, dest)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise DownloadError(
            f"Cannot write '{dest}': {exc.strerror or exc}. Nothing was saved. Free disk "
            "space or set RNNZOO_DATA to another folder, then fetch again."
        ) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
