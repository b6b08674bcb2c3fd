"""Loading prepared datasets, and the ``datasets`` command that lists them and prints a card."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import polars as pl
import pytest
from rich.console import Console
from typer.testing import CliRunner

from melonbench.cli import app
from melonbench.core.config import PrepareOptions
from melonbench.core.errors import DataError, NotPreparedError
from melonbench.data.catalog import print_card, print_catalog
from melonbench.data.prepare import prepare_dataset
from melonbench.data.store import load_dataset

MAGAZINE = "amazon2018-magazine-ratings-sample/Magazine_Subscriptions.csv"


def _console() -> Console:
    return Console(record=True, width=250, file=io.StringIO())


def _prepare_magazine(shared: Path, name: str = "magazine") -> None:
    # --core 2: the 546-row sample has no user with more than 3 ratings (see test_prepare.py)
    options = PrepareOptions(inputs=(shared / MAGAZINE,), core=2, name=name)
    prepare_dataset("amazon-grocery", options, console=_console())


def test_load_dataset(shared_data: Path) -> None:
    _prepare_magazine(shared_data)
    data = load_dataset("magazine")
    # counts by hand in the shell: Counter over the 546 rows (item,user,...,ts), keep users and items with >= 2
    # ratings -> 19 interactions of 8 users and 12 items; 19 * 0.80 = 15.2 -> 15, 19 * 0.82 = 15.58 -> 16
    assert (data.n_users, data.n_items, data.interactions.height) == (8, 12, 19)
    assert data.bounds == (0, 15, 16, 19)
    assert [data.part(p).height for p in ("pretrain", "validation", "test")] == [15, 1, 3]
    assert data.part("validation")["split"].cast(pl.String).to_list() == ["validation"]
    assert data.interactions.schema["split"] == pl.Enum(["pretrain", "validation", "test"])
    assert data.card["name"] == "magazine" and data.card["dataset"] == "amazon-grocery"

    # the mapping tables turn ids back into the raw ids: the first stream row is the earliest (then first-listed)
    # rating among the survivors, found here with plain Python
    with open(shared_data / MAGAZINE, newline="") as f:
        rows = [(r[1], r[0], int(r[3])) for r in csv.reader(f)]
    users = {u for u, _, _ in rows if sum(1 for v, _, _ in rows if v == u) >= 2}
    items = {i for _, i, _ in rows if sum(1 for _, j, _ in rows if j == i) >= 2}
    first = min((r for r in rows if r[0] in users and r[1] in items), key=lambda r: r[2])
    user_map = pl.read_parquet(data.path / "users.parquet")
    item_map = pl.read_parquet(data.path / "items.parquet")
    row = data.interactions.row(0)
    assert user_map.filter(pl.col("user") == row[0])["raw"].item() == first[0]
    assert item_map.filter(pl.col("item") == row[1])["raw"].item() == first[1]
    assert row[2] == first[2]


def test_not_prepared_names_the_command() -> None:
    with pytest.raises(
        NotPreparedError, match=r"dataset 'movielens' is not prepared: run `melonbench prepare movielens`"
    ):
        load_dataset("movielens")


def test_unknown_name_without_a_close_match_reads_as_sentences() -> None:
    with pytest.raises(NotPreparedError) as caught:
        load_dataset("zzzz")
    assert str(caught.value) == (
        "dataset 'zzzz' is not prepared. Prepare one with `melonbench prepare NAME` "
        "(a csv file: `melonbench prepare csv --name NAME`)."
    )


def test_unknown_name_suggests_a_prepared_one(shared_data: Path) -> None:
    _prepare_magazine(shared_data, name="magazine-sample")
    with pytest.raises(NotPreparedError, match="Did you mean 'magazine-sample'"):
        load_dataset("magazine-sampel")
    with pytest.raises(NotPreparedError, match="Did you mean 'amazon-book'"):
        load_dataset("amazon-books")
    with pytest.raises(NotPreparedError):
        load_dataset("../datasets")


def test_damaged_folder_is_reported(shared_data: Path) -> None:
    _prepare_magazine(shared_data)
    (load_dataset("magazine").path / "interactions.parquet").unlink()
    with pytest.raises(DataError, match="dataset 'magazine' is damaged"):
        load_dataset("magazine")


def test_catalog_lists_registry_and_prepared(shared_data: Path) -> None:
    _prepare_magazine(shared_data, name="my-mags")
    console = _console()
    print_catalog(console)
    text = console.export_text()
    for name in (
        "adressa",
        "amazon-book",
        "amazon-electronics",
        "amazon-grocery",
        "yelp",
        "movielens",
        "csv",
        "synthetic",
    ):
        assert name in text
    line = next(line for line in text.splitlines() if "my-mags" in line)
    assert "8 users, 12 items, 19 interactions" in line and "prepared from 'amazon-grocery'" in line


def test_card_table_and_cli_show(shared_data: Path) -> None:
    _prepare_magazine(shared_data)
    console = _console()
    print_card("magazine", console)
    text = console.export_text()
    assert "8 / 12" in text and "19 (density" in text
    # 19 / (8 * 12) = 0.19792 -> 19.792%
    assert "19.792%" in text
    assert "pretrain" in text and "15 interactions" in text
    assert "546 raw -> 546 de-duplicated -> 19 after k-core" in text

    result = CliRunner().invoke(app, ["datasets", "--show", "magazine"])
    assert result.exit_code == 0, result.output
    assert "dataset card: magazine" in result.output
    result = CliRunner().invoke(app, ["datasets", "--show", "nope"])
    assert isinstance(result.exception, NotPreparedError)
