"""Readers: real files from ../shared/data, hand-written Adressa and Yelp records in their archive layouts, bad input.

Expected values for the real files were computed with the shell and Python's ``csv``/``json`` modules, not with
polars, e.g. ``tail -n +2 train.csv | wc -l`` and ``sum(int(r[2]) for r in csv.reader(...))``.
"""

from __future__ import annotations

import calendar
import gzip
import io
import json
import tarfile
import zipfile
from pathlib import Path

import polars as pl
import pytest

from melonbench.core.config import PrepareOptions
from melonbench.core.errors import DataError, UnknownNameError
from melonbench.data.archives import Member
from melonbench.data.readers import ADRESSA, collect_checked, read_adressa, read_amazon, read_movielens, read_yelp
from melonbench.data.readers_csv import read_csv
from melonbench.data.readers_json import spill
from melonbench.data.registry import DATASETS, ReadContext, get_dataset

SCHEMA_TEXT_IDS = {"user": pl.String, "item": pl.String, "ts": pl.Int64}


def make_ctx(tmp_path: Path, **options) -> ReadContext:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return ReadContext(workdir=work, options=PrepareOptions(**options))


def rows(lf: pl.LazyFrame) -> list[tuple]:
    return collect_checked(lf).rows()


# ---------------------------------------------------------------- registry


def test_registry_entries_are_complete():
    assert set(DATASETS) == {
        "adressa", "amazon-book", "amazon-electronics", "amazon-grocery", "yelp", "movielens", "csv", "synthetic"
    }  # fmt: skip
    for name, spec in DATASETS.items():
        assert spec.name == name
        assert abs(sum(spec.split) - 100) < 1e-9
        assert spec.description and spec.license and spec.citation and spec.input_hint
        assert bool(spec.urls) == bool(spec.filename)
        assert spec.sha256 is None or len(spec.sha256) == 64
    # the paper's Table: Adressa, Book and Yelp 95:0.5:4.5, Electronics 90:1:9, Grocery 80:2:18
    assert DATASETS["amazon-electronics"].split == (90.0, 1.0, 9.0)
    assert DATASETS["amazon-grocery"].split == (80.0, 2.0, 18.0)
    assert DATASETS["yelp"].urls == ()  # its terms forbid redistribution


def test_unknown_dataset_suggests_the_closest():
    with pytest.raises(UnknownNameError, match="Did you mean 'amazon-book'"):
        get_dataset("amazon-books")


# ---------------------------------------------------------------- real files


def test_grocery_rechorus_csvs_through_the_csv_reader(shared_data, tmp_path):
    folder = shared_data / "amazon-grocery-5core-2014-rechorus"
    paths = [folder / "train.csv", folder / "dev.csv", folder / "test.csv"]
    df = collect_checked(read_csv(paths, make_ctx(tmp_path, columns="user_id,item_id,time")))
    assert dict(df.schema) == SCHEMA_TEXT_IDS
    # wc -l minus headers: 121,892 + 14,681 + 14,681; sum/uniques with Python's csv module
    assert df.height == 151_254
    assert df["ts"].sum() == 203_120_366_083_200
    assert (df["user"].n_unique(), df["item"].n_unique()) == (14_681, 8_713)
    assert df.row(0) == ("2177", "3", 965_779_200)  # head -2 train.csv
    assert df.row(121_892) == ("6185", "691", 1_149_206_400)  # head -2 dev.csv: inputs concatenated in order
    assert df.row(-1) == ("12353", "8674", 1_406_073_600)  # tail -1 test.csv (CRLF stripped)


def test_movielens_ratings_csv(shared_data, tmp_path):
    df = collect_checked(read_movielens([shared_data / "ml-latest-small" / "ratings.csv"], make_ctx(tmp_path)))
    assert dict(df.schema) == {"user": pl.Int64, "item": pl.Int64, "ts": pl.Int64}
    assert df.height == 100_836  # wc -l minus the header
    assert df["ts"].sum() == 121_602_779_665_887
    assert (df["user"].n_unique(), df["item"].n_unique()) == (610, 9_724)
    assert df.row(0) == (1, 1, 964_982_703)
    assert df.row(-1) == (610, 170_875, 1_493_846_415)


def test_movielens_zip_from_grouplens(shared_data, tmp_path):
    # The registry downloads ml-latest-small.zip: ratings.csv sits beside movies.csv, tags.csv, ... in a folder.
    archive = tmp_path / "ml-latest-small.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ml-latest-small/movies.csv", "movieId,title,genres\r\n1,Toy Story (1995),Animation\r\n")
        zf.write(shared_data / "ml-latest-small" / "ratings.csv", "ml-latest-small/ratings.csv")
    df = collect_checked(read_movielens([archive], make_ctx(tmp_path)))
    assert df.height == 100_836 and df.row(0) == (1, 1, 964_982_703)


def test_amazon_5core_json_is_detected(shared_data, tmp_path):
    path = shared_data / "amazon2018-all-beauty-5core" / "All_Beauty_5.json.gz"
    df = collect_checked(read_amazon([path], make_ctx(tmp_path)))
    assert dict(df.schema) == SCHEMA_TEXT_IDS
    assert df.height == 5_269  # zcat | wc -l
    assert df["ts"].sum() == 7_595_293_449_600
    assert (df["user"].n_unique(), df["item"].n_unique()) == (991, 85)
    assert df.row(0) == ("A3CIUOJXQ5VDQ2", "B0000530HU", 1_472_688_000)
    assert df.row(-1) == ("AUX122XW8ONG6", "B01DLR9IDI", 1_534_982_400)


def test_amazon_ratings_only_csv(shared_data, tmp_path):
    path = shared_data / "amazon2018-magazine-ratings-sample" / "Magazine_Subscriptions.csv"
    df = collect_checked(read_amazon([path], make_ctx(tmp_path)))
    assert dict(df.schema) == SCHEMA_TEXT_IDS
    assert df.height == 546  # wc -l (no header)
    assert df["ts"].sum() == 741_241_411_200
    assert (df["user"].n_unique(), df["item"].n_unique()) == (535, 22)
    assert df.row(0) == ("AH2IFH762VY5U", "B00005N7P0", 1_005_177_600)  # item,user,rating,timestamp swapped
    assert df.row(-1) == ("A20QVNZNN32I4U", "B019CNKT74", 1_459_382_400)


def test_amazon_inputs_of_both_kinds_are_concatenated_in_order(shared_data, tmp_path):
    csv_path = shared_data / "amazon2018-magazine-ratings-sample" / "Magazine_Subscriptions.csv"
    json_path = shared_data / "amazon2018-all-beauty-5core" / "All_Beauty_5.json.gz"
    df = collect_checked(read_amazon([csv_path, json_path], make_ctx(tmp_path)))
    assert df.height == 546 + 5_269
    assert df.row(545)[0] == "A20QVNZNN32I4U" and df.row(546)[0] == "A3CIUOJXQ5VDQ2"


# ---------------------------------------------------------------- Adressa


def adressa_event(user: str, time: int, article: str | None) -> bytes:
    event = {
        "eventId": 1_380_000_000 + time % 1000,
        "city": "trondheim",
        "activeTime": 16,
        "url": f"http://adressa.no/nyheter/{article or ''}",
        "referrerHostClass": "direct",
        "region": "sor-trondelag",
        "time": time,
        "userId": user,
        "sessionStart": False,
        "deviceType": "Mobile",
        "sessionStop": False,
        "country": "no",
        "os": "Android",
        "profile": [{"item": "adressa.no", "groups": [{"count": 1, "group": "site", "weight": 1.0}]}],
    }
    if article is not None:  # front pages and other non-article events have no id, title, category
        event |= {
            "id": article,
            "title": "Nyhet",
            "category1": "nyheter|trondheim",
            "publishtime": "2016-12-31T17:13:45.000Z",
            "keywords": "trondheim",
            "author": ["a"],
        }
    return json.dumps(event).encode() + b"\n"


A1, A2 = "7b4d34f3e7e45e7e8b5c0a1bc2b8e1f7c5fd7d2a", "0c6e1b4b9b5d0f4e7e2a5a7f4e3c1b6d9a8f2e11"
DAY1 = (
    adressa_event("cx:u1:1", 1_483_225_204, A1)
    + adressa_event("cx:u2:2", 1_483_225_300, None)
    + adressa_event("cx:u2:2", 1_483_225_310, A2)
)
DAY2 = adressa_event("cx:u1:1", 1_483_311_700, A2) + adressa_event("cx:u3:3", 1_483_311_800, None)
ADRESSA_ROWS = [("cx:u1:1", A1, 1_483_225_204), ("cx:u2:2", A2, 1_483_225_310), ("cx:u1:1", A2, 1_483_311_700)]


def tar_gz(path: Path, members: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_adressa_one_week_tar_gz(tmp_path):
    path = tar_gz(tmp_path / "one_week.tar.gz", {"one_week/20170101": DAY1, "one_week/20170102": DAY2})
    lf = read_adressa([path], make_ctx(tmp_path))
    assert lf.collect_schema() == pl.Schema(SCHEMA_TEXT_IDS)
    assert rows(lf) == ADRESSA_ROWS  # the two events without an article id are dropped


def test_adressa_extracted_day_files(tmp_path):
    (tmp_path / "20170101").write_bytes(DAY1)
    (tmp_path / "20170102").write_bytes(DAY2)
    assert rows(read_adressa([tmp_path / "20170101", tmp_path / "20170102"], make_ctx(tmp_path))) == ADRESSA_ROWS


def test_json_is_spilled_in_many_small_chunks(tmp_path):
    data = (DAY1 + DAY2) * 20
    files = spill(Member("x", io.BufferedReader(io.BytesIO(data))), ADRESSA, tmp_path, chunk_bytes=500)
    assert len(files) > 10  # one event is ~600 bytes: each chunk is cut at the end of the line it reaches
    assert pl.scan_parquet(files).collect().rows() == ADRESSA_ROWS * 20


# ---------------------------------------------------------------- Yelp


def yelp_review(n: int, user: str, business: str, date: str) -> bytes:
    review = {"review_id": f"r{n:021d}", "user_id": user, "business_id": business, "stars": 4.0, "useful": 1,
              "funny": 0, "cool": 0, "text": "Great tacos,\nfriendly staff.", "date": date}  # fmt: skip
    return json.dumps(review).encode() + b"\n"


REVIEWS = yelp_review(1, "u-AAA", "b-XYZ", "2018-07-07 22:09:11") + yelp_review(
    2, "u-BBB", "b-XYZ", "2012-01-03 15:28:18"
)
# calendar.timegm reads the date as UTC, independently of polars
YELP_ROWS = [
    ("u-AAA", "b-XYZ", calendar.timegm((2018, 7, 7, 22, 9, 11))),
    ("u-BBB", "b-XYZ", calendar.timegm((2012, 1, 3, 15, 28, 18))),
]
BUSINESS = b'{"business_id": "b-XYZ", "name": "Tacos", "stars": 4.5}\n'


def zip_of(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_yelp_review_json(tmp_path):
    (tmp_path / "yelp_academic_dataset_review.json").write_bytes(REVIEWS)
    assert YELP_ROWS[0][2] == 1_531_001_351  # date -u -d '2018-07-07 22:09:11' +%s
    assert rows(read_yelp([tmp_path / "yelp_academic_dataset_review.json"], make_ctx(tmp_path))) == YELP_ROWS


def test_yelp_archive_layouts(tmp_path):
    jsons = {"yelp_academic_dataset_business.json": BUSINESS, "yelp_academic_dataset_review.json": REVIEWS}
    tar = tar_gz(tmp_path / "yelp_dataset.tar", jsons, "w")
    official = zip_of(
        tmp_path / "Yelp-JSON.zip",
        {"Yelp JSON/yelp_dataset.tar": tar.read_bytes(), "Yelp JSON/Dataset_User_Agreement.pdf": b"%PDF-1.5"},
    )
    kaggle = zip_of(tmp_path / "archive.zip", jsons)
    tgz = tar_gz(tmp_path / "dataset.tgz", {"dataset/business.json": BUSINESS, "dataset/review.json": REVIEWS})
    kaggle_2018 = zip_of(tmp_path / "archive2018.zip", {"dataset.tgz": tgz.read_bytes()})
    for path in (tar, official, kaggle, kaggle_2018):
        assert rows(read_yelp([path], make_ctx(tmp_path))) == YELP_ROWS, path.name


def test_yelp_archive_without_reviews(tmp_path):
    path = zip_of(tmp_path / "archive.zip", {"yelp_academic_dataset_business.json": BUSINESS})
    with pytest.raises(DataError, match="archive.zip: no yelp_academic_dataset_review.json or review.json inside"):
        read_yelp([path], make_ctx(tmp_path))


def test_yelp_bad_date(tmp_path):
    path = tmp_path / "review.json"
    path.write_bytes(REVIEWS + yelp_review(3, "u-C", "b-Q", "07/07/2018"))
    with pytest.raises(DataError, match="review.json: cannot parse date '07/07/2018'"):
        read_yelp([path], make_ctx(tmp_path))


# ---------------------------------------------------------------- generic csv and its detection


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode())
    return path


@pytest.mark.parametrize(
    ("text", "columns", "params"),
    [
        ("u,i,r,t\r\na,x,5,10\r\nb,y,4,20\r\n", "u,i,t", ()),  # names, CRLF
        ("\ufeffu,i,t\r\na,x,10\r\n\r\nb,y,20\r\n\r\n", "u,i,t", ()),  # byte-order mark, blank lines
        ("a,x,5,10\r\nb,y,4,20\r\n", "0,1,3", ()),  # positions, no header (ts field is an integer)
        ("user;item;when\na;x;10\nb;y;20\n", "0,1,2", ()),  # positions with a header, ';' detected
        ("a\tx\t10\nb\ty\t20\n", "0,1,2", ()),  # tab detected
        ("10|a|x\n20|b|y\n", "1,2,0", (("delimiter", "pipe"), ("header", "false"))),
    ],
)
def test_csv_layouts(tmp_path, text, columns, params):
    ctx = make_ctx(tmp_path, columns=columns, params=params)
    assert rows(read_csv([write(tmp_path / "in.csv", text)], ctx)) == [("a", "x", 10), ("b", "y", 20)]


def test_csv_header_override_keeps_a_non_numeric_first_row_as_data(tmp_path):
    path = write(tmp_path / "in.csv", "a,x,10\nb,y,20\n")
    ctx = make_ctx(tmp_path, columns="0,1,2", params=(("header", "true"),))
    assert rows(read_csv([path], ctx)) == [("b", "y", 20)]


def test_csv_gzip_input(tmp_path):
    path = tmp_path / "in.csv.gz"
    path.write_bytes(gzip.compress(b"u,i,t\r\na,x,10\r\n"))
    assert rows(read_csv([path], make_ctx(tmp_path, columns="u,i,t"))) == [("a", "x", 10)]


def test_movielens_u_data(tmp_path):
    path = write(tmp_path / "u.data", "196\t242\t3\t881250949\r\n186\t302\t3\t891717742\r\n")
    assert rows(read_movielens([path], make_ctx(tmp_path))) == [(196, 242, 881_250_949), (186, 302, 891_717_742)]


def test_amazon_plain_json_with_bom_and_crlf_and_csv_with_header(tmp_path):
    record = {"overall": 4.0, "verified": True, "reviewerID": "A1", "asin": "B2", "unixReviewTime": 1_400_000_000}
    js = write(tmp_path / "Grocery_5.json", "\ufeff" + json.dumps(record) + "\r\n\r\n")
    csv = write(tmp_path / "Grocery.csv", "item,user,rating,timestamp\r\nB3,A4,5.0,1500000000\r\n")
    expected = [("A1", "B2", 1_400_000_000), ("A4", "B3", 1_500_000_000)]
    assert rows(read_amazon([js, csv], make_ctx(tmp_path))) == expected


# ---------------------------------------------------------------- bad input, one test each


def test_missing_csv_column(tmp_path):
    path = write(tmp_path / "in.csv", "user_id,item_id,time\n1,2,3\n")
    message = r"in.csv: no column 'timestamp' in the header \(found: user_id, item_id, time\)"
    with pytest.raises(DataError, match=message):
        read_csv([path], make_ctx(tmp_path, columns="user_id,item_id,timestamp"))


def test_missing_json_field(tmp_path):
    path = write(tmp_path / "Books_5.json", json.dumps({"reviewerID": "A1", "unixReviewTime": 1}) + "\n")
    with pytest.raises(DataError, match="Books_5.json: the first record has no field 'asin'"):
        read_amazon([path], make_ctx(tmp_path))


def test_column_position_out_of_range(tmp_path):
    path = write(tmp_path / "in.csv", "1,2,3\n")
    with pytest.raises(DataError, match="column position 5 is out of range"):
        read_csv([path], make_ctx(tmp_path, columns="0,1,5"))


def test_non_numeric_timestamp_surfaces_on_collect(tmp_path):
    path = write(tmp_path / "in.csv", "u,i,t\r\na,x,10\r\nb,y,yesterday\r\n")
    lf = read_csv([path], make_ctx(tmp_path, columns="u,i,t"))  # only the header is read here
    with pytest.raises(DataError, match=r"in.csv: .*failed in column 'ts'.*yesterday.*integer unix seconds"):
        collect_checked(lf, str(path))


def test_non_numeric_timestamp_in_json_is_named(tmp_path):
    record = {"reviewerID": "A1", "asin": "B2", "unixReviewTime": "09 1, 2016"}
    path = write(tmp_path / "Books_5.json", json.dumps(record) + "\n")
    message = "Books_5.json: timestamp field 'unixReviewTime' holds a non-integer value '09 1, 2016'"
    with pytest.raises(DataError, match=message):
        read_amazon([path], make_ctx(tmp_path))


def test_malformed_json_line_after_a_good_first_record(tmp_path):
    path = tmp_path / "20170101"
    path.write_bytes(DAY1 + b'{"userId": "cx:9", "id": "a", "time": 1\n' + DAY2)  # the middle line lacks its '}'
    with pytest.raises(DataError, match="20170101: not valid JSON lines"):
        read_adressa([path], make_ctx(tmp_path))


@pytest.mark.parametrize("content", [b"", b"\r\n\r\n"])
def test_empty_csv(tmp_path, content):
    path = tmp_path / "in.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match="in.csv is empty"):
        read_csv([path], make_ctx(tmp_path, columns="0,1,2"))


def test_header_without_rows(tmp_path):
    path = write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\r\n")
    with pytest.raises(DataError, match="ratings.csv has a header but no rows"):
        read_movielens([path], make_ctx(tmp_path))


def test_empty_gzipped_json(tmp_path):
    path = tmp_path / "Books_5.json.gz"
    path.write_bytes(gzip.compress(b""))
    with pytest.raises(DataError, match="Books_5.json.gz is empty"):
        read_amazon([path], make_ctx(tmp_path))


def test_adressa_archive_without_day_files(tmp_path):
    path = tar_gz(tmp_path / "one_week.tar.gz", {"one_week/README": b"about"})
    with pytest.raises(DataError, match=r"one_week.tar.gz: no day file \(like one_week/20170101\) inside"):
        read_adressa([path], make_ctx(tmp_path))


def test_adressa_week_without_article_events(tmp_path):
    path = tar_gz(tmp_path / "one_week.tar.gz", {"one_week/20170101": adressa_event("cx:u", 1, None)})
    with pytest.raises(DataError, match="no records with a user, an item and a time"):
        read_adressa([path], make_ctx(tmp_path))


def test_truncated_archive_through_a_reader(tmp_path):
    week = {"one_week/20170101": DAY1 * 400, "one_week/20170102": DAY2 * 400}
    data = tar_gz(tmp_path / "full.tar.gz", week).read_bytes()
    cut = tmp_path / "one_week.tar.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="one_week.tar.gz: looks truncated or corrupt"):
        read_adressa([cut], make_ctx(tmp_path))


@pytest.mark.parametrize(
    ("columns", "params", "message"),
    [
        (None, (), "needs --columns"),
        ("u,1,t", (), "mixes names and positions"),
        ("u,i", (), "exactly three entries"),
        ("u,i,t", (("sep", ","),), "unknown --set key 'sep'"),
        ("u,i,t", (("header", "false"),), "gives names but header=false"),
        ("u,i,t", (("header", "maybe"),), "expects true or false"),
    ],
)
def test_csv_option_errors(tmp_path, columns, params, message):
    path = write(tmp_path / "in.csv", "u,i,t\na,x,1\n")
    with pytest.raises(DataError, match=message):
        read_csv([path], make_ctx(tmp_path, columns=columns, params=params))


def test_missing_input_file(tmp_path):
    with pytest.raises(DataError, match="input file not found"):
        read_amazon([tmp_path / "Books.csv"], make_ctx(tmp_path))
    with pytest.raises(DataError, match="needs at least one input file"):
        read_yelp([], make_ctx(tmp_path))
