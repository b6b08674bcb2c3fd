"""``melonbench prepare`` end to end on the real files in ../shared/data.

Expected counts were computed independently of polars, with a plain-Python pipeline (``csv`` / ``json`` /
``gzip`` readers, ``sorted`` by time (stable), a ``set`` for de-duplication, ``collections.Counter`` for the
k-core, ``math.floor(n * cumulative_ratio + 0.5)`` for the split), run once in the shell; the same pipeline is
kept below as ``_reference`` and the Grocery and MovieLens streams are compared to it row by row.
"""

from __future__ import annotations

import csv
import io
import math
import zipfile
from collections import Counter
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest
from rich.console import Console
from typer.testing import CliRunner

from melonbench.cli import app
from melonbench.core.config import PrepareOptions
from melonbench.core.errors import ChecksumError, DataError, MelonbenchError, UnknownNameError
from melonbench.data import card as card_module
from melonbench.data import prepare as prepare_module
from melonbench.data.prepare import prepare_dataset
from melonbench.store import paths

GROCERY_FILES = ("train.csv", "dev.csv", "test.csv")


def _grocery(shared: Path, **kw: object) -> PrepareOptions:
    folder = shared / "amazon-grocery-5core-2014-rechorus"
    return PrepareOptions(
        inputs=tuple(folder / f for f in GROCERY_FILES),
        columns="user_id,item_id,time",
        name="grocery-2014",
        **kw,  # type: ignore[arg-type]
    )


def _movielens(shared: Path, **kw: object) -> PrepareOptions:
    return PrepareOptions(inputs=(shared / "ml-latest-small" / "ratings.csv",), **kw)  # type: ignore[arg-type]


def _magazine(shared: Path, **kw: object) -> PrepareOptions:
    path = shared / "amazon2018-magazine-ratings-sample" / "Magazine_Subscriptions.csv"
    return PrepareOptions(inputs=(path,), **{"name": "magazine", **kw})  # type: ignore[arg-type]


def _quiet() -> Console:
    return Console(record=True, width=300, file=io.StringIO())


# (registry name, options, expected): users, items, interactions, per-split counts, cold users per online split
# as (users, their interactions), from the plain-Python pipeline described in the module docstring.
CASES = {
    # 20-core (single) of the 2014 Grocery 5-core: 151,254 rows, no repeated pairs.
    "grocery": ("csv", _grocery, {}, (1342, 1480, 33326, (26661, 666, 5999), ((2, 11), (30, 323)))),
    # the same with the iterative k-core: 12 passes to the fixpoint, much smaller
    "grocery-iterative": (
        "csv",
        _grocery,
        {"core_mode": "iterative"},
        (585, 343, 18696, (14957, 374, 3365), ((0, 0), (0, 0))),
    ),
    # MovieLens latest-small: every user already has >= 20 ratings; 1,297 movies have >= 20
    "movielens": ("movielens", _movielens, {}, (610, 1297, 67898, (54318, 1358, 12222), ((13, 937), (95, 11639)))),
    # All_Beauty 5-core: 5,269 reviews, 4,092 distinct (user, item) pairs; it is a 5-core file, so no user reaches
    # 20 (and at 10 one user is left): --core 5
    "beauty": (
        "amazon-grocery",
        lambda s, **kw: PrepareOptions(
            inputs=(s / "amazon2018-all-beauty-5core" / "All_Beauty_5.json.gz",), core=5, name="beauty", **kw
        ),
        {},
        (180, 47, 907, (726, 18, 163), ((4, 17), (20, 94))),
    ),
    # the 546-row Magazine sample: nobody has even 4 ratings in it, so --core 2
    "magazine": ("amazon-grocery", _magazine, {"core": 2}, (8, 12, 19, (15, 1, 3), ((0, 0), (1, 2)))),
}


def _check_split_invariants(frame: pl.DataFrame, ratios: list[float]) -> None:
    parts = {p: frame.filter(pl.col("split") == p) for p in ("pretrain", "validation", "test")}
    # pre-train ∪ validation ∪ test = all: every row has exactly one label and the parts are contiguous blocks
    assert frame["split"].null_count() == 0
    assert sum(p.height for p in parts.values()) == frame.height
    assert frame["split"].to_physical().diff().drop_nulls().min() >= 0
    # every online timestamp is >= every pre-train timestamp; the stream is in time order
    assert parts["validation"]["ts"].min() >= parts["pretrain"]["ts"].max()
    assert parts["test"]["ts"].min() >= parts["validation"]["ts"].max()
    assert frame["ts"].is_sorted()
    for part, ratio in zip(parts.values(), ratios, strict=True):
        assert abs(part.height - frame.height * ratio / sum(ratios)) <= 1


@pytest.mark.parametrize("case", list(CASES))
def test_real_dataset_counts(case: str, shared_data: Path) -> None:
    dataset, make, extra, (users, items, n, splits, cold) = CASES[case]
    info = prepare_dataset(dataset, make(shared_data, **extra), console=_quiet())
    card = info.card
    assert (card["users"], card["items"], card["interactions"]) == (users, items, n)
    assert tuple(card["splits"][p]["interactions"] for p in ("pretrain", "validation", "test")) == splits
    assert (
        tuple(
            (card["cold"]["users"][p]["users"], card["cold"]["users"][p]["interactions"])
            for p in ("validation", "test")
        )
        == cold
    )
    frame = pl.read_parquet(info.path / "interactions.parquet")
    assert frame.schema == pl.Schema(
        {"user": pl.Int32, "item": pl.Int32, "ts": pl.Int64, "split": pl.Enum(["pretrain", "validation", "test"])}
    )
    assert frame["user"].max() == users - 1 and frame["item"].max() == items - 1
    _check_split_invariants(frame, card["ratios"])
    assert card["outputs"]["interactions.parquet"] == _sha256(info.path / "interactions.parquet")
    assert [i["sha256"] for i in card["inputs"]] == [_sha256(Path(i["path"])) for i in card["inputs"]]


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _reference(rows: list[tuple[str, str, int]], k: int, ratios: tuple[float, ...]) -> list[tuple[str, str, int, str]]:
    """The plain-Python pipeline: stable time order, first of each pair, single k-core, split by rounding."""
    rows = sorted(rows, key=lambda r: r[2])
    seen: set[tuple[str, str]] = set()
    unique = [r for r in rows if (r[0], r[1]) not in seen and not seen.add((r[0], r[1]))]  # type: ignore[func-returns-value]
    users, items = Counter(r[0] for r in unique), Counter(r[1] for r in unique)
    kept = [r for r in unique if users[r[0]] >= k and items[r[1]] >= k]
    cut1 = math.floor(len(kept) * ratios[0] / sum(ratios) + 0.5)
    cut2 = math.floor(len(kept) * (ratios[0] + ratios[1]) / sum(ratios) + 0.5)
    labels = ["pretrain"] * cut1 + ["validation"] * (cut2 - cut1) + ["test"] * (len(kept) - cut2)
    return [(*r, label) for r, label in zip(kept, labels, strict=True)]


def _decoded(path: Path) -> list[tuple[str, str, int, str]]:
    """The prepared stream with ids mapped back through users.parquet / items.parquet, as strings."""
    frame = pl.read_parquet(path / "interactions.parquet")
    users = pl.read_parquet(path / "users.parquet").sort("user")["raw"].cast(pl.String)
    items = pl.read_parquet(path / "items.parquet").sort("item")["raw"].cast(pl.String)
    return list(
        zip(
            users.gather(frame["user"]).to_list(),
            items.gather(frame["item"]).to_list(),
            frame["ts"].to_list(),
            frame["split"].cast(pl.String).to_list(),
            strict=True,
        )
    )


def test_grocery_stream_equals_plain_python(shared_data: Path) -> None:
    rows = []
    for name in GROCERY_FILES:
        with open(shared_data / "amazon-grocery-5core-2014-rechorus" / name, newline="") as f:
            rows += [(r["user_id"], r["item_id"], int(r["time"])) for r in csv.DictReader(f)]
    info = prepare_dataset("csv", _grocery(shared_data), console=_quiet())
    assert _decoded(info.path) == _reference(rows, 20, (80, 2, 18))
    # ids follow first appearance in the stream: user 0 and item 0 are those of the first row
    frame = pl.read_parquet(info.path / "interactions.parquet")
    assert frame.row(0)[:2] == (0, 0)


def test_movielens_stream_equals_plain_python(shared_data: Path) -> None:
    with open(shared_data / "ml-latest-small" / "ratings.csv", newline="") as f:
        rows = [(r["userId"], r["movieId"], int(r["timestamp"])) for r in csv.DictReader(f)]
    info = prepare_dataset("movielens", _movielens(shared_data), console=_quiet())
    assert _decoded(info.path) == _reference(rows, 20, (80, 2, 18))


def test_second_run_does_nothing_and_force_redoes(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = prepare_dataset("movielens", _movielens(shared_data), console=_quiet())
    files = sorted(first.path.iterdir())
    stamps = {p.name: p.stat().st_mtime_ns for p in files}
    hashed: list[Path] = []
    real = card_module.sha256_file
    monkeypatch.setattr(card_module, "sha256_file", lambda p: hashed.append(p) or real(p))

    console = _quiet()
    again = prepare_dataset("movielens", _movielens(shared_data), console=console)
    assert again.reused and again.card == first.card
    assert "already prepared" in console.export_text()
    assert {p.name: p.stat().st_mtime_ns for p in sorted(first.path.iterdir())} == stamps
    assert hashed == []  # the input's digest came from the (path, size, mtime) cache

    forced = prepare_dataset("movielens", _movielens(shared_data, force=True), console=_quiet())
    assert not forced.reused
    assert (forced.path / "card.json").stat().st_mtime_ns != stamps["card.json"]
    assert forced.card["fingerprint"] == first.card["fingerprint"]


def test_changed_options_replace_and_say_what_changed(shared_data: Path) -> None:
    prepare_dataset("movielens", _movielens(shared_data), console=_quiet())
    console = _quiet()
    info = prepare_dataset("movielens", _movielens(shared_data, core=10, split=(90.0, 5.0, 5.0)), console=console)
    text = console.export_text()
    assert "core 20 -> 10" in text and "split 80:2:18 -> 90:5:5" in text
    assert not info.reused and info.card["options"]["core"] == 10 and info.card["ratios"] == [90.0, 5.0, 5.0]


@pytest.mark.parametrize("failure", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_failure_midway_leaves_nothing_partial(
    failure: BaseException, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = prepare_dataset("amazon-grocery", _magazine(shared_data, core=2), console=_quiet())

    def explode(**_: object) -> dict:
        raise failure

    monkeypatch.setattr(prepare_module, "build_card", explode)
    with pytest.raises(type(failure)):
        prepare_dataset("amazon-grocery", _magazine(shared_data, core=3), console=_quiet())
    with pytest.raises(type(failure)):
        prepare_dataset("amazon-grocery", _magazine(shared_data, core=2, name="fresh"), console=_quiet())
    # the older preparation is intact, the new name never appeared, and no staging folder is left behind
    assert sorted(p.name for p in paths.datasets_dir().iterdir()) == ["magazine"]
    assert (old.path / "card.json").read_text() and prepare_module.read_card(old.path) == old.card
    assert [p.name for p in paths.home().iterdir() if p.name.startswith("prepare-")] == []


def test_nothing_survives_the_filter(shared_data: Path) -> None:
    # by hand (plain Python Counter over the 546 rows): the most active user has 3 ratings, so at most --core 3
    with pytest.raises(DataError, match=r"nothing survives the 20-core filter.*try --core 3 or smaller"):
        prepare_dataset("amazon-grocery", _magazine(shared_data), console=_quiet())
    assert not (paths.datasets_dir() / "magazine").exists()


def test_bad_timestamp_deep_in_a_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    lines = ["u,i,t"] + [f"{n % 7},{n % 5},{1000 + n}" for n in range(5000)] + ["3,4,yesterday"]
    path.write_text("\n".join(lines) + "\n")
    options = PrepareOptions(inputs=(path,), columns="u,i,t", name="log", core=1)
    with pytest.raises(DataError) as err:
        prepare_dataset("csv", options, console=_quiet())
    assert "\n" not in str(err.value) and "log.csv" in str(err.value)
    assert not (paths.datasets_dir() / "log").exists()


def test_split_not_summing_to_100_is_refused_by_the_cli(shared_data: Path) -> None:
    ratings = shared_data / "ml-latest-small" / "ratings.csv"
    result = CliRunner().invoke(app, ["prepare", "movielens", "--input", str(ratings), "--split", "80:10:5"])
    assert isinstance(result.exception, MelonbenchError)
    assert "sum to 100" in str(result.exception)
    assert not paths.datasets_dir().exists()


def test_unknown_dataset_suggests_the_closest(shared_data: Path) -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'movielens'"):
        prepare_dataset("movielense", _movielens(shared_data), console=_quiet())
    result = CliRunner().invoke(app, ["prepare", "amazon-groceries"])
    assert isinstance(result.exception, UnknownNameError)
    assert "Did you mean 'amazon-grocery'" in str(result.exception)


def test_inputs_that_cannot_work(tmp_path: Path) -> None:
    with pytest.raises(MelonbenchError, match="needs --name"):
        prepare_dataset("csv", PrepareOptions(inputs=(tmp_path / "a.csv",)), console=_quiet())
    with pytest.raises(DataError, match="yelp has no download: give --input"):
        prepare_dataset("yelp", PrepareOptions(), console=_quiet())
    with pytest.raises(DataError, match="input file not found"):
        prepare_dataset("movielens", PrepareOptions(inputs=(tmp_path / "missing.csv",)), console=_quiet())
    with pytest.raises(MelonbenchError, match="--core must be at least 1"):
        prepare_dataset("movielens", PrepareOptions(inputs=(tmp_path / "a.csv",), core=0), console=_quiet())
    with pytest.raises(MelonbenchError, match="not a valid dataset name"):
        prepare_dataset("csv", PrepareOptions(inputs=(tmp_path / "a.csv",), name="../up"), console=_quiet())


def test_without_input_the_registry_download_is_used(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from melonbench.data import download

    calls = []
    ratings = shared_data / "ml-latest-small" / "ratings.csv"

    def fake_fetch(source: object, dest_dir: Path, sha256: str | None, insecure: bool, console: object) -> Path:
        calls.append((getattr(source, "name", None), dest_dir, sha256, insecure))
        return ratings

    monkeypatch.setattr(download, "fetch", fake_fetch)
    info = prepare_dataset("movielens", PrepareOptions(sha256="ab" * 32, insecure=True), console=_quiet())
    assert calls == [("movielens", paths.downloads_dir(), "ab" * 32, True)]
    assert info.card["inputs"][0]["path"] == str(ratings) and info.card["interactions"] == 67898


def _small_log(folder: Path, name: str = "log.csv") -> Path:
    path = folder / name
    path.write_text("u,i,t\n" + "".join(f"{n % 7},{n % 5},{1000 + n}\n" for n in range(200)))
    return path


def test_sha256_is_checked_for_form_and_against_the_input_file(tmp_path: Path) -> None:
    log = _small_log(tmp_path)
    actual = _sha256(log)
    base = PrepareOptions(inputs=(log,), columns="u,i,t", name="log", core=1)

    with pytest.raises(MelonbenchError, match=r"^--sha256 must be 64 hexadecimal digits, got 'abc'$"):
        prepare_dataset("csv", replace(base, sha256="abc"), console=_quiet())
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as err:
        prepare_dataset("csv", replace(base, sha256=wrong), console=_quiet())
    assert str(err.value) == f"{log} has sha256 {actual}, but --sha256 expects {wrong}: is it the file you meant?"
    with pytest.raises(MelonbenchError, match="--sha256 checks one input file, but 2 --input files were given"):
        prepare_dataset("csv", replace(base, inputs=(log, log), sha256=actual), console=_quiet())
    with pytest.raises(
        MelonbenchError, match="--sha256 checks a downloaded or --input file, and synthetic has neither"
    ):
        prepare_dataset("synthetic", PrepareOptions(sha256=actual), console=_quiet())
    assert not paths.datasets_dir().exists()

    info = prepare_dataset("csv", replace(base, sha256=actual.upper()), console=_quiet())  # case does not matter
    assert info.card["inputs"][0]["sha256"] == actual


def test_csv_cannot_be_stored_under_a_registered_name(tmp_path: Path) -> None:
    options = PrepareOptions(inputs=(_small_log(tmp_path),), columns="u,i,t", core=1)
    for name in ("synthetic", "movielens"):
        result = CliRunner().invoke(app, ["prepare", "csv", "--input", str(options.inputs[0]), "--name", name])
        assert isinstance(result.exception, MelonbenchError)
        assert str(result.exception) == (
            f"--name '{name}' is the name of a registered dataset; store csv data under another name"
        )
    assert not paths.datasets_dir().exists()
    assert prepare_dataset("synthetic", PrepareOptions(name="synthetic", params=SMALL), console=_quiet()).path.is_dir()


SMALL = (("users", "400"), ("items", "200"), ("days", "60"))


def test_bad_settings_fail_before_saying_anything_about_replacing(tmp_path: Path) -> None:
    old = prepare_dataset("synthetic", PrepareOptions(core=2, params=SMALL), console=_quiet())
    for params, error in (
        ((("users", "abc"),), "Synthetic setting users needs an integer, got 'abc'"),
        ((("colour", "red"),), "colour"),
    ):
        console = _quiet()
        with pytest.raises(DataError, match=error):
            prepare_dataset("synthetic", PrepareOptions(core=2, params=params), console=console)
        assert "replacing" not in console.export_text()
    assert prepare_module.read_card(old.path) == old.card
    console = _quiet()
    prepare_dataset("synthetic", PrepareOptions(core=3, params=SMALL), console=console)  # a valid change still says so
    assert "replacing the previous preparation of synthetic: core 2 -> 3" in console.export_text()


RATINGS = ["userId,movieId,rating,timestamp"] + [f"{n % 7 + 1},{n % 5 + 10},4.0,{100 + n}" for n in range(100)]
U_DATA = [f"{n % 7 + 1}\t{n % 5 + 10}\t4\t{100 + n}" for n in range(100)]


@pytest.mark.parametrize(
    ("name", "lines", "description"),
    [
        ("u.data", U_DATA, "MovieLens 100K (u.data layout)"),
        ("ratings.csv", RATINGS, "MovieLens (ratings.csv layout)"),
        ("ratings.csv", RATINGS[1:], "MovieLens (ratings.csv layout)"),  # without its header
        ("ml-25m/ratings.csv", RATINGS, "MovieLens 25M"),
        ("ml-100k/u.data", U_DATA, "MovieLens 100K"),
    ],
)
def test_the_movielens_card_names_the_release_the_input_comes_from(tmp_path, name, lines, description) -> None:
    path = tmp_path / "in" / name
    path.parent.mkdir(parents=True)
    path.write_text("\n".join(lines) + "\n")
    card = prepare_dataset("movielens", PrepareOptions(inputs=(path,), core=1), console=_quiet()).card
    assert card["description"] == f"{description} (GroupLens): ratings as implicit views"


def test_the_movielens_card_of_the_grouplens_zip_names_its_release(tmp_path, shared_data) -> None:
    archive = tmp_path / "ml-latest-small.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(shared_data / "ml-latest-small" / "ratings.csv", "ml-latest-small/ratings.csv")
    card = prepare_dataset("movielens", PrepareOptions(inputs=(archive,), core=1), console=_quiet()).card
    assert card["description"] == "MovieLens latest-small (GroupLens): ratings as implicit views"
