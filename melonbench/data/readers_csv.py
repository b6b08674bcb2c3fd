"""Delimited-text inputs: layout detection from the first lines, lazy scanning, and the generic ``csv`` reader.

Files are scanned lazily with ``pl.scan_csv`` (every field read as text, timestamps cast to Int64 with
``strict=True``), so a 2 GB ratings file is never held in memory and a bad value deep inside it surfaces when the
pipeline collects. Only the first few kilobytes are read eagerly, to check the header, the column count and the
delimiter and to fail early with a message that names the file. CRLF line endings are handled by the scanner.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from melonbench.core.errors import DataError
from melonbench.data.archives import copy_to, iter_members, sniff_file

if TYPE_CHECKING:
    from melonbench.data.context import ReadContext

DELIMITERS = (",", "\t", ";")
_DELIMITER_NAMES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "space": " ", "pipe": "|"}
_HEAD_BYTES = 1 << 16


@dataclass(frozen=True)
class Columns:
    """Where ``user``, ``item`` and ``ts`` are: three header names, or three 0-based positions."""

    user: str | int
    item: str | int
    ts: str | int

    @property
    def by_name(self) -> bool:
        return isinstance(self.user, str)

    @classmethod
    def parse(cls, text: str | None) -> Columns:
        """Parse ``--columns`` (``user_id,item_id,time`` or ``0,1,3``)."""
        if not text:
            raise DataError("the csv reader needs --columns user,item,ts (header names or 0-based positions)")
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != 3 or not all(parts):
            raise DataError(f"--columns needs exactly three entries user,item,ts, got '{text}'")
        numeric = [p.isdigit() for p in parts]
        if all(numeric):
            u, i, t = (int(p) for p in parts)
            return cls(u, i, t)
        if any(numeric):
            raise DataError(f"--columns mixes names and positions ('{text}'); use all names or all positions")
        return cls(*parts)


def head_lines(path: Path, n: int = 2) -> list[str]:
    """The first ``n`` non-empty lines of a text file (BOM and line endings removed)."""
    if not path.is_file():
        raise DataError(f"input file not found: {path}")
    with open(path, "rb") as f:
        head = f.read(_HEAD_BYTES)
    text = head.decode("utf-8", errors="replace").removeprefix("\ufeff")
    lines = [line for line in text.splitlines() if line.strip()]
    if len(head) == _HEAD_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the last line of a partial read may be cut
    return lines[:n]


def detect_delimiter(line: str, path: Path | str) -> str:
    """The most frequent of ``,``, tab and ``;`` in a header or first row."""
    counts = {d: line.count(d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: counts[d])
    if counts[best] == 0:
        raise DataError(f"{path}: cannot tell the delimiter from the first line; pass --set delimiter=...")
    return best


def split_fields(line: str, delimiter: str) -> list[str]:
    """Fields of one line, surrounding whitespace and double quotes removed (enough for a header or first row)."""
    return [f.strip().strip('"') for f in line.split(delimiter)]


def is_integer(text: str) -> bool:
    """True for an optionally signed run of digits (what a unix timestamp looks like)."""
    return text.lstrip("+-").isdigit()


def scan_columns(
    path: Path,
    columns: Columns,
    *,
    delimiter: str | None = None,
    header: bool | None = None,
    n_fields: int | None = None,
    label: str | None = None,
) -> pl.LazyFrame:
    """Lazily scan ``path`` into text columns ``user``, ``item``, ``ts`` after checking its first lines.

    Parameters
    ----------
    path : Path
        A plain (uncompressed) delimited text file.
    columns : Columns
        Header names or 0-based positions of the three fields.
    delimiter : str | None
        ``None`` detects one of ``,`` tab ``;`` from the first line.
    header : bool | None
        ``None`` decides: names → a header; positions → a header iff the first row's ts field is not an integer.
    n_fields : int | None
        When given, the first row must have exactly this many fields (a known layout, e.g. Amazon's four).
    label : str | None
        How to name the file in messages (default: ``path``; e.g. the archive member it was decompressed from).

    Raises
    ------
    DataError
        Missing or empty file, header without rows, unknown column name, position out of range, wrong width.
    """
    name = label or str(path)
    lines = head_lines(path)
    if not lines:
        raise DataError(f"{name} is empty")
    sep = delimiter or detect_delimiter(lines[0], name)
    first = split_fields(lines[0], sep)
    if n_fields is not None and len(first) != n_fields:
        raise DataError(
            f"{name}: expected {n_fields} fields per row, the first row has {len(first)}: '{lines[0][:80]}'"
        )
    wanted = (columns.user, columns.item, columns.ts)
    if columns.by_name:
        if header is False:
            raise DataError(f"{name}: --columns gives names but header=false; give 0-based positions instead")
        header = True
        missing = [c for c in wanted if c not in first]
        if missing:
            raise DataError(
                f"{name}: no column {', '.join(map(repr, missing))} in the header (found: {', '.join(first)})"
            )
    else:
        too_far = [p for p in wanted if p >= len(first)]  # type: ignore[operator]
        if too_far:
            raise DataError(
                f"{name}: column position {max(too_far)} is out of range (the first row has {len(first)} fields)"
            )
        if header is None:
            header = not is_integer(first[columns.ts])  # type: ignore[index]
    if header and len(lines) < 2:
        raise DataError(f"{name} has a header but no rows")
    lf = pl.scan_csv(path, separator=sep, has_header=header, infer_schema=False, raise_if_empty=True)
    pick = [pl.col(c) if isinstance(c, str) else pl.nth(c) for c in wanted]
    return lf.select(*(e.alias(n) for e, n in zip(pick, ("user", "item", "ts"), strict=True)))


def integer_ts(lf: pl.LazyFrame) -> pl.LazyFrame:
    """Cast ``ts`` to Int64 (strict: a non-integer surfaces on collect) and drop rows missing any field."""
    return lf.with_columns(pl.col("ts").cast(pl.Int64, strict=True)).drop_nulls(["user", "item", "ts"])


def plain_files(path: Path, patterns: tuple[str, ...], workdir: Path) -> list[tuple[str, Path]]:
    """``path`` itself if it is plain text, else its wanted members decompressed into ``workdir``.

    Returns (label for messages, plain file) pairs in archive order; an archive without a wanted member is an
    error. A gzip file is simply decompressed (``patterns`` apply to archive members only).
    """
    if not path.is_file():
        raise DataError(f"input file not found: {path}")
    if sniff_file(path) == "plain":
        return [(str(path), path)]
    found = [(m.label, copy_to(m, scratch_file(workdir, path.name))) for m in iter_members(path, patterns)]
    if not found:
        raise DataError(f"{path}: no {' or '.join(patterns)} inside")
    return found


def scratch_file(workdir: Path, stem: str) -> Path:
    """A new, empty, uniquely named file in ``workdir``."""
    fd, name = tempfile.mkstemp(prefix=f"{stem}.", suffix=".txt", dir=workdir)
    with open(fd, "wb"):
        pass
    return Path(name)


def parse_bool(key: str, value: str) -> bool:
    """``true/false/yes/no/1/0`` for a ``--set`` value."""
    lowered = value.lower()
    if lowered in ("true", "yes", "1"):
        return True
    if lowered in ("false", "no", "0"):
        return False
    raise DataError(f"--set {key}= expects true or false, got '{value}'")


def parse_delimiter(value: str) -> str:
    """A one-character delimiter from ``--set delimiter=`` (``tab``, ``\\t``, ``comma``, ``;`` ...)."""
    sep = _DELIMITER_NAMES.get(value.lower(), value)
    if len(sep) != 1:
        raise DataError(f"--set delimiter= expects one character (or tab, comma, semicolon), got '{value}'")
    return sep


def read_csv(paths: Sequence[Path], ctx: ReadContext) -> pl.LazyFrame:
    """The generic reader: any delimited file(s), fields chosen by ``--columns``, concatenated in the order given.

    ``--columns user,item,ts`` names header fields or gives 0-based positions. With names the file must have a
    header; with positions a header is assumed iff the first row's ts field is not an integer. ``--set
    header=true|false`` and ``--set delimiter=X`` override the detection (default: the most frequent of ``,``
    tab ``;`` in the first line). Ids stay text; ``ts`` must be integer unix seconds. Rows with an empty user,
    item or timestamp are dropped.
    """
    params = dict(ctx.options.params)
    unknown = sorted(set(params) - {"header", "delimiter"})
    if unknown:
        raise DataError(
            f"unknown --set key {', '.join(map(repr, unknown))} for the csv reader (known: header, delimiter)"
        )
    header = parse_bool("header", params["header"]) if "header" in params else None
    delimiter = parse_delimiter(params["delimiter"]) if "delimiter" in params else None
    columns = Columns.parse(ctx.options.columns)
    if not paths:
        raise DataError("the csv dataset needs --input PATH (one or more delimited files)")
    frames = []
    for path in paths:
        if path.is_file() and sniff_file(path) in ("tar", "zip"):
            raise DataError(f"{path} is an archive; extract the delimited file you want and pass it as --input")
        for label, plain in plain_files(path, (), ctx.workdir):
            frames.append(scan_columns(plain, columns, delimiter=delimiter, header=header, label=label))
    return integer_ts(pl.concat(frames, how="vertical"))
