"""JSON-lines inputs, streamed: decompressed text is cut into chunks at line boundaries and spilled to Parquet.

A 13 GB Adressa week or a 5 GB Yelp review file cannot be parsed in one piece, and polars cannot scan JSON lines
inside a tar or zip. :func:`spill` reads a member stream in chunks of about 64 MB, parses each chunk with polars'
NDJSON reader keeping only the three fields needed, converts the timestamp (strictly), drops records that lack a
user or an item, and writes each chunk as a Parquet file into the reader's scratch folder. The reader then scans
those files in order, so memory stays bounded by one chunk whatever the input size.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import polars as pl

from melonbench.core.errors import DataError
from melonbench.data.archives import Member

CHUNK_BYTES = 64 * 2**20


def integer_seconds(raw: pl.Series, label: str) -> pl.Series:
    """Unix seconds given as JSON integers (or integer strings), cast strictly to Int64."""
    try:
        return raw.cast(pl.Int64, strict=True)
    except pl.exceptions.PolarsError as exc:
        bad = raw.filter(raw.cast(pl.Int64, strict=False).is_null() & raw.is_not_null())
        raise DataError(f"{label}: timestamp field '{raw.name}' holds a non-integer value '{bad[0]}'") from exc


@dataclass(frozen=True)
class JsonFields:
    """Which JSON fields make an interaction, and how to turn the time field into unix seconds.

    Attributes
    ----------
    user, item, ts : str
        Field names in the records.
    required : tuple[str, ...]
        Fields the first record must have (checked eagerly; Adressa's item id is absent on non-article events,
        so it is not required there).
    to_seconds : Callable[[pl.Series, str], pl.Series]
        Converts the raw time field (read as text) to Int64 unix seconds; raises DataError naming the label.
    """

    user: str
    item: str
    ts: str
    required: tuple[str, ...]
    to_seconds: Callable[[pl.Series, str], pl.Series] = integer_seconds


def looks_like_json(stream: BinaryIO) -> bool:
    """True if the first non-blank byte of a peekable stream is ``{`` (JSON lines rather than CSV)."""
    head = stream.peek(4096)[:4096]  # type: ignore[attr-defined]
    return head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{"


def spill(member: Member, fields: JsonFields, workdir: Path, *, chunk_bytes: int = CHUNK_BYTES) -> list[Path]:
    """Parse a JSON-lines stream chunk by chunk into Parquet files of ``user``, ``item`` (text), ``ts`` (Int64).

    Parameters
    ----------
    member : Member
        The stream and its label (used in every error message).
    fields : JsonFields
        The record layout.
    workdir : Path
        Scratch folder; the files go into a fresh sub-folder of it.
    chunk_bytes : int
        Approximate bytes of text per chunk (each chunk is extended to the end of its last line).

    Returns
    -------
    list[Path]
        The Parquet files in input order (chunks left empty by the filter are not written).

    Raises
    ------
    DataError
        Empty stream, first record not JSON or missing a required field, malformed line, bad timestamp.
    """
    out = Path(tempfile.mkdtemp(prefix="json-", dir=workdir))
    schema = {name: pl.String for name in dict.fromkeys((fields.user, fields.item, fields.ts))}
    files, k = [], -1
    for k, block in enumerate(_chunks(member.stream, chunk_bytes)):
        if k == 0:
            _check_first_record(block, fields, member.label)
        try:
            df = pl.read_ndjson(block, schema=schema)
        except pl.exceptions.PolarsError as exc:
            raise DataError(f"{member.label}: not valid JSON lines ({_first_line(exc)})") from exc
        df = df.filter(pl.col(fields.user).is_not_null() & pl.col(fields.item).is_not_null())
        ts = fields.to_seconds(df[fields.ts], member.label)
        df = pl.DataFrame({"user": df[fields.user], "item": df[fields.item], "ts": ts}).drop_nulls("ts")
        if df.height:
            files.append(out / f"part-{k:06d}.parquet")
            df.write_parquet(files[-1])
    if k < 0:
        raise DataError(f"{member.label} is empty")
    return files


def scan_parts(files: Sequence[Path], labels: Sequence[str]) -> pl.LazyFrame:
    """Scan the spilled Parquet files in order; no rows at all is an error naming the inputs."""
    if not files:
        raise DataError(f"{', '.join(labels)}: no records with a user, an item and a time")
    return pl.scan_parquet(list(files))


def _chunks(stream: BinaryIO, chunk_bytes: int) -> Iterator[bytes]:
    first = True
    while block := stream.read(chunk_bytes):
        if first:
            block, first = block.removeprefix(b"\xef\xbb\xbf"), False
        if not block.endswith(b"\n"):
            block += stream.readline()
        if not block.isspace():
            yield block


def _check_first_record(block: bytes, fields: JsonFields, label: str) -> None:
    start, line = 0, b""
    while not line:  # the block holds a non-blank line; find it without splitting 64 MB into lines
        end = block.find(b"\n", start)
        end = len(block) if end < 0 else end
        line, start = block[start:end].strip(), end + 1
    try:
        record = json.loads(line)
    except ValueError:
        raise DataError(f"{label}: does not look like JSON lines (first line: {line[:80]!r})") from None
    if not isinstance(record, dict):
        raise DataError(f"{label}: the first line is not a JSON object")
    missing = [f for f in fields.required if f not in record]
    if missing:
        found = ", ".join(list(record)[:12])
        raise DataError(f"{label}: the first record has no field {', '.join(map(repr, missing))} (found: {found})")


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
