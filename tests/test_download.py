"""Downloads from a local HTTP server on 127.0.0.1: verification, resume, Range-ignoring servers, mirrors."""

from __future__ import annotations

import hashlib
import io
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from rich.console import Console

from melonbench.core.errors import ChecksumError, MelonbenchError
from melonbench.data.download import fetch
from melonbench.data.registry import DATASETS

PAYLOAD = random.Random(7).randbytes(300_000)
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()  # hashlib over the bytes served, not through fetch


@dataclass
class Server:
    """A tiny file server; ``log`` keeps (path, Range header, status) of every request."""

    base: str
    files: dict[str, bytes]
    honour_range: bool = True
    log: list[tuple[str, str | None, int]] = field(default_factory=list)


def make_handler(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path == "/slow":  # silent for longer than the read timeout, then hang up
                time.sleep(0.5)
                return
            body = server.files.get(self.path)
            requested = self.headers.get("Range")
            if body is None:
                server.log.append((self.path, requested, 404))
                self.send_error(404)
                return
            start = int(requested.removeprefix("bytes=").rstrip("-")) if requested and server.honour_range else None
            if start is not None and start >= len(body):
                server.log.append((self.path, requested, 416))
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206 if start is not None else 200
            chunk = body[start or 0 :]
            server.log.append((self.path, requested, status))
            self.send_response(status)
            if start is not None:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(chunk)))
            self.end_headers()
            self.wfile.write(chunk)

        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

    return Handler


@pytest.fixture
def server(monkeypatch) -> Iterator[Server]:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    state = Server(base="", files={"/data/Books.csv": PAYLOAD})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_full_download_verified(server, tmp_path):
    path = fetch([f"{server.base}/data/Books.csv"], tmp_path, sha256=PAYLOAD_SHA)
    assert path == tmp_path / "Books.csv"
    assert path.read_bytes() == PAYLOAD
    assert not (tmp_path / "Books.csv.part").exists()
    assert server.log == [("/data/Books.csv", None, 200)]


def test_resume_from_partial_file(server, tmp_path):
    (tmp_path / "Books.csv.part").write_bytes(PAYLOAD[:123_456])
    path = fetch([f"{server.base}/data/Books.csv"], tmp_path, sha256=PAYLOAD_SHA.upper())
    assert path.read_bytes() == PAYLOAD
    assert server.log == [("/data/Books.csv", "bytes=123456-", 206)]  # only the missing tail was sent


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.honour_range = False
    (tmp_path / "Books.csv.part").write_bytes(b"stale bytes from another file")
    path = fetch([f"{server.base}/data/Books.csv"], tmp_path, sha256=PAYLOAD_SHA)
    assert path.read_bytes() == PAYLOAD
    assert server.log == [("/data/Books.csv", "bytes=29-", 200)]


def test_complete_partial_file_gets_416_and_is_accepted(server, tmp_path):
    (tmp_path / "Books.csv.part").write_bytes(PAYLOAD)
    assert fetch([f"{server.base}/data/Books.csv"], tmp_path, sha256=PAYLOAD_SHA).read_bytes() == PAYLOAD
    assert server.log == [("/data/Books.csv", "bytes=300000-", 416)]


def test_checksum_mismatch(server, tmp_path):
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as err:
        fetch([f"{server.base}/data/Books.csv"], tmp_path, sha256=wrong)
    message = str(err.value)
    assert wrong in message and PAYLOAD_SHA in message and f"--sha256 {PAYLOAD_SHA}" in message
    assert not (tmp_path / "Books.csv").exists()
    # accepting the file with --sha256 needs no second download: the .part is whole (416), then verified
    assert fetch([f"{server.base}/data/Books.csv"], tmp_path, sha256=PAYLOAD_SHA).read_bytes() == PAYLOAD
    assert [status for _, _, status in server.log] == [200, 416]


def test_mirror_fallback_after_404(server, tmp_path):
    urls = [f"{server.base}/gone/Books.csv", f"{server.base}/data/Books.csv"]
    assert fetch(urls, tmp_path, sha256=PAYLOAD_SHA).read_bytes() == PAYLOAD
    assert [(p, s) for p, _, s in server.log] == [("/gone/Books.csv", 404), ("/data/Books.csv", 200)]


def test_every_mirror_failing_lists_each_failure(server, tmp_path):
    urls = [f"{server.base}/a/Books.csv", f"{server.base}/b/Books.csv"]
    with pytest.raises(MelonbenchError, match=r"any mirror \(.*/a/Books.csv: HTTP 404.*/b/Books.csv: HTTP 404") as err:
        fetch(urls, tmp_path, sha256=PAYLOAD_SHA)
    assert "--input PATH" in str(err.value)
    assert not isinstance(err.value, ChecksumError)


def test_read_timeout_moves_on_to_the_next_mirror(server, tmp_path):
    urls = [f"{server.base}/slow", f"{server.base}/data/Books.csv"]
    path = fetch(urls, tmp_path, sha256=PAYLOAD_SHA, filename="Books.csv", timeout=(5.0, 0.1))
    assert path.read_bytes() == PAYLOAD
    with pytest.raises(MelonbenchError, match="/slow: timed out"):
        fetch([f"{server.base}/slow"], tmp_path / "other", timeout=(5.0, 0.1))


def test_complete_file_is_reused_without_network(server, tmp_path):
    fetch([f"{server.base}/data/Books.csv"], tmp_path, sha256=PAYLOAD_SHA)
    assert fetch(["http://127.0.0.1:9/unreachable/Books.csv"], tmp_path, sha256=PAYLOAD_SHA).read_bytes() == PAYLOAD
    assert len(server.log) == 1


def test_existing_file_with_other_checksum_is_not_replaced(tmp_path):
    (tmp_path / "Books.csv").write_bytes(b"something else")
    with pytest.raises(ChecksumError, match="delete it to download again"):
        fetch(["http://127.0.0.1:9/Books.csv"], tmp_path, sha256=PAYLOAD_SHA)
    assert (tmp_path / "Books.csv").read_bytes() == b"something else"


def test_without_published_checksum_the_computed_one_is_recorded_and_warned_once(server, tmp_path):
    out = io.StringIO()
    console = Console(file=out, width=400)
    url = f"{server.base}/data/Books.csv"
    fetch([url], tmp_path, console=console)
    assert (tmp_path / "Books.csv.sha256").read_text() == f"{PAYLOAD_SHA}  Books.csv\n"
    assert out.getvalue().count("no published sha256") == 1
    fetch([url], tmp_path, console=console)  # reused, checked against the record, no second warning
    assert out.getvalue().count("no published sha256") == 1
    (tmp_path / "Books.csv").write_bytes(b"changed on disk")
    with pytest.raises(ChecksumError, match=PAYLOAD_SHA):
        fetch([url], tmp_path, console=console)


def test_dataset_spec_gives_urls_name_and_checksum(tmp_path):
    # A complete file already in place: the registry's name and sha256 are used, and nothing is fetched.
    spec = DATASETS["amazon-grocery"]
    (tmp_path / "Grocery_and_Gourmet_Food.csv").write_bytes(b"not the real file")
    with pytest.raises(ChecksumError, match=spec.sha256):
        fetch(spec, tmp_path)


def test_malformed_expected_checksum(tmp_path):
    with pytest.raises(MelonbenchError, match="64 hexadecimal digits"):
        fetch(["http://127.0.0.1:9/Books.csv"], tmp_path, sha256="abc123")


def test_nothing_to_download(tmp_path):
    with pytest.raises(MelonbenchError, match="no URL is known"):
        fetch(DATASETS["yelp"], tmp_path)
