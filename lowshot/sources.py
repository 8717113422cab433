"""Image sources for the fetch stage: a zip downloaded over HTTP(S) or a local folder.

Downloads resume like curl's `--continue-at -` / wget's `--continue`: bytes land in
`<dest>.part`, a rerun or a dropped connection continues with `Range: bytes=N-` (RFC 9110
§14), and the file is renamed into place only when whole and verified. Zip extraction
guards against "Zip Slip" (absolute paths, `..` components, symlink entries; the warnings
in Python's `zipfile` docs), and flattens the chosen images into one folder, written
atomically.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import stat
import zipfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit
from urllib.request import url2pathname

import requests
import urllib3.exceptions
from tqdm import tqdm

from lowshot.fsutil import atomic_dir, sha256_file
from lowshot.http import HttpClient, HttpError
from lowshot.images.folder import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 14  # small: urllib3 drops the read in flight when a connection breaks

# A streamed body that stops early surfaces as one of these (urllib3 2 enforces
# Content-Length and raises ProtocolError, which requests wraps in ChunkedEncodingError).
_BODY_ERRORS = (
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.ReadTimeoutError,
)
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)", re.IGNORECASE)


class FetchError(RuntimeError):
    """A source could not be fetched: bad URL or path, failed download, bad hash, unsafe zip."""


class _Truncated(Exception):
    """The body ended before Content-Length bytes arrived."""


# --------------------------------------------------------------------------- download


def download(
    url: str,
    dest: Path,
    *,
    client: HttpClient,
    sha256: str | None = None,
    progress: bool = True,
) -> Path:
    """Download `url` to `dest`, resuming a partial `<dest>.part`, and return `dest`.

    A dropped connection is resumed with a Range request, at most `client.retry.retries`
    times. With `sha256` the file is verified (a mismatch removes it and raises FetchError);
    an existing `dest` that verifies (or any existing `dest` when no hash is given) is kept
    without a request.
    """
    dest = Path(dest)
    expected = sha256.lower() if sha256 else None
    if dest.exists():
        if expected is None or sha256_file(dest) == expected:
            log.info("%s already present, not downloading", dest)
            return dest
        log.warning("%s does not match sha256 %s; downloading it again", dest, expected)
        dest.unlink()

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(dest.suffix + ".part")
    resumed_from = part.stat().st_size if part.exists() else 0
    _fetch_to_part(url, part, client=client, progress=progress, desc=dest.name)

    if expected is not None:
        actual = sha256_file(part)
        if actual != expected and resumed_from:
            # The stale .part may come from an older version of the file: one clean retry.
            log.warning("%s: hash mismatch after resuming at byte %d; downloading afresh", url, resumed_from)
            part.unlink()
            _fetch_to_part(url, part, client=client, progress=progress, desc=dest.name)
            actual = sha256_file(part)
        if actual != expected:
            part.unlink()
            raise FetchError(
                f"sha256 mismatch for {url}: expected {expected}, got {actual} (the downloaded file was removed)"
            )
    with open(part, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(part, dest)
    log.info("downloaded %s -> %s", url, dest)
    return dest


def _fetch_to_part(url: str, part: Path, *, client: HttpClient, progress: bool, desc: str) -> None:
    """Bring `part` to the full body of `url`, resuming it and retrying dropped bodies."""
    failures = 0
    while True:
        offset = part.stat().st_size if part.exists() else 0
        # Byte ranges count bytes of the encoded body: ask for it unencoded so offsets are file offsets.
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            resp = client.get(url, headers=headers, stream=True)
        except HttpError as e:
            raise FetchError(f"download of {url} failed: {e}") from e
        with resp:
            if resp.status_code == 416:
                total = _content_range(resp)[2]
                if offset and total == offset:
                    return  # the .part already holds the whole file
                if not offset:
                    raise FetchError(f"download of {url} failed: HTTP 416 without a Range request")
                log.warning("%s: server refused to resume at byte %d; starting over", url, offset)
                part.unlink()
                continue
            if resp.status_code == 206:
                start = _content_range(resp)[0]
                if start != offset:
                    if not offset:
                        raise FetchError(f"download of {url} failed: HTTP 206 starting at byte {start}, not 0")
                    log.warning("%s: server resumed at %s instead of %d; starting over", url, start, offset)
                    part.unlink()
                    continue
                mode = "ab"
            elif resp.status_code == 200:
                if offset:
                    log.info("%s: server ignored the Range request; starting over", url)
                offset, mode = 0, "wb"
            else:
                raise FetchError(f"download of {url} failed: unexpected HTTP {resp.status_code} {resp.reason}")

            length = resp.headers.get("Content-Length")
            total = offset + int(length) if length and length.isdigit() else None
            try:
                _stream_body(resp, part, mode, offset, total, progress=progress, desc=desc)
                return
            except (_Truncated, *_BODY_ERRORS) as e:
                failures += 1
                reason = "body_truncated" if isinstance(e, _Truncated) else "body_connection_error"
                have = part.stat().st_size if part.exists() else 0
                if failures > client.retry.retries:
                    client.stats[f"failed/{reason}"] += 1
                    raise FetchError(
                        f"download of {url} failed: connection dropped {failures} times "
                        f"(last: {reason}); {have} bytes kept in {part} for the next run"
                    ) from e
                client.stats[f"retry/{reason}"] += 1
                log.warning("%s: body cut at byte %d (%s: %s); resuming (%d/%d)",
                            url, have, reason, e, failures, client.retry.retries)
        client.retry.sleep_before_retry(failures, None)


def _stream_body(
    resp: requests.Response, part: Path, mode: str, offset: int, total: int | None, *, progress: bool, desc: str
) -> None:
    """Append (mode "ab") or write (mode "wb") the body to `part`; raise _Truncated if it ends early."""
    with open(part, mode) as f, tqdm(
        total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
        desc=desc, disable=not progress, leave=False,
    ) as bar:
        received = offset
        for chunk in resp.iter_content(CHUNK_BYTES):
            f.write(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    if total is not None and received < total:
        raise _Truncated(f"{received} of {total} bytes")


def _content_range(resp: requests.Response) -> tuple[int | None, int | None, int | None]:
    """(first byte, last byte, total) from Content-Range; None where absent or '*'."""
    m = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", "").strip())
    if not m:
        return None, None, None
    first, last, total = m.groups()
    as_int = lambda s: int(s) if s and s.isdigit() else None  # noqa: E731
    return as_int(first), as_int(last), as_int(total)


# --------------------------------------------------------------------------- extraction


def safe_extract(zip_path: Path, out_dir: Path, *, subdirs: list[str] | None = None) -> list[Path]:
    """Extract the images of `zip_path` (under `subdirs` if given) flat into `out_dir`.

    Refuses the whole zip if any entry is absolute, contains `..` or is a symlink. Skips
    `__MACOSX/` and dotfiles. `out_dir` is replaced atomically; returns the written paths, sorted.
    """
    zip_path = Path(zip_path)
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise FetchError(f"{zip_path} is not a readable zip file: {e}") from e
    with zf:
        chosen: dict[PurePosixPath, zipfile.ZipInfo] = {}  # a repeated name: the last entry wins
        for info in zf.infolist():
            path = _checked_entry(zip_path, info)
            if not info.is_dir() and _is_image(path):
                chosen[path] = info
        selected = _select(list(chosen.items()), subdirs, where=str(zip_path))
        names = _flat_names([p for p, _ in selected])
        with atomic_dir(out_dir) as tmp:
            for (_, info), name in zip(selected, names):
                with zf.open(info) as src, open(tmp / name, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK_BYTES)
    log.info("extracted %d images from %s into %s", len(names), zip_path, out_dir)
    return sorted(Path(out_dir) / n for n in names)


def _checked_entry(zip_path: Path, info: zipfile.ZipInfo) -> PurePosixPath:
    """The entry's path, or FetchError if it could escape the output folder."""
    name = info.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        raise FetchError(f"{zip_path}: refusing absolute path entry {info.filename!r}")
    if ".." in parts:
        raise FetchError(f"{zip_path}: refusing entry with '..' {info.filename!r}")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise FetchError(f"{zip_path}: refusing symlink entry {info.filename!r}")
    return PurePosixPath(name)


# --------------------------------------------------------------------------- local folders


def copy_local(src_dir: Path, out_dir: Path, *, subdirs: list[str] | None = None) -> list[Path]:
    """Copy the images under `src_dir` (recursively; only under `subdirs` if given) flat into
    `out_dir`, replaced atomically. Returns the written paths, sorted."""
    src_dir = Path(src_dir)
    if not src_dir.is_dir():
        raise FetchError(f"local source folder {src_dir} does not exist or is not a folder")
    chosen = [
        (PurePosixPath(p.relative_to(src_dir).as_posix()), p)
        for p in sorted(src_dir.rglob("*"))
        if p.is_file()
    ]
    chosen = [(rel, p) for rel, p in chosen if _is_image(rel)]
    selected = _select(chosen, subdirs, where=str(src_dir))
    names = _flat_names([rel for rel, _ in selected])
    with atomic_dir(out_dir) as tmp:
        for (_, src), name in zip(selected, names):
            shutil.copyfile(src, tmp / name)
    log.info("copied %d images from %s into %s", len(names), src_dir, out_dir)
    return sorted(Path(out_dir) / n for n in names)


# --------------------------------------------------------------------------- shared helpers


def _is_image(path: PurePosixPath) -> bool:
    hidden = any(part.startswith(".") or part == "__MACOSX" for part in path.parts)
    return not hidden and path.suffix.lower() in IMAGE_EXTENSIONS


def _select(entries: list, subdirs: list[str] | None, *, where: str) -> list:
    """Keep the (path, item) pairs under `subdirs` (all when None); each subdir must hold images."""
    if not subdirs:
        if not entries:
            raise FetchError(f"{where} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        return entries
    selected, seen = [], set()
    for sub in subdirs:
        prefix = PurePosixPath(sub.strip("/")).parts
        found = [(p, item) for p, item in entries if p.parts[: len(prefix)] == prefix]
        if not found:
            folders = sorted({str(p.parent) for p, _ in entries})[:20]
            raise FetchError(f"{where}: subdir {sub!r} holds no images; folders with images: {folders}")
        selected += [(p, item) for p, item in found if p not in seen]
        seen.update(p for p, _ in found)
    return selected


def _flat_names(paths: Iterable[PurePosixPath]) -> list[str]:
    """Collision-free flat file names: the file name, prefixed by its folders where two share
    a name (compared case-insensitively), and by a short path hash if that still collides."""
    paths = list(paths)
    by_name = Counter(p.name.casefold() for p in paths)
    names = [
        p.name if by_name[p.name.casefold()] == 1 else "_".join(p.parts)
        for p in paths
    ]
    by_flat = Counter(n.casefold() for n in names)
    return [
        n if by_flat[n.casefold()] == 1
        else f"{Path(n).stem}_{hashlib.sha256(str(p).encode()).hexdigest()[:8]}{Path(n).suffix}"
        for n, p in zip(names, paths)
    ]


# --------------------------------------------------------------------------- dispatch


def materialize(
    source: str,
    out_dir: Path,
    *,
    cache_dir: Path,
    client: HttpClient,
    sha256: str | None = None,
    subdirs: list[str] | None = None,
) -> list[Path]:
    """Fill `out_dir` with the images of `source` and return their paths, sorted.

    `source` is an http(s) URL of a zip (downloaded once to `cache_dir/<sha256 of url>.zip`,
    then extracted), or a `file://` URL or path of a local folder (copied) or zip (extracted).
    """
    parts = urlsplit(source)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        cached = Path(cache_dir) / f"{hashlib.sha256(source.encode()).hexdigest()}.zip"
        return safe_extract(download(source, cached, client=client, sha256=sha256), out_dir, subdirs=subdirs)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise FetchError(f"unsupported source {source!r}: file:// URLs must name a local path")
        path = Path(url2pathname(parts.path))
    elif scheme == "" or re.fullmatch(r"[A-Za-z]", scheme):  # a plain path (or a Windows drive letter)
        path = Path(source)
    else:
        raise FetchError(
            f"unsupported source {source!r}: expected an http(s) URL of a zip, a file:// URL or a local path"
        )

    if path.is_file():
        actual = sha256_file(path) if sha256 else None
        if sha256 and actual != sha256.lower():
            raise FetchError(f"sha256 mismatch for {path}: expected {sha256.lower()}, got {actual}")
        return safe_extract(path, out_dir, subdirs=subdirs)
    if sha256:
        log.warning("sha256 is ignored for the local folder %s", path)
    return copy_local(path, out_dir, subdirs=subdirs)
