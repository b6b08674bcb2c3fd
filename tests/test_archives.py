"""Safe archive walking: nesting, member selection, refusals, and corrupt or truncated input."""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from melonbench.core.errors import DataError
from melonbench.data.archives import iter_members, sniff

DAY1 = b'{"userId": "cx:1", "id": "a1", "time": 1483225200}\n'
DAY2 = b'{"userId": "cx:2", "id": "a2", "time": 1483311600}\n'


def tar_bytes(members: dict[str, bytes], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def read_all(path: Path, patterns: tuple[str, ...] = ("[0-9]*",), **kw) -> list[tuple[str, bytes]]:
    return [(m.label, m.stream.read()) for m in iter_members(path, patterns, **kw)]


def test_sniff_recognises_magic_numbers():
    assert sniff(gzip.compress(b"x")) == "gzip"
    assert sniff(zip_bytes({"a": b"x"})) == "zip"
    assert sniff(tar_bytes({"a": b"x"})) == "tar"
    assert sniff(b'{"a": 1}\n') == "plain"


def test_tar_gz_members_stream_in_archive_order(tmp_path):
    # Adressa layout: a folder member, then day files; the README does not match the day-file pattern.
    data = tar_bytes({"one_week/20170102": DAY2, "one_week/README": b"about", "one_week/20170101": DAY1}, "w:gz")
    path = write(tmp_path / "one_week.tar.gz", data)
    assert read_all(path) == [
        ("one_week.tar.gz:one_week/20170102", DAY2),
        ("one_week.tar.gz:one_week/20170101", DAY1),
    ]


def test_plain_and_gzip_files_are_their_own_member(tmp_path):
    plain = write(tmp_path / "20170101", DAY1)
    gz = write(tmp_path / "All_Beauty_5.json.gz", gzip.compress(DAY2))
    assert read_all(plain, ()) == [("20170101", DAY1)]
    assert read_all(gz, ()) == [("All_Beauty_5.json.gz", DAY2)]


def test_zip_holding_a_tar_holding_the_json(tmp_path):
    # The Yelp layout: Yelp-JSON.zip -> yelp_dataset.tar -> yelp_academic_dataset_review.json (+ other files).
    inner = tar_bytes({"yelp_academic_dataset_business.json": b"{}\n", "yelp_academic_dataset_review.json": DAY1})
    outer = zip_bytes({"Yelp JSON/yelp_dataset.tar": inner, "Dataset_User_Agreement.pdf": b"%PDF"})
    path = write(tmp_path / "Yelp-JSON.zip", outer)
    got = read_all(path, ("yelp_academic_dataset_review.json",))
    assert got == [("Yelp-JSON.zip:Yelp JSON/yelp_dataset.tar:yelp_academic_dataset_review.json", DAY1)]


def test_zip_holding_a_tgz_and_a_gz_member(tmp_path):
    inner = tar_bytes({"dataset/review.json": DAY1}, "w:gz")
    outer = zip_bytes({"dataset.tgz": inner, "extra/review.json.gz": gzip.compress(DAY2)})
    path = write(tmp_path / "archive.zip", outer)
    got = read_all(path, ("review.json",))
    assert got == [("archive.zip:dataset.tgz:dataset/review.json", DAY1), ("archive.zip:extra/review.json.gz", DAY2)]


def test_macos_junk_is_skipped(tmp_path):
    junk = {"__MACOSX/._review.json": b"junk", "._review.json": b"junk"}
    path = write(tmp_path / "a.zip", zip_bytes(junk | {"review.json": DAY1}))
    assert read_all(path, ("review.json",)) == [("a.zip:review.json", DAY1)]


@pytest.mark.parametrize("name", ["/etc/20170101", "one_week/../../20170101"])
def test_tar_member_with_unsafe_path_is_refused(tmp_path, name):
    path = write(tmp_path / "evil.tar.gz", tar_bytes({name: DAY1}, "w:gz"))
    with pytest.raises(DataError, match="unsafe member path") as err:
        read_all(path)
    assert name in str(err.value)


@pytest.mark.parametrize("name", ["/abs/review.json", "../review.json"])
def test_zip_member_with_unsafe_path_is_refused(tmp_path, name):
    path = write(tmp_path / "evil.zip", zip_bytes({name: DAY1}))
    with pytest.raises(DataError, match="unsafe member path") as err:
        read_all(path, ("review.json",))
    assert name in str(err.value)


def test_tar_links_are_refused(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("one_week/20170101")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    path = write(tmp_path / "links.tar", buf.getvalue())
    with pytest.raises(DataError, match="link, device"):
        read_all(path)


def test_truncated_gzip(tmp_path):
    data = gzip.compress(DAY1 * 2000)
    path = write(tmp_path / "Books_5.json.gz", data[: len(data) // 2])
    with pytest.raises(DataError, match=r"Books_5\.json\.gz: looks truncated or corrupt"):
        read_all(path, ())


def test_truncated_tar_gz(tmp_path):
    data = tar_bytes({"one_week/20170101": DAY1 * 5000, "one_week/20170102": DAY2 * 5000}, "w:gz")
    path = write(tmp_path / "one_week.tar.gz", data[: len(data) // 2])
    with pytest.raises(DataError, match="one_week.tar.gz: looks truncated or corrupt"):
        read_all(path)


def test_corrupt_tar(tmp_path):
    # A valid first header, then the second header's bytes overwritten: its checksum no longer matches.
    data = bytearray(tar_bytes({"one_week/20170101": DAY1, "one_week/20170102": DAY2}))
    data[1024:1100] = b"\xff" * 76
    path = write(tmp_path / "bad.tar", bytes(data))
    with pytest.raises(DataError, match="bad.tar: looks truncated or corrupt"):
        read_all(path)


def test_corrupt_zip(tmp_path):
    data = zip_bytes({"review.json": DAY1 * 100})
    path = write(tmp_path / "cut.zip", data[:-30])  # the end-of-central-directory record is gone
    with pytest.raises(DataError, match="cut.zip: looks truncated or corrupt"):
        read_all(path, ("review.json",))


def test_zip_with_damaged_member_data(tmp_path):
    data = bytearray(zip_bytes({"review.json": DAY1 * 100}))
    data[40:60] = b"\x00" * 20  # inside the deflated data of the only member
    path = write(tmp_path / "flip.zip", bytes(data))
    with pytest.raises(DataError, match="flip.zip: looks truncated or corrupt"):
        read_all(path, ("review.json",))


def test_size_cap(tmp_path):
    path = write(tmp_path / "big.json.gz", gzip.compress(b"0" * 10_000))
    with pytest.raises(DataError, match="decompression bomb"):
        read_all(path, (), max_bytes=4096)
    assert read_all(path, (), max_bytes=10_000) == [("big.json.gz", b"0" * 10_000)]


def test_zip_inside_a_tar_is_refused_with_advice(tmp_path):
    path = write(tmp_path / "outer.tar", tar_bytes({"inner.zip": zip_bytes({"review.json": DAY1})}))
    with pytest.raises(DataError, match="extract it first"):
        read_all(path, ("review.json",))


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="input file not found"):
        read_all(tmp_path / "nope.tar.gz")


@pytest.mark.parametrize("cut", [1024, 1300])
def test_truncated_plain_tar(tmp_path, cut):
    # 1024 cuts exactly after the first member (512-byte header + 512-byte block), where tarfile alone would
    # stop silently as if the archive had ended; 1300 cuts inside the second member's data.
    data = tar_bytes({"one_week/20170101": DAY1, "one_week/20170102": DAY2 * 20, "one_week/20170103": DAY1})
    path = write(tmp_path / "cut.tar", data[:cut])
    with pytest.raises(DataError, match="cut.tar: looks truncated or corrupt"):
        read_all(path)
