"""Resumable, checksum-verified downloads of raw dataset files.

``fetch`` streams a URL into ``<file>.part`` (continuing a previous partial download with an HTTP ``Range``
request), tries each mirror in turn, verifies the sha256 and only then renames the file into place, so a file
under its final name is always complete and verified. A file already in place is checked and reused without any
network access. When no checksum is published, the computed one is recorded in ``<file>.sha256`` (with one
warning) and later runs check the file against that record.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import requests
import urllib3
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from melonbench.core.errors import ChecksumError, MelonbenchError
from melonbench.data.registry import DatasetSpec
from melonbench.store.atomic import atomic_write_bytes

TIMEOUT = (15.0, 60.0)  # seconds to connect, seconds of silence while reading
_CHUNK = 1 << 20


def fetch(
    source: DatasetSpec | Sequence[str],
    dest_dir: Path,
    sha256: str | None = None,
    insecure: bool = False,
    console: Console | None = None,
    *,
    filename: str | None = None,
    timeout: tuple[float, float] = TIMEOUT,
) -> Path:
    """Download one file (from the first mirror that works) into ``dest_dir`` and return its path.

    Parameters
    ----------
    source : DatasetSpec | Sequence[str]
        A registry entry (its ``urls``, ``filename`` and, when ``sha256`` is None, its ``sha256``) or mirror URLs.
    dest_dir : Path
        Folder to keep the file in (created if needed).
    sha256 : str | None
        Expected checksum; overrides the entry's. ``None`` with no published checksum: record and warn.
    insecure : bool
        Skip TLS certificate verification (explicit opt-in for hosts with a broken chain).
    console : Console | None
        Where the progress bar and warnings go; ``None`` is silent.
    filename : str | None
        Name to save under (default: the entry's, else the last part of the first URL).
    timeout : tuple[float, float]
        Connect and read timeouts in seconds.

    Returns
    -------
    Path
        ``dest_dir / filename``, complete and verified.

    Raises
    ------
    ChecksumError
        The file (downloaded or already present) does not match the expected or recorded sha256.
    MelonbenchError
        No URL, or every mirror failed (the message lists each failure).
    """
    urls = tuple(source.urls) if isinstance(source, DatasetSpec) else tuple(source)
    if sha256 is None and isinstance(source, DatasetSpec):
        sha256 = source.sha256
    if filename is None:
        filename = source.filename if isinstance(source, DatasetSpec) and source.filename else None
    if filename is None and urls:
        filename = Path(urlparse(urls[0]).path).name
    if not urls or not filename:
        raise MelonbenchError("nothing to download: no URL is known for this dataset; pass --input PATH")
    expected = sha256.strip().lower() if sha256 else None
    if expected is not None and not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise MelonbenchError(f"--sha256 must be 64 hexadecimal digits, got '{sha256}'")
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / filename
    if dest.is_file():
        return _reuse(dest, expected, console)
    if insecure and console is not None:
        console.print(f"[yellow]warning:[/] TLS certificate verification is off for {filename} (--insecure)")

    part = dest.with_name(dest.name + ".part")
    failures = []
    for url in urls:
        try:
            actual = _download(url, part, insecure, console, timeout)
        except requests.RequestException as exc:
            failures.append(f"{url}: {_reason(exc)}")
            continue
        break
    else:
        raise MelonbenchError(
            f"could not download {filename} from any mirror ({'; '.join(failures)}); "
            "download it yourself and pass --input PATH"
        )

    if expected is not None and actual != expected:
        raise ChecksumError(
            f"sha256 mismatch for {filename}: expected {expected}, got {actual}; the download is kept as {part} "
            f"(delete it to download again, or pass --sha256 {actual} if you trust this file)"
        )
    os.replace(part, dest)
    if expected is None:
        _record_unpinned(dest, actual, console)
    return dest


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _reuse(dest: Path, expected: str | None, console: Console | None) -> Path:
    actual = sha256_file(dest)
    record = _record(dest)
    if expected is None and record.is_file():
        expected = record.read_text().split()[0].lower()
    if expected is None:
        _record_unpinned(dest, actual, console)
    elif actual != expected:
        raise ChecksumError(
            f"{dest} has sha256 {actual}, expected {expected}; delete it to download again, "
            f"or pass --sha256 {actual} if you trust this file"
        )
    return dest


def _record(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256")


def _record_unpinned(dest: Path, actual: str, console: Console | None) -> None:
    """Write ``<file>.sha256`` for a file without a published checksum, and say so (once: later runs find it)."""
    atomic_write_bytes(_record(dest), f"{actual}  {dest.name}\n".encode())
    if console is not None:
        console.print(
            f"[yellow]warning:[/] no published sha256 for {dest.name}; recorded {actual} in {_record(dest).name} "
            "(pass --sha256 to pin it)",
            highlight=False,
        )


def _download(url: str, part: Path, insecure: bool, console: Console | None, timeout: tuple[float, float]) -> str:
    """Fetch ``url`` into ``part``, continuing from its current size; return the sha256 of the whole file."""
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with warnings.catch_warnings():
        if insecure:
            warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
        response = requests.get(url, headers=headers, stream=True, timeout=timeout, verify=not insecure)
    with response:
        if response.status_code == 416 and offset:
            # Asked past the end: the partial file is already whole if the server's size agrees.
            total = response.headers.get("Content-Range", "").rpartition("/")[2]
            if total.isdigit() and int(total) == offset:
                return sha256_file(part)
            part.unlink()
            return _download(url, part, insecure, console, timeout)
        response.raise_for_status()
        digest = hashlib.sha256()
        if response.status_code == 206 and offset:
            if not response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
                part.unlink()  # a range we did not ask for: start over rather than splice wrong bytes
                return _download(url, part, insecure, console, timeout)
            with open(part, "rb") as f:
                while block := f.read(_CHUNK):
                    digest.update(block)
            mode = "ab"
        else:  # 200: the server ignored Range (or there was nothing to resume): start over
            offset, mode = 0, "wb"
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        with open(part, mode) as out, _progress(console) as progress:
            task = progress.add_task(part.name.removesuffix(".part"), total=total, completed=offset)
            for block in response.iter_content(_CHUNK):
                out.write(block)
                digest.update(block)
                progress.advance(task, len(block))
    return digest.hexdigest()


def _progress(console: Console | None) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=console is None,
        transient=False,
    )


def _reason(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code} {exc.response.reason}"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS certificate check failed (pass --insecure to skip it)"
    if isinstance(exc, requests.Timeout):
        return "timed out"
    detail = str(exc).splitlines()[0][:160] if str(exc) else ""
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
