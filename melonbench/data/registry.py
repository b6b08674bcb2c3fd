"""The dataset registry: one explicit dict from name to where the raw data comes from and how to read it.

Sources, checksums and terms are documented for users in ``docs/datasets.md``. Checksums are those that other
open-source loaders pin for the same URL (not re-verified here); ``None`` means no stable checksum is published,
and the download then records the one it computed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from melonbench.core.registry import lookup
from melonbench.data.context import ReadContext, Reader
from melonbench.data.readers import read_adressa, read_amazon, read_movielens, read_yelp
from melonbench.data.readers_csv import read_csv


@dataclass(frozen=True)
class DatasetSpec:
    """One registry entry.

    Attributes
    ----------
    name, description : str
        Registry name and a one-line description.
    urls : tuple[str, ...]
        Mirrors of one file, tried in order; empty when there is nothing to download.
    filename : str | None
        Name the download is saved under.
    sha256 : str | None
        Published checksum of that file, ``None`` if none is published.
    license, citation : str
        Terms of use (in short) and what to cite.
    split : tuple[float, float, float]
        Default pre-train : validation : test percentages.
    reader : Reader
        Turns the raw file(s) into interactions.
    input_hint : str
        One line: what ``--input`` accepts (shown when there is no input and no URL).
    generated : bool
        The reader makes the data itself and takes no input (the synthetic stream).
    """

    name: str
    description: str
    urls: tuple[str, ...]
    filename: str | None
    sha256: str | None
    license: str
    citation: str
    split: tuple[float, float, float]
    reader: Reader
    input_hint: str
    generated: bool = False


def _read_synthetic(paths: Sequence[Path], ctx: ReadContext) -> pl.LazyFrame:
    # Imported on use so that the registry (and every other dataset) works whatever the state of that module.
    from melonbench.data.synthetic import read

    return read(paths, ctx)


_AMAZON_HOSTS = (
    "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_v2/categoryFilesSmall/",
    "https://jmcauley.ucsd.edu/data/amazon_v2/categoryFilesSmall/",
    "http://deepyeti.ucsd.edu/jianmo/amazon/categoryFilesSmall/",
)
_AMAZON_LICENSE = "No licence from the publishers; research use only. Keep the files local."
_AMAZON_CITATION = (
    "Jianmo Ni, Jiacheng Li, Julian McAuley. Justifying recommendations using distantly-labeled reviews and "
    "fine-grained aspects. EMNLP-IJCNLP 2019."
)
_AMAZON_HINT = "{c}.csv (ratings only: item,user,rating,timestamp) or {c}_5.json.gz (5-core reviews)"


def _amazon(name: str, category: str, label: str, sha256: str, split: tuple[float, float, float]) -> DatasetSpec:
    return DatasetSpec(
        name=name,
        description=f"Amazon Review Data 2018, {label}: ratings as implicit purchases",
        urls=tuple(host + f"{category}.csv" for host in _AMAZON_HOSTS),
        filename=f"{category}.csv",
        sha256=sha256,
        license=_AMAZON_LICENSE,
        citation=_AMAZON_CITATION,
        split=split,
        reader=read_amazon,
        input_hint=_AMAZON_HINT.format(c=category),
    )


DATASETS: dict[str, DatasetSpec] = {
    "adressa": DatasetSpec(
        name="adressa",
        description="Adressa one week (Norwegian news, January 2017): article reads",
        urls=("https://reclab.idi.ntnu.no/dataset/one_week.tar.gz",),
        filename="one_week.tar.gz",
        sha256="a68a1af8322e7fabada7a8b8a118ba0564beab7eb0433e80b3dec13cf5158e03",
        license="CC BY-NC-SA 4.0 (non-commercial, share alike, attribution).",
        citation=(
            "Jon Atle Gulla, Lemei Zhang, Peng Liu, Özlem Özgöbek, Xiaomeng Su. The Adressa dataset for news "
            "recommendation. WI 2017."
        ),
        split=(95.0, 0.5, 4.5),
        reader=read_adressa,
        input_hint="one_week.tar.gz, or extracted day files (one_week/20170101 ...); --insecure if TLS fails",
    ),
    "amazon-book": _amazon(
        "amazon-book",
        "Books",
        "Books",
        "2ff13d9763d38118851d8f8a4ab530f958e08ad48aa764c2d9bbe16ec227a3b8",
        (95.0, 0.5, 4.5),
    ),
    "amazon-electronics": _amazon(
        "amazon-electronics",
        "Electronics",
        "Electronics",
        "1ce756643c0abed1b0d8a0738e67fc2510f3086d2bd52567942e18582dd01791",
        (90.0, 1.0, 9.0),
    ),
    "amazon-grocery": _amazon(
        "amazon-grocery",
        "Grocery_and_Gourmet_Food",
        "Grocery and Gourmet Food",
        "9652d130382a3f1fcbfffffcaf3b8474e2649be034fbea8b0281b78424b65d40",
        (80.0, 2.0, 18.0),
    ),
    "yelp": DatasetSpec(
        name="yelp",
        description="Yelp Open Dataset: reviews as implicit visits",
        urls=(),
        filename=None,
        sha256=None,
        license=(
            "Yelp Dataset User Agreement: non-commercial research; redistribution forbidden, so no download "
            "URL: get it from yelp.com/dataset (or Kaggle) yourself."
        ),
        citation="Yelp Open Dataset, https://www.yelp.com/dataset (cite the release you used).",
        split=(95.0, 0.5, 4.5),
        reader=read_yelp,
        input_hint="yelp_academic_dataset_review.json, yelp_dataset.tar or a zip holding either (yelp.com/dataset)",
    ),
    "movielens": DatasetSpec(
        name="movielens",
        description="MovieLens latest-small (GroupLens): ratings as implicit views",
        # "latest" is regenerated from time to time, so no stable sha256 is published (GroupLens lists md5s).
        urls=("https://files.grouplens.org/datasets/movielens/ml-latest-small.zip",),
        filename="ml-latest-small.zip",
        sha256=None,
        license=(
            "GroupLens usage licence: research, non-commercial, acknowledge; redistribution only under the same "
            "terms (keep its README next to it). ml-100k may not be redistributed."
        ),
        citation=(
            "F. Maxwell Harper, Joseph A. Konstan. The MovieLens Datasets: History and Context. ACM TiiS 5(4), 2015."
        ),
        split=(80.0, 2.0, 18.0),
        reader=read_movielens,
        input_hint="ratings.csv (userId,movieId,rating,timestamp), u.data (tab-separated), or the GroupLens zip",
    ),
    "csv": DatasetSpec(
        name="csv",
        description="Any delimited file(s): --columns user,item,ts (header names or 0-based positions)",
        urls=(),
        filename=None,
        sha256=None,
        license="Your own data: its terms are yours to check.",
        citation="Cite the source of your data.",
        split=(80.0, 2.0, 18.0),
        reader=read_csv,
        input_hint="one or more delimited files (.csv, .tsv, or .gz) with --columns user,item,ts and --name NAME",
    ),
    "synthetic": DatasetSpec(
        name="synthetic",
        description="Seeded synthetic stream with drifting user interests, power-law popularity and new items",
        urls=(),
        filename=None,
        sha256=None,
        license="Generated by melonbench (MIT); no third-party terms.",
        citation="melonbench's synthetic drifting stream; its generative model is in docs/synthetic.md.",
        split=(80.0, 2.0, 18.0),
        reader=_read_synthetic,
        input_hint="nothing: it is generated (sizes and seed via --set key=value)",
        generated=True,
    ),
}


def get_dataset(name: str) -> DatasetSpec:
    """The registry entry for ``name``; an unknown name raises UnknownNameError suggesting the closest one."""
    return lookup("dataset", name, DATASETS)
