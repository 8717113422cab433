"""fetch sources: resumable, verified downloads from a local HTTP server; safe zip extraction; local folders."""

from __future__ import annotations

import hashlib
import io
import re
import stat
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lowshot.http import HttpClient, RetryPolicy
from lowshot.sources import FetchError, copy_local, download, materialize, safe_extract

# ------------------------------------------------------------------ fixtures


def image_bytes(seed: int, fmt: str = "PNG", size: int = 96) -> bytes:
    """A small noise image: noise keeps the zip large enough (tens of KB) to cut mid-body."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def make_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


# A CycleGAN-style monet2photo.zip: Monet in trainA/testA, photos in trainB/testB, plus clutter.
MONET2PHOTO = {
    "monet2photo/trainA/00001.png": image_bytes(1),
    "monet2photo/trainA/00002.jpg": image_bytes(2, "JPEG"),
    "monet2photo/testA/00001.png": image_bytes(3),  # same name as a trainA file
    "monet2photo/trainB/p1.PNG": image_bytes(4),
    "monet2photo/testB/p2.webp": image_bytes(5, "WEBP"),
    "monet2photo/README.txt": b"not an image",
    "monet2photo/trainA/.DS_Store": b"\0\0",
    "__MACOSX/monet2photo/trainA/._00001.png": b"resource fork",
}


class _State:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[dict[str, str]] = []  # headers of each GET, in order
        self.cut_after: int | None = None  # drop the connection after this many body bytes ...
        self.cut_every = False  # ... on the first request only, or on every request
        self.ignore_range = False  # answer 200 with the whole file even to a Range request


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        state: _State = self.server.state  # type: ignore[attr-defined]
        state.requests.append(dict(self.headers))
        body = state.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start, m = 0, re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if m and not state.ignore_range:
            start = int(m[1])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        cut = state.cut_after if (state.cut_every or len(state.requests) == 1) else None
        if cut is not None and cut < len(payload):
            self.wfile.write(payload[:cut])  # promise Content-Length, then hang up
            self.close_connection = True
            return
        self.wfile.write(payload)


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.state = _State()  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    httpd.state.base = f"http://127.0.0.1:{httpd.server_address[1]}"  # type: ignore[attr-defined]
    yield httpd.state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def client() -> HttpClient:
    return HttpClient(timeout_s=5.0, retry=RetryPolicy(retries=3, backoff_s=0.0, sleep=lambda s: None))


@pytest.fixture
def zip_bytes(tmp_path) -> bytes:
    return make_zip(tmp_path / "monet2photo.zip", MONET2PHOTO).read_bytes()


def serve(server: _State, data: bytes, path: str = "/monet2photo.zip") -> str:
    server.files[path] = data
    return server.base + path  # type: ignore[attr-defined]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------ download


def test_download_cut_mid_body_resumes_with_range(server, client, zip_bytes, tmp_path):
    url = serve(server, zip_bytes)
    server.cut_after = len(zip_bytes) // 2
    dest = download(url, tmp_path / "dl" / "a.zip", client=client, sha256=sha(zip_bytes), progress=False)

    assert dest.read_bytes() == zip_bytes
    assert not dest.with_suffix(".zip.part").exists()
    assert len(server.requests) == 2 and "Range" not in server.requests[0]
    resumed_at = int(re.fullmatch(r"bytes=(\d+)-", server.requests[1]["Range"])[1])
    assert 0 < resumed_at <= server.cut_after  # kept what had arrived, did not start over
    assert client.stats["retry/body_connection_error"] == 1


def test_download_resumes_existing_part_file(server, client, zip_bytes, tmp_path):
    url = serve(server, zip_bytes)
    dest = tmp_path / "a.zip"
    Path(str(dest) + ".part").write_bytes(zip_bytes[:1000])
    download(url, dest, client=client, sha256=sha(zip_bytes), progress=False)

    assert [r.get("Range") for r in server.requests] == ["bytes=1000-"]
    assert dest.read_bytes() == zip_bytes


def test_download_starts_over_when_server_ignores_range(server, client, zip_bytes, tmp_path):
    url = serve(server, zip_bytes)
    server.ignore_range = True
    dest = tmp_path / "a.zip"
    Path(str(dest) + ".part").write_bytes(zip_bytes[:1000])
    download(url, dest, client=client, progress=False)
    assert dest.read_bytes() == zip_bytes  # the 200 body replaced the part, not appended to it


@pytest.mark.parametrize("extra, ranged", [(b"", [True]), (b"stale tail", [True, False])])
def test_download_handles_416(server, client, zip_bytes, tmp_path, extra, ranged):
    # A part that already holds the whole file is complete; a longer (stale) one is discarded.
    url = serve(server, zip_bytes)
    dest = tmp_path / "a.zip"
    Path(str(dest) + ".part").write_bytes(zip_bytes + extra)
    download(url, dest, client=client, sha256=sha(zip_bytes), progress=False)
    assert dest.read_bytes() == zip_bytes
    assert ["Range" in r for r in server.requests] == ranged


def test_download_stale_part_with_wrong_bytes_is_redone_from_scratch(server, client, zip_bytes, tmp_path):
    url = serve(server, zip_bytes)
    dest = tmp_path / "a.zip"
    Path(str(dest) + ".part").write_bytes(b"x" * 1000)  # e.g. left by an older version of the file
    download(url, dest, client=client, sha256=sha(zip_bytes), progress=False)
    assert dest.read_bytes() == zip_bytes
    assert [r.get("Range") for r in server.requests] == ["bytes=1000-", None]


def test_download_gives_up_after_retries_and_keeps_part(server, zip_bytes, tmp_path):
    url = serve(server, zip_bytes)
    server.cut_after, server.cut_every = len(zip_bytes) // 8, True
    client = HttpClient(timeout_s=5.0, retry=RetryPolicy(retries=1, backoff_s=0.0, sleep=lambda s: None))
    dest = tmp_path / "a.zip"
    with pytest.raises(FetchError, match="connection dropped 2 times"):
        download(url, dest, client=client, progress=False)
    assert len(server.requests) == 2
    assert not dest.exists()
    part = Path(str(dest) + ".part")
    assert zip_bytes.startswith(part.read_bytes())  # a rerun resumes from here


def test_download_bad_sha256_is_clear_and_leaves_no_file(server, client, zip_bytes, tmp_path):
    url = serve(server, zip_bytes)
    dest = tmp_path / "dl" / "a.zip"
    wrong = "0" * 64
    with pytest.raises(FetchError) as err:
        download(url, dest, client=client, sha256=wrong, progress=False)
    message = str(err.value)
    assert url in message and wrong in message and sha(zip_bytes) in message
    assert list(dest.parent.iterdir()) == []  # neither a.zip nor a.zip.part


def test_download_skips_verified_file_and_replaces_corrupt_one(server, client, zip_bytes, tmp_path):
    url = serve(server, zip_bytes)
    dest = tmp_path / "a.zip"
    dest.write_bytes(zip_bytes)
    download(url, dest, client=client, sha256=sha(zip_bytes), progress=False)
    assert server.requests == []

    dest.write_bytes(b"corrupt")
    download(url, dest, client=client, sha256=sha(zip_bytes), progress=False)
    assert len(server.requests) == 1 and dest.read_bytes() == zip_bytes


def test_download_missing_url_is_fetch_error(server, client, tmp_path):
    with pytest.raises(FetchError, match="404"):
        download(server.base + "/nope.zip", tmp_path / "a.zip", client=client, progress=False)


# ------------------------------------------------------------------ zip extraction


def test_subdirs_select_images_with_collision_free_names(tmp_path):
    zip_path = make_zip(tmp_path / "m.zip", MONET2PHOTO)
    out = tmp_path / "monet"
    written = safe_extract(zip_path, out, subdirs=["monet2photo/trainA", "monet2photo/testA"])

    assert written == sorted(out.iterdir())
    contents = sorted(p.read_bytes() for p in written)
    expected = [MONET2PHOTO[f"monet2photo/{k}"] for k in ("trainA/00001.png", "trainA/00002.jpg", "testA/00001.png")]
    assert contents == sorted(expected)  # three images, the clashing 00001.png kept twice
    assert {p.name for p in written} >= {"00002.jpg"}  # a unique name is kept as is


def test_extract_without_subdirs_takes_every_image_and_skips_clutter(tmp_path):
    zip_path = make_zip(tmp_path / "m.zip", MONET2PHOTO)
    written = safe_extract(zip_path, tmp_path / "all", subdirs=None)
    assert len(written) == 5
    assert {p.suffix for p in written} == {".png", ".jpg", ".PNG", ".webp"}


def test_unknown_subdir_is_named(tmp_path):
    zip_path = make_zip(tmp_path / "m.zip", MONET2PHOTO)
    with pytest.raises(FetchError, match="trainC"):
        safe_extract(zip_path, tmp_path / "out", subdirs=["monet2photo/trainC"])


@pytest.mark.parametrize("bad_name", ["../evil.png", "ok/../../evil.png", "/tmp/evil.png"])
def test_path_escaping_entry_is_refused_and_nothing_escapes(tmp_path, bad_name):
    zip_path = make_zip(tmp_path / "m.zip", {"a/good.png": image_bytes(1), bad_name: image_bytes(2)})
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(FetchError, match=re.escape(bad_name)):
        safe_extract(zip_path, work / "out", subdirs=None)
    assert list(work.iterdir()) == []  # no output folder, no leftover temp folder
    assert not (tmp_path / "evil.png").exists() and not Path("/tmp/evil.png").exists()


def test_symlink_entry_is_refused(tmp_path):
    zip_path = tmp_path / "m.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("a/good.png", image_bytes(1))
        link = zipfile.ZipInfo("a/link.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(FetchError, match="symlink.*a/link.png"):
        safe_extract(zip_path, tmp_path / "out", subdirs=None)
    assert not (tmp_path / "out").exists()


def test_extract_replaces_output_whole_and_failure_keeps_old(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.png").write_bytes(b"old")
    bad = make_zip(tmp_path / "bad.zip", {"../evil.png": image_bytes(1)})
    with pytest.raises(FetchError):
        safe_extract(bad, out, subdirs=None)
    assert [p.name for p in out.iterdir()] == ["stale.png"]

    good = make_zip(tmp_path / "good.zip", {"x/new.png": image_bytes(2)})
    safe_extract(good, out, subdirs=None)
    assert [p.name for p in out.iterdir()] == ["new.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.zip", "good.zip", "out"]


def test_not_a_zip_is_clear_error(tmp_path):
    fake = tmp_path / "page.zip"
    fake.write_text("<html>login required</html>")
    with pytest.raises(FetchError, match="page.zip is not a readable zip"):
        safe_extract(fake, tmp_path / "out", subdirs=None)


# ------------------------------------------------------------------ local folders and dispatch


@pytest.fixture
def local_tree(tmp_path) -> Path:
    root = tmp_path / "src"
    files = {
        "a/x.jpg": image_bytes(1, "JPEG"),
        "b/x.jpg": image_bytes(2, "JPEG"),
        "c/deep/y.PNG": image_bytes(3),
        "notes.txt": b"hello",
        ".hidden.jpg": image_bytes(4, "JPEG"),
        ".cache/z.jpg": image_bytes(5, "JPEG"),
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_copy_local_takes_images_recursively(local_tree, tmp_path):
    written = copy_local(local_tree, tmp_path / "out")
    assert len(written) == 3 and len({p.name for p in written}) == 3
    assert sorted(p.read_bytes() for p in written) == sorted(
        (local_tree / n).read_bytes() for n in ("a/x.jpg", "b/x.jpg", "c/deep/y.PNG")
    )
    only_a = copy_local(local_tree, tmp_path / "out_a", subdirs=["a"])
    assert [p.name for p in only_a] == ["x.jpg"]


def test_copy_local_missing_folder_is_named(tmp_path):
    with pytest.raises(FetchError, match="no_such_dir"):
        copy_local(tmp_path / "no_such_dir", tmp_path / "out")


def test_materialize_downloads_shared_url_once(server, client, zip_bytes, tmp_path):
    url = serve(server, zip_bytes)
    cache = tmp_path / "cache"
    monet = materialize(url, tmp_path / "monet", cache_dir=cache, client=client, sha256=sha(zip_bytes),
                        subdirs=["monet2photo/trainA", "monet2photo/testA"])
    photos = materialize(url, tmp_path / "photos", cache_dir=cache, client=client, sha256=sha(zip_bytes),
                         subdirs=["monet2photo/trainB", "monet2photo/testB"])
    assert len(server.requests) == 1
    assert len(monet) == 3
    assert sorted(p.read_bytes() for p in photos) == sorted(
        [MONET2PHOTO["monet2photo/trainB/p1.PNG"], MONET2PHOTO["monet2photo/testB/p2.webp"]]
    )
    assert [p.name for p in cache.iterdir()] == [f"{sha(url.encode())}.zip"]


def test_materialize_local_path_and_file_url(local_tree, client, tmp_path):
    by_path = materialize(str(local_tree), tmp_path / "o1", cache_dir=tmp_path / "c", client=client)
    by_url = materialize(local_tree.as_uri(), tmp_path / "o2", cache_dir=tmp_path / "c", client=client)
    assert len(by_path) == 3 and [p.name for p in by_path] == [p.name for p in by_url]


def test_materialize_unsupported_source_is_named(client, tmp_path):
    with pytest.raises(FetchError, match="ftp://example.org/x.zip"):
        materialize("ftp://example.org/x.zip", tmp_path / "o", cache_dir=tmp_path / "c", client=client)
