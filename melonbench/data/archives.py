"""Safe, streaming access to the files inside ``.gz``, ``.tar``, ``.tar.gz``/``.tgz`` and ``.zip`` inputs.

Raw datasets come packed in many ways (Adressa: a tar.gz of JSON-lines files; Yelp: a zip holding a tar holding
the review JSON; Amazon: ``.json.gz``). :func:`iter_members` walks any such nesting and hands out the wanted
members as forward-only binary streams, without extracting anything to disk. The container format is recognised
from the first bytes (magic numbers), not from the file name.

Safety rules, enforced on every archive it walks:

- a member whose path is absolute or contains ``..`` is refused (nothing is ever extracted, but such a name marks
  an archive that was built to attack extractors, so none of it is trusted);
- links, devices and FIFOs are refused; directories are skipped;
- the total number of decompressed bytes handed out is capped (``max_bytes``), against decompression bombs;
- a truncated or corrupt gzip/tar/zip becomes one :class:`~melonbench.core.errors.DataError` line naming the file.
"""

from __future__ import annotations

import fnmatch
import gzip
import io
import stat
import tarfile
import tarfile as tarfile_module
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from melonbench.core.errors import DataError

DEFAULT_MAX_BYTES = 64 * 2**30  # Adressa one week is ~13 GB unpacked, Yelp's review file ~5 GB
ARCHIVE_SUFFIXES = (".tar", ".tgz", ".tar.gz", ".zip")
_BUFFER = 1 << 20
_CORRUPT = (tarfile.TarError, EOFError, zlib.error, zipfile.BadZipFile, gzip.BadGzipFile)


@dataclass(frozen=True)
class Member:
    """One wanted file found in an input.

    Attributes
    ----------
    label : str
        Where it was found, for messages: ``outer.zip:inner.tar:member.json`` (just the file name for a plain file).
    stream : BinaryIO
        Its decompressed bytes, readable forward only (``read``, ``readline``), valid until the walk moves on.
    """

    label: str
    stream: BinaryIO


def sniff(head: bytes) -> str:
    """Name the container format of a file from its first 512 bytes: ``gzip``, ``zip``, ``tar`` or ``plain``."""
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return "plain"


def sniff_file(path: Path) -> str:
    """:func:`sniff` applied to the first bytes of ``path``."""
    with open(path, "rb") as f:
        return sniff(f.read(512))


def corrupt_error(path: Path | str, exc: BaseException) -> DataError:
    """The one-line error for an archive or compressed file that cannot be decoded."""
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return DataError(f"{path}: looks truncated or corrupt ({detail}); download it again or check the file")


def iter_members(path: Path, patterns: Sequence[str] = (), *, max_bytes: int = DEFAULT_MAX_BYTES) -> Iterator[Member]:
    """Yield the wanted files inside ``path``, in archive order, decompressed and streamed.

    Parameters
    ----------
    path : Path
        A plain file, a gzip file, a tar (optionally gzip-compressed) or a zip; archives may nest (zip → tar →
        file, zip → tgz → file, tar → file.gz).
    patterns : Sequence[str]
        ``fnmatch`` patterns matched against a member's base name (and the base name without ``.gz``). ``path``
        itself is always wanted when it is not an archive. Members named like archives (``.tar``, ``.tgz``,
        ``.tar.gz``, ``.zip``) are searched whether or not they match. Hidden files (``._x``) and ``__MACOSX``
        folders are skipped.
    max_bytes : int
        Cap on the decompressed bytes handed out in total.

    Yields
    ------
    Member
        Each stream must be consumed (or abandoned) before the next member is requested.

    Raises
    ------
    DataError
        Missing file, unsafe member, link or device, size cap exceeded, corrupt or truncated data. Errors that
        surface while a yielded stream is being read are raised by its ``read`` as the same ``DataError``.
    """
    if not path.is_file():
        raise DataError(f"input file not found: {path}")
    budget = _Budget(max_bytes, path)
    try:
        with open(path, "rb") as raw:
            yield from _walk(raw, path.name, path, tuple(patterns), budget, top=True)
    except _CORRUPT as exc:
        raise corrupt_error(path, exc) from exc


def copy_to(member: Member, dest: Path) -> Path:
    """Stream ``member`` into the file ``dest`` (for readers that need a real file, e.g. a CSV scanner)."""
    with open(dest, "wb") as out:
        while chunk := member.stream.read(_BUFFER):
            out.write(chunk)
    return dest


def _wanted(name: str, patterns: tuple[str, ...]) -> bool:
    base = PurePosixPath(name).name
    names = {base, base.removesuffix(".gz")}
    return any(fnmatch.fnmatchcase(n, p) for n in names for p in patterns)


def _looks_like_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def _skipped(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return "__MACOSX" in parts or PurePosixPath(name).name.startswith("._")


def _check_name(name: str, label: str) -> None:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (len(name) > 1 and name[1] == ":"):
        raise DataError(f"{label}: refusing unsafe member path '{name}' (absolute or containing '..')")


def _walk(
    stream: BinaryIO, label: str, path: Path, patterns: tuple[str, ...], budget: _Budget, *, top: bool, name: str = ""
) -> Iterator[Member]:
    head, stream = _peek(stream)
    kind = sniff(head)
    if kind == "gzip":
        inner = gzip.GzipFile(fileobj=stream, mode="rb")
        yield from _walk(inner, label, path, patterns, budget, top=top, name=name)
    elif kind == "tar":
        yield from _walk_tar(stream, label, path, patterns, budget)
    elif kind == "zip":
        yield from _walk_zip(stream, label, path, patterns, budget)
    elif top or _wanted(name, patterns):
        yield Member(label, io.BufferedReader(_Guarded(stream, path, budget), _BUFFER))


def _walk_tar(stream: BinaryIO, label: str, path: Path, patterns: tuple[str, ...], budget: _Budget) -> Iterator[Member]:
    with tarfile.open(fileobj=stream, mode="r|", tarinfo=_StrictTarInfo) as tar:
        for info in tar:
            _check_name(info.name, label)
            if info.isdir():
                continue
            if not info.isfile():
                raise DataError(f"{label}: refusing member '{info.name}' (a link, device or other special file)")
            if _skipped(info.name) or not (_wanted(info.name, patterns) or _looks_like_archive(info.name)):
                continue
            member = tar.extractfile(info)
            assert member is not None  # a regular file always has content
            yield from _walk(member, f"{label}:{info.name}", path, patterns, budget, top=False, name=info.name)


def _walk_zip(stream: BinaryIO, label: str, path: Path, patterns: tuple[str, ...], budget: _Budget) -> Iterator[Member]:
    if not _can_seek(stream):
        raise DataError(f"{label}: a zip inside a tar cannot be streamed; extract it first and pass it as --input")
    with zipfile.ZipFile(stream) as zf:
        for info in zf.infolist():
            _check_name(info.filename, label)
            if info.is_dir():
                continue
            file_type = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip records no Unix mode
            if file_type not in (0, stat.S_IFREG):
                raise DataError(f"{label}: refusing member '{info.filename}' (a link, device or other special file)")
            if _skipped(info.filename) or not (_wanted(info.filename, patterns) or _looks_like_archive(info.filename)):
                continue
            try:
                member = zf.open(info)
            except (RuntimeError, NotImplementedError) as exc:  # encrypted, or an unsupported compression method
                raise DataError(f"{label}:{info.filename}: cannot be read ({exc})") from exc
            with member:
                yield from _walk(
                    member, f"{label}:{info.filename}", path, patterns, budget, top=False, name=info.filename
                )


def _can_seek(stream: BinaryIO) -> bool:
    # GzipFile and tar members claim to be seekable but rewind by re-reading their (unseekable) source.
    return isinstance(stream, zipfile.ZipExtFile) or isinstance(getattr(stream, "raw", None), io.FileIO)


def _peek(stream: BinaryIO) -> tuple[bytes, BinaryIO]:
    """Read the first 512 bytes and return them with a stream that still starts at byte 0."""
    if _can_seek(stream):
        pos = stream.tell()
        head = stream.read(512)
        stream.seek(pos)
        return head, stream
    chunks, got = [], 0
    while got < 512 and (chunk := stream.read(512 - got)):
        chunks.append(chunk)
        got += len(chunk)
    head = b"".join(chunks)
    return head, io.BufferedReader(_Replay(head, stream), _BUFFER)  # type: ignore[return-value]


class _StrictTarInfo(tarfile.TarInfo):
    """Tar headers that fail loudly: ``tarfile`` silently ends an archive at a damaged or missing header."""

    @classmethod
    def fromtarfile(cls, tarfile):  # type: ignore[no-untyped-def]
        try:
            return super().fromtarfile(tarfile)
        except tarfile_module.EOFHeaderError:
            raise  # the zero block that properly ends an archive
        except tarfile_module.HeaderError as exc:
            if tarfile.offset == 0:
                raise
            raise tarfile_module.ReadError(f"bad or missing header at byte {tarfile.offset}: {exc}") from None


class _Budget:
    """Counts decompressed bytes handed out, failing past the cap."""

    def __init__(self, limit: int, path: Path) -> None:
        self.limit, self.used, self.path = limit, 0, path

    def spend(self, n: int) -> None:
        self.used += n
        if self.used > self.limit:
            raise DataError(
                f"{self.path}: more than {self.limit / 2**30:.1f} GiB decompressed; refusing it as a possible "
                "decompression bomb"
            )


class _Replay(io.RawIOBase):
    """A forward-only stream that first replays ``head``, then continues with ``rest``."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head, self._rest = memoryview(head), rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _Guarded(io.RawIOBase):
    """The stream handed to readers: counts bytes against the budget and turns decoding errors into DataError."""

    def __init__(self, inner: BinaryIO, path: Path, budget: _Budget) -> None:
        self._inner, self._path, self._budget = inner, path, budget

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        try:
            data = self._inner.read(len(buffer))
        except _CORRUPT as exc:
            raise corrupt_error(self._path, exc) from exc
        self._budget.spend(len(data))
        buffer[: len(data)] = data
        return len(data)
