"""Scale benchmark of ``melonbench prepare``: a Books-sized ratings CSV and an Adressa-schema tar.

Generates the two inputs (power-law popularity, realistic id strings, day-granularity Amazon timestamps;
Adressa events with the real field names), then runs ``melonbench prepare <dataset> --input FILE --force``
in a child process for each and prints its wall time and peak resident memory (the child's own
``ru_maxrss``, read with ``os.wait4``, so generation is not counted).

    python benchmarks/prepare_scale.py                        # full size: 51.3 M rows, >= 1 GB tar.gz
    python benchmarks/prepare_scale.py --rows 2e6 --adressa-gb 0.05   # a quick try

The generated files are kept in ``--workdir`` (default: a temporary folder, removed at the end) and are reused
when a file of the requested size is already there, so a second run only measures ``prepare``.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import polars as pl

BOOKS_ROWS = 51_311_621  # Amazon 2018 Books ratings-only CSV
ALNUM = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", dtype=np.uint8)
DAY = 86_400
AMAZON_FIRST_DAY = 9_600  # 1996-04-14
AMAZON_LAST_DAY = 17_800  # 2018-09-25


def _id_strings(rng: np.random.Generator, n: int, prefix: bytes, width: int, digits_only: bool = False) -> pl.Series:
    """``n`` distinct-looking ids such as ``A2QXXXXXXXXXXX`` (random characters after a fixed prefix)."""
    alphabet = ALNUM[:10] if digits_only else ALNUM
    body = alphabet[rng.integers(0, len(alphabet), size=(n, width - len(prefix)), dtype=np.uint8)]
    raw = np.empty((n, width), dtype=np.uint8)
    raw[:, : len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
    raw[:, len(prefix) :] = body
    return pl.Series(raw.view(f"S{width}").ravel()).cast(pl.String)


def _power_law(rng: np.random.Generator, n_values: int, size: int, exponent: float) -> np.ndarray:
    """Indices in ``[0, n_values)`` with P(rank r) roughly proportional to ``r ** -exponent`` (inverse CDF)."""
    u = rng.random(size)
    a = 1.0 - exponent
    x = ((n_values + 1.0) ** a - 1.0) * u + 1.0
    return np.minimum(x ** (1.0 / a) - 1.0, n_values - 1).astype(np.int64)


def write_books_csv(path: Path, rows: int, seed: int = 0, chunk: int = 4_000_000) -> None:
    """Write a ratings-only CSV shaped like Amazon 2018 Books: ``item,user,rating,timestamp``, no header.

    Users ~0.3 per row and items ~0.057 per row as in the real file; popularity of both follows a power
    law, and days are skewed towards the end of the range as Amazon's review volume grew.
    """
    rng = np.random.default_rng(seed)
    n_users = max(1, round(rows * 0.30))
    n_items = max(1, round(rows * 0.057))
    users = _id_strings(rng, n_users, b"A", 14)
    n_isbn = n_items * 6 // 10
    items = pl.concat(
        [_id_strings(rng, n_isbn, b"", 10, digits_only=True), _id_strings(rng, n_items - n_isbn, b"B0", 10)]
    )
    # popularity ranks are shuffled so that popular ids are not adjacent in the vocabulary
    user_perm = rng.permutation(n_users)
    item_perm = rng.permutation(n_items)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            days = AMAZON_FIRST_DAY + ((AMAZON_LAST_DAY - AMAZON_FIRST_DAY) * rng.random(n) ** 0.35).astype(np.int64)
            frame = pl.DataFrame(
                {
                    "item": items.gather(item_perm[_power_law(rng, n_items, n, 0.75)]),
                    "user": users.gather(user_perm[_power_law(rng, n_users, n, 0.5)]),
                    "rating": rng.choice(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), n, p=[0.05, 0.05, 0.1, 0.2, 0.6]),
                    "timestamp": days * DAY,
                }
            )
            frame.write_csv(f, include_header=False)
    os.replace(tmp, path)


ADRESSA_DAY0 = 1_483_228_800  # 2017-01-01T00:00:00Z
_WORDS = (
    "trondheim rosenborg kommune politiet brann vei skole sykehus fotball kamp trener spiller sesong bil ulykke "
    "veien nord sør midt byen nyheter sport kultur økonomi bolig pris butikk restaurant konsert film bok musikk "
    "været snø kulde vinter nyttår fest lokal fylke regjering stortinget valg parti leder næring arbeid jobb "
    "studenter universitet ntnu forskning helse lege pasient barn familie hjem hus hytte fjell tur ski løype"
).split()


def _hex_ids(rng: np.random.Generator, n: int, width: int = 40) -> pl.Series:
    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)[rng.integers(0, 16, size=(n, width), dtype=np.uint8)]
    return pl.Series(np.ascontiguousarray(digits).view(f"S{width}").ravel()).cast(pl.String)


def _phrases(rng: np.random.Generator, n: int, words: int, sep: str) -> pl.Series:
    vocab = pl.Series(_WORDS)
    picks = [vocab.gather(rng.integers(0, len(_WORDS), n)) for _ in range(words)]
    return pl.DataFrame(picks).select(pl.concat_str(pl.all(), separator=sep)).to_series()


def _articles(rng: np.random.Generator, n: int) -> pl.DataFrame:
    """The article table events refer to: id, url, title, category, keywords, author, publish time, profile."""
    ids = _hex_ids(rng, n)
    sections = pl.Series(["nyheter", "sport", "kultur", "meninger", "pluss", "bolig", "100sport"])
    section = sections.gather(rng.integers(0, len(sections), n))
    title = _phrases(rng, n, 8, " ")
    slug = title.str.replace_all(" ", "-")
    publish = ADRESSA_DAY0 - rng.integers(0, 30 * DAY, n) + rng.integers(0, 7 * DAY, n)
    frame = pl.DataFrame({"id": ids, "section": section, "title": title, "slug": slug, "publish": publish})
    return frame.select(
        "id",
        pl.format(
            "http://adressa.no/{}/trondheim/2017/01/0{}/{}-{}.ece",
            "section",
            pl.lit(1),
            "slug",
            pl.int_range(14_000_000, 14_000_000 + n),
        ).alias("url"),
        "title",
        pl.format("{}|trondheim", "section").alias("category1"),
        pl.from_epoch("publish", time_unit="s").dt.strftime("%Y-%m-%dT%H:%M:%S.000Z").alias("publishtime"),
        _phrases(rng, n, 4, ",").alias("keywords"),
        pl.concat_list(_phrases(rng, n, 2, " ")).alias("author"),
        pl.concat_list(
            pl.struct(pl.col("section").alias("item"), pl.lit("category").alias("group"), pl.lit(0.6).alias("weight")),
            pl.struct(
                pl.lit("trondheim").alias("item"), pl.lit("location").alias("group"), pl.lit(0.3).alias("weight")
            ),
        ).alias("profile"),
    )


def _events(rng: np.random.Generator, n: int, day: int, users: pl.Series, articles: pl.DataFrame) -> bytes:
    """``n`` events of one day as JSON lines; about a quarter are front-page events without an article ``id``."""
    start = ADRESSA_DAY0 + day * DAY
    common = pl.DataFrame(
        {
            "eventId": rng.integers(1_000_000_000, 2_000_000_000, n),
            "userId": users.gather(_power_law(rng, len(users), n, 0.6)),
            "time": start + rng.integers(0, DAY, n),
            "activeTime": rng.integers(1, 600, n),
            "sessionStart": rng.random(n) < 0.2,
            "sessionStop": rng.random(n) < 0.2,
            "deviceType": pl.Series(["Mobile", "Desktop", "Tablet"]).gather(rng.integers(0, 3, n)),
            "os": pl.Series(["iPhone OS", "Android", "Windows", "Macintosh"]).gather(rng.integers(0, 4, n)),
            "city": pl.Series(["trondheim", "oslo", "steinkjer", "orkanger"]).gather(rng.integers(0, 4, n)),
            "region": pl.Series(["sor-trondelag", "oslo", "nord-trondelag"]).gather(rng.integers(0, 3, n)),
            "country": "no",
            "referrerUrl": pl.Series(
                ["http://www.facebook.com/", "http://www.google.no/", "http://adressa.no/"]
            ).gather(rng.integers(0, 3, n)),
        }
    )
    is_article = rng.random(n) < 0.75
    picked = articles.gather(_power_law(rng, articles.height, int(is_article.sum()), 1.1))
    reads = pl.concat([common.filter(is_article), picked], how="horizontal")
    front = common.filter(~is_article).with_columns(url=pl.lit("http://adressa.no"))
    out = io.BytesIO()
    reads.write_ndjson(out)
    front.write_ndjson(out)
    return out.getvalue()


def write_adressa_tar(path: Path, target_gb: float, seed: int = 0, chunk: int = 200_000) -> None:
    """Write an Adressa-schema ``one_week.tar.gz`` of at least ``target_gb`` GB (7 day members of JSON lines).

    A sample chunk is compressed first to learn the bytes per event, then each day gets its share of events.
    """
    rng = np.random.default_rng(seed)

    n_users = 2_000_000
    users = pl.select(
        pl.concat_str(
            pl.lit("cx:"),
            _id_strings(rng, n_users, b"", 18).str.to_lowercase(),
            pl.lit(":"),
            _id_strings(rng, n_users, b"", 13).str.to_lowercase(),
        )
    ).to_series()
    articles = _articles(rng, 20_000)
    sample = _events(rng, chunk, 0, users, articles)
    per_event = len(zlib.compress(sample, 1)) / chunk
    per_day = int(target_gb * 1e9 / per_event / 7 * 1.03) + 1
    tmp = path.with_name(path.name + ".part")
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch, tarfile.open(tmp, "w:gz", compresslevel=1) as tar:
        for day in range(7):
            member = Path(scratch) / f"2017010{day + 1}"
            with open(member, "wb") as f:
                for start in range(0, per_day, chunk):
                    f.write(_events(rng, min(chunk, per_day - start), day, users, articles))
            tar.add(member, arcname=f"one_week/{member.name}")
            member.unlink()
    os.replace(tmp, path)


def run_prepare(dataset: str, source: Path, home: Path) -> tuple[float, float, int]:
    """Run ``melonbench prepare DATASET --input SOURCE --force`` as a child; return (seconds, peak GiB, exit code).

    Linux carries a process's peak RSS across fork and exec, so the child's figure is at least this process's
    RSS when it forked; generating the inputs in another child keeps that floor at the ~0.1 GB of the imports.
    """
    env = dict(os.environ, MELONBENCH_HOME=str(home))
    command = [sys.executable, "-m", "melonbench", "prepare", dataset, "--input", str(source), "--force"]
    start = time.perf_counter()
    child = subprocess.Popen(command, env=env)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    return seconds, usage.ru_maxrss / 2**20, child.returncode  # ru_maxrss is in KiB on Linux


def _ensure(path: Path, kind: str, size: float, seed: int) -> None:
    """Generate ``path`` unless it exists, in a child process: the parent stays small (see ``run_prepare``)."""
    if path.exists():
        print(f"reusing {path} ({path.stat().st_size / 1e9:.2f} GB)")
        return
    start = time.perf_counter()
    command = [
        sys.executable,
        __file__,
        "--generate",
        kind,
        "--out",
        str(path),
        "--size",
        str(size),
        "--seed",
        str(seed),
    ]
    subprocess.run(command, check=True)
    print(f"generated {path} ({path.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - start:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=float, default=BOOKS_ROWS, help="rows of the Books-like CSV (default 51.3 M)")
    parser.add_argument("--adressa-gb", type=float, default=1.0, help="size of the Adressa-like tar.gz in GB")
    parser.add_argument("--workdir", type=Path, help="keep generated files here (default: a temporary folder)")
    parser.add_argument("--only", choices=("books", "adressa"), help="run one of the two")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--generate", choices=("books", "adressa"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.generate == "books":
        write_books_csv(args.out, int(args.size), args.seed)
        return 0
    if args.generate == "adressa":
        write_adressa_tar(args.out, args.size, args.seed)
        return 0

    with tempfile.TemporaryDirectory(prefix="melonbench-scale-") as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        rows = int(args.rows)
        jobs = []
        if args.only in (None, "books"):
            books = workdir / f"books-{rows}.csv"
            _ensure(books, "books", rows, args.seed)
            jobs.append(("amazon-book", books))
        if args.only in (None, "adressa"):
            adressa = workdir / f"one_week-{args.adressa_gb:g}GB.tar.gz"
            _ensure(adressa, "adressa", args.adressa_gb, args.seed)
            jobs.append(("adressa", adressa))
        print(f"{'dataset':<12} {'input GB':>9} {'wall s':>8} {'peak RSS GiB':>13}  (on {os.cpu_count()} CPUs)")
        failed = 0
        for dataset, source in jobs:
            seconds, peak, code = run_prepare(dataset, source, workdir / "home")
            failed += code != 0
            note = "" if code == 0 else f"  FAILED (exit {code})"
            print(f"{dataset:<12} {source.stat().st_size / 1e9:>9.2f} {seconds:>8.1f} {peak:>13.2f}{note}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
