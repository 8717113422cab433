"""Fetching one painting's image: size variant with fallback, host allow-list, placeholder detection,
size cap, complete-body check (a truncated body is retried) and content sniffing."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from fnmatch import fnmatch
from urllib.parse import urlparse

import requests
import urllib3
from PIL import Image, UnidentifiedImageError

from lowshot.http import HttpClient, HttpError

log = logging.getLogger(__name__)

PLACEHOLDER_NAMES = ("FRAME-600x480.jpg", "ARTIST-480x600.jpg", "lazy-load-placeholder.png")
FORMAT_EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}


class ImageRejected(Exception):
    """The image cannot be kept; `reason` is a short label counted in the summary."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class FetchedImage:
    url: str
    data: bytes
    ext: str
    width: int
    height: int


def sized_url(original: str, size: str) -> str:
    """WikiArt's size variant: `<original>!Large.jpg`; the suffix keeps the original's extension and case."""
    original = original.split("!", 1)[0]
    if size == "original":
        return original
    ext = original.rsplit(".", 1)[-1] if "." in original.rsplit("/", 1)[-1] else "jpg"
    return f"{original}!{size}.{ext}"


def host_allowed(url: str, base_url: str, patterns: list[str]) -> bool:
    """True if `url`'s host is the base URL's host or matches one of the glob patterns."""
    host = (urlparse(url).hostname or "").lower()
    if not host:
        return False
    return host == (urlparse(base_url).hostname or "").lower() or any(fnmatch(host, p.lower()) for p in patterns)


def is_placeholder(url: str) -> bool:
    path = urlparse(url).path
    return any(path.endswith(name) for name in PLACEHOLDER_NAMES)


def sniff_image(data: bytes) -> tuple[str, int, int]:
    """(extension, width, height) of image bytes, judged by content; raises ImageRejected."""
    if not data:
        raise ImageRejected("empty_body")
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, size = img.format, img.size
            img.load()  # decodes fully: a truncated file fails here
    except (UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise ImageRejected("not_an_image", str(e)) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageRejected("undecodable", str(e)) from None
    if fmt not in FORMAT_EXT:
        raise ImageRejected("unsupported_format", str(fmt))
    return FORMAT_EXT[fmt], size[0], size[1]


def _read_body(client: HttpClient, url: str, max_bytes: int) -> bytes:
    """The whole body of `url`; a body that ends before its Content-Length is fetched again."""
    attempt = 0
    while True:
        resp = client.get(url, stream=True)
        try:
            if is_placeholder(resp.url):  # a redirect to the placeholder
                raise ImageRejected("placeholder", resp.url)
            expected = resp.headers.get("Content-Length")
            if expected is not None and int(expected) > max_bytes:
                raise ImageRejected("too_large", f"{int(expected)} bytes")
            chunks, total = [], 0
            for chunk in resp.iter_content(1 << 16):
                total += len(chunk)
                if total > max_bytes:
                    raise ImageRejected("too_large", f"over {max_bytes} bytes")
                chunks.append(chunk)
            data = b"".join(chunks)
            if expected is None or len(data) == int(expected):
                return data
            reason = "truncated_body"
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError, urllib3.exceptions.HTTPError):
            reason = "truncated_body"
        finally:
            resp.close()
        attempt += 1
        if attempt > client.retry.retries:
            raise ImageRejected("truncated_body", f"{url} after {client.retry.retries} retries")
        client.stats[f"retry/{reason}"] += 1
        client.retry.sleep_before_retry(attempt, None)


def fetch_image(client: HttpClient, original: str, *, size: str, max_bytes: int) -> FetchedImage:
    """Download the `size` variant of an image (falling back to the original on 404) and check it."""
    urls = [sized_url(original, size)]
    if size != "original":
        urls.append(sized_url(original, "original"))
    for i, url in enumerate(urls):
        try:
            data = _read_body(client, url, max_bytes)
        except HttpError as e:
            if e.status == 404 and i + 1 < len(urls):
                log.debug("%s: 404, falling back to the original", url)
                continue
            raise ImageRejected("http_error", str(e)) from None
        ext, width, height = sniff_image(data)
        return FetchedImage(url, data, ext, width, height)
    raise AssertionError("unreachable")
