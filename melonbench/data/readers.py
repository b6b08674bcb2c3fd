"""One reader per raw source: local files in, a lazy frame of ``user``, ``item``, ``ts`` out.

Every reader follows :data:`melonbench.data.registry.Reader`: it takes the input paths and a
:class:`~melonbench.data.registry.ReadContext` and returns a LazyFrame with exactly the columns ``user`` and
``item`` (raw ids: text, or integers for MovieLens) and ``ts`` (Int64 unix seconds), rows in input order, several
inputs concatenated in the order given. Ratings are dropped (every rating is an implicit positive); records
without a user, an item or a time are dropped. What can be checked cheaply (missing file, empty file, header,
first record) raises :class:`~melonbench.core.errors.DataError` at once; values deep inside a large file are checked
when the pipeline collects, through :func:`collect_checked`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from melonbench.core.errors import DataError
from melonbench.data.archives import copy_to, iter_members, sniff_file
from melonbench.data.readers_csv import (
    Columns,
    head_lines,
    integer_ts,
    is_integer,
    plain_files,
    read_csv,
    scan_columns,
    scratch_file,
)
from melonbench.data.readers_json import JsonFields, looks_like_json, scan_parts, spill

if TYPE_CHECKING:
    from melonbench.data.context import ReadContext

__all__ = [
    "collect_checked",
    "polars_errors",
    "read_adressa",
    "read_amazon",
    "read_csv",
    "read_movielens",
    "read_yelp",
]

ADRESSA = JsonFields(user="userId", item="id", ts="time", required=("userId", "time"))
AMAZON = JsonFields(
    user="reviewerID", item="asin", ts="unixReviewTime", required=("reviewerID", "asin", "unixReviewTime")
)
YELP_MEMBERS = ("yelp_academic_dataset_review.json", "review.json")


def _yelp_seconds(raw: pl.Series, label: str) -> pl.Series:
    """``YYYY-MM-DD HH:MM:SS`` (older releases: ``YYYY-MM-DD``) read as UTC, to unix seconds."""
    full = raw.str.strptime(pl.Datetime("us"), "%Y-%m-%d %H:%M:%S", strict=False)
    parsed = full.fill_null(raw.str.strptime(pl.Datetime("us"), "%Y-%m-%d", strict=False))
    bad = raw.filter(parsed.is_null() & raw.is_not_null())
    if len(bad):
        raise DataError(f"{label}: cannot parse date '{bad[0]}' (expected YYYY-MM-DD HH:MM:SS)")
    return parsed.dt.epoch("s")


YELP = JsonFields(
    user="user_id", item="business_id", ts="date", required=("user_id", "business_id", "date"), to_seconds=_yelp_seconds
)


@contextlib.contextmanager
def polars_errors(source: str) -> Iterator[None]:
    """Turn a polars error raised inside the block into a one-line DataError naming ``source``."""
    try:
        yield
    except pl.exceptions.PolarsError as exc:
        line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        hint = " (timestamps must be integer unix seconds)" if "to `i64` failed" in line else ""
        raise DataError(f"{source}: {line}{hint}") from exc


def collect_checked(lf: pl.LazyFrame, source: str = "the input") -> pl.DataFrame:
    """Collect ``lf`` with the streaming engine; a bad value found on the way becomes a DataError naming ``source``."""
    with polars_errors(source):
        return lf.collect(engine="streaming")


def read_adressa(paths: Sequence[Path], ctx: ReadContext) -> pl.LazyFrame:
    """Adressa: ``one_week.tar.gz`` (members ``one_week/20170101`` …, JSON lines), or extracted day files.

    Interaction = (``userId``, article ``id``, ``time``); events without an article id (front pages and other
    non-article events) are dropped. Tar members whose base name starts with a digit are read, in archive order.
    """
    return _read_json(paths, ctx, ADRESSA, ("[0-9]*",), "adressa", "day file (like one_week/20170101)")


def read_yelp(paths: Sequence[Path], ctx: ReadContext) -> pl.LazyFrame:
    """Yelp Open Dataset reviews: the review JSON, ``yelp_dataset.tar`` holding it, or a zip holding either.

    Interaction = (``user_id``, ``business_id``, ``date``); the date has no time zone and is read as UTC.
    Inside archives the member ``yelp_academic_dataset_review.json`` (older releases: ``review.json``) is read.
    """
    return _read_json(paths, ctx, YELP, YELP_MEMBERS, "yelp", " or ".join(YELP_MEMBERS))


def read_amazon(paths: Sequence[Path], ctx: ReadContext) -> pl.LazyFrame:
    """Amazon Review Data (2018): the ratings-only CSV or the (5-core) review JSON lines, told apart by content.

    The CSV has no header and the columns ``item,user,rating,timestamp`` (a header line, if present, is
    skipped). The JSON lines (usually ``.json.gz``) give (``reviewerID``, ``asin``, ``unixReviewTime``). The
    2014 release's ratings CSV has user and item swapped: read it with the ``csv`` dataset and ``--columns 0,1,3``.
    """
    _need_inputs(paths, "amazon")
    frames = []
    for path in paths:
        if sniff_file(path) == "plain":
            with open(path, "rb") as f:
                is_json = looks_like_json(f)
            if not is_json:
                frames.append(_amazon_csv(path))
                continue
        found = 0
        for member in iter_members(path, ("*.json", "*.jsonl", "*.csv")):
            found += 1
            if looks_like_json(member.stream):
                frames.append(scan_parts(spill(member, AMAZON, ctx.workdir), [member.label]))
            else:
                frames.append(_amazon_csv(copy_to(member, scratch_file(ctx.workdir, path.name)), member.label))
        if not found:
            raise DataError(f"{path}: no .json or .csv file inside")
    return pl.concat(frames, how="vertical")


def read_movielens(paths: Sequence[Path], ctx: ReadContext) -> pl.LazyFrame:
    """MovieLens: ``ratings.csv`` (header ``userId,movieId,rating,timestamp``), ``u.data`` (tab-separated, no
    header), or the GroupLens zip holding one of them. Ids are integers (cast strictly).

    Each file's release is named in ``ctx.described`` (:func:`movielens_release`), for the dataset card.
    """
    _need_inputs(paths, "movielens")
    frames = []
    for path in paths:
        for label, plain in plain_files(path, ("ratings.csv", "u.data"), ctx.workdir):
            lf, layout = _movielens_file(plain, label)
            frames.append(lf)
            ctx.described.append(f"{movielens_release(label, layout)} (GroupLens): ratings as implicit views")
    lf = pl.concat(frames, how="vertical")
    return lf.with_columns(pl.col("user", "item").cast(pl.Int64, strict=True))


# GroupLens names its releases ml-100k, ml-1m, ml-10m, ml-20m, ml-25m, ml-32m, ml-latest, ml-latest-small.
_ML_RELEASE = re.compile(r"\bml-(latest-small|latest|\d+[km])\b", re.IGNORECASE)


def movielens_release(label: str, layout: str) -> str:
    """``MovieLens 100K`` or ``MovieLens latest-small`` when the file's path or archive names the release
    (``ml-100k/u.data``, ``ml-latest-small.zip:ml-latest-small/ratings.csv``); otherwise the layout read:
    ``u.data`` only ever came with 100K, ``ratings.csv`` with every later release."""
    found = _ML_RELEASE.findall(label)
    if found:
        release = found[-1].lower()
        return f"MovieLens {release.upper() if release[0].isdigit() else release}"
    if layout == "u.data":
        return "MovieLens 100K (u.data layout)"
    return "MovieLens (ratings.csv layout)"


def _movielens_file(path: Path, label: str) -> tuple[pl.LazyFrame, str]:
    """The file's interactions and its layout (``u.data`` or ``ratings.csv``)."""
    lines = head_lines(path)
    if not lines:
        raise DataError(f"{label} is empty")
    if "::" in lines[0]:
        raise DataError(f"{label}: '::'-separated files (MovieLens 1M/10M) are not supported; convert it to CSV first")
    if "\t" in lines[0]:
        lf, layout = (
            scan_columns(path, Columns(0, 1, 3), delimiter="\t", header=False, n_fields=4, label=label),
            "u.data",
        )
    elif not is_integer(lines[0].split(",")[0].strip()):
        lf, layout = (
            scan_columns(path, Columns("userId", "movieId", "timestamp"), delimiter=",", label=label),
            "ratings.csv",
        )
    else:
        lf = scan_columns(path, Columns(0, 1, 3), delimiter=",", header=False, n_fields=4, label=label)
        layout = "ratings.csv"
    return integer_ts(lf), layout


def _amazon_csv(path: Path, label: str | None = None) -> pl.LazyFrame:
    return integer_ts(scan_columns(path, Columns(user=1, item=0, ts=3), delimiter=",", n_fields=4, label=label))


def _read_json(
    paths: Sequence[Path], ctx: ReadContext, fields: JsonFields, patterns: tuple[str, ...], dataset: str, what: str
) -> pl.LazyFrame:
    _need_inputs(paths, dataset)
    frames = []
    for path in paths:
        files, labels = [], []
        for member in iter_members(path, patterns):
            labels.append(member.label)
            files += spill(member, fields, ctx.workdir)
        if not labels:
            raise DataError(f"{path}: no {what} inside")
        frames.append(scan_parts(files, labels))
    return pl.concat(frames, how="vertical")


def _need_inputs(paths: Sequence[Path], dataset: str) -> None:
    if not paths:
        raise DataError(f"the {dataset} reader needs at least one input file (--input PATH)")
    for path in paths:
        if not path.is_file():
            raise DataError(f"input file not found: {path}")
