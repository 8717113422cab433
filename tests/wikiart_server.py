"""A fake WikiArt on 127.0.0.1 for the scraper's tests, speaking the formats of ../shared/WIKIART.md.

Serves the movement text-lists, the ``?json=2`` painting pages of each artist, the painting pages and
the images (original plus ``!Large`` / ``!HD`` variants), with deterministic faults declared in the
data model below. ``FakeWikiArt.expected_kept`` is the ground truth a correct scraper must reproduce.

Standalone: ``python tests/wikiart_server.py --port 8123`` serves until killed.

Data model (default corpus, page size 3; "kept" = kept with the default filters):

impressionism text-list, in order:
  claude-monet 1840-1926        excluded by name: impression-sunrise, water-lilies (both landscape)
  alfred-sisley 1839-1899       page 1 is short (2 of 3) although the count says 2 pages;
                                JSON page 1 answers 429 (Retry-After: 1) on its first request
      the-bridge-at-villeneuve    kept
      flood-at-port-marly         kept; portrait aspect; its painting page is slow (0.3 s, always)
      snow-at-louveciennes        kept; !Large and !HD 404: fall back to the original
      le-pont-d-argenteuil        kept; title with &#39; &amp; ../ / non-ASCII / no-break space; h1 title
      rue-de-marly                cityscape
  jean-baptiste-camille-corot 1796-1875  born before 1800: souvenir-de-mortefontaine
  camille-pissarro 1830-1903    also in post-impressionism (every id listed in two movements)
      boulevard-montmartre-at-night  cityscape
      hoarfrost                   kept; square
      the-hermitage-at-pontoise   kept; every image URL sends half its bytes on the first request;
                                  listed twice (last of page 1 and first of page 2)
      portrait-of-felix           portrait genre, empty year
      hoarfrost-1                 another id, image bytes identical to hoarfrost
  albert-benua 1852-1936        (Albert Benois: slug not derivable; an extra middle span in its li)
      summer-evening              kept; PNG original (.png!Large.png), wide panorama, "XIX cent."
      crimea-cliffs               not an image: HTML bytes served as .jpg with image/jpeg
      tsarskoye-selo              "Copyright protected", image = FRAME placeholder
  berthe-morisot 1841-1895
      summers-day                 kept; upper-case extension (.JPG!Large.JPG)
      the-harbor-at-lorient       public domain but its image is the FRAME placeholder
      in-the-garden               image is the lazy-load placeholder
  frank-weston-benson 1862-1951 died after 1950: summer-1909 (public domain landscape)
  ana-livramento 1950 -         living, "Fair Use", FRAME placeholder: dunes
post-impressionism text-list: camille-pissarro, paul-cezanne 1839-1906
      mont-sainte-victoire        kept; its painting page answers 503 (Retry-After: 1) once
      bibemus-quarry              image on a foreign host (http://uploads.evil.example/...)
      the-large-bathers           kept unless max_image_bytes < HUGE_BYTES; no sized variants, the
                                  original is a noisy 1400x1200 PNG of 5,042,930 bytes
"""

from __future__ import annotations

import argparse
import hashlib
import html
import io
import json
import random
import socket
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator, Literal, Sequence
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from PIL import Image, ImageDraw

License = Literal["public", "copyright", "fair-use"]
Shape = Literal["landscape", "portrait", "square", "panorama"]
# ok | large-404 (sized variants 404) | huge (no variants, ~5.8 MB noisy PNG) | truncated (first request
# to each image URL cut at half) | not-image | frame / lazy (placeholder) | foreign (other host)
ImageKind = Literal["ok", "large-404", "huge", "truncated", "not-image", "frame", "lazy", "foreign"]
PageFault = Literal["503-once", "slow"] | None

MOVEMENTS = ("impressionism", "post-impressionism")
SHAPES: dict[str, tuple[int, int]] = {  # originals; every one is bigger than its !Large in both sides
    "landscape": (1000, 750), "portrait": (720, 960), "square": (900, 900), "panorama": (1500, 560),
}
HUGE_SIZE = (1400, 1200)
SIZE_BOXES = {"Large": (750, 600), "HD": (1200, 1200)}
UNUSABLE_IMAGES = frozenset({"not-image", "frame", "lazy", "foreign"})
FRAME_PATH = "/Content/images/FRAME-600x480.jpg"
LAZY_PATH = "/Content/images/lazy-load-placeholder.png"
FOREIGN_BASE = "http://uploads.evil.example"
HUGE_BYTES_AT_LEAST = 5_000_000  # the huge PNG original is 5,042,930 bytes
SLOW_SECONDS = 0.3
RETRY_AFTER = "1"
STYLE_SLUGS = {"Impressionism": "impressionism", "Post-Impressionism": "post-impressionism"}


@dataclass(frozen=True)
class Painting:
    slug: str
    title: str  # as WikiArt's JSON returns it: HTML entities left in
    year: str
    genre: str = "landscape"
    license: License = "public"
    shape: Shape = "landscape"
    ext: str = ".jpg"
    image: ImageKind = "ok"
    same_bytes_as: str | None = None  # slug of a painting whose image bytes (all sizes) this one serves
    page_fault: PageFault = None
    title_tag: str = "h3"
    style: str = "Impressionism"
    media: str = "oil, canvas"

    @property
    def id(self) -> str:
        return hashlib.sha1(self.slug.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Artist:
    slug: str
    name: str
    born: int
    died: int | None
    movements: tuple[str, ...]
    paintings: tuple[Painting, ...]  # listing order; the same object twice = listed twice
    short_first_page: bool = False
    json_faults: tuple[tuple[int, str], ...] = ()  # (page, "429-once")
    extra_span: str | None = None


def default_artists() -> tuple[Artist, ...]:
    """The corpus described in the module docstring."""
    P = Painting
    hermitage = P("the-hermitage-at-pontoise", "The Hermitage at Pontoise", "1867", image="truncated")
    return (
        Artist("claude-monet", "Claude Monet", 1840, 1926, ("impressionism",), (
            P("impression-sunrise", "Impression, Sunrise", "1872"),
            P("water-lilies", "Water Lilies", "1920-1926", shape="square"),
        )),
        Artist("alfred-sisley", "Alfred Sisley", 1839, 1899, ("impressionism",), (
            P("the-bridge-at-villeneuve", "The Bridge at Villeneuve-la-Garenne", "1872"),
            P("flood-at-port-marly", "Flood at Port-Marly", "1876", shape="portrait", page_fault="slow"),
            P("snow-at-louveciennes", "Snow at Louveciennes", "1878", image="large-404"),
            P("le-pont-d-argenteuil", "Le Pont d&#39;Argenteuil &amp; ../Bords de Seine /\u00a0Étude",
              "1885-1890", title_tag="h1"),
            P("rue-de-marly", "Rue de Marly", "1876", genre="cityscape"),
        ), short_first_page=True, json_faults=((1, "429-once"),)),
        Artist("jean-baptiste-camille-corot", "Camille Corot", 1796, 1875, ("impressionism",), (
            P("souvenir-de-mortefontaine", "Souvenir de Mortefontaine", "1864"),
        )),
        Artist("camille-pissarro", "Camille Pissarro", 1830, 1903, MOVEMENTS, (
            P("boulevard-montmartre-at-night", "Boulevard Montmartre at Night", "1897", genre="cityscape"),
            P("hoarfrost", "Hoarfrost", "1873", shape="square"),
            hermitage,
            hermitage,
            P("portrait-of-felix", "Portrait of Félix", "", genre="portrait", shape="portrait", title_tag="h1"),
            P("hoarfrost-1", "Hoarfrost (1)", "1873", shape="square", same_bytes_as="hoarfrost"),
        )),
        Artist("albert-benua", "Albert Benois", 1852, 1936, ("impressionism",), (
            P("summer-evening", "Summer Evening", "XIX cent.", shape="panorama", ext=".png",
              media="watercolor, paper"),
            P("crimea-cliffs", "Crimea. Cliffs", "1890", image="not-image"),
            P("tsarskoye-selo", "Tsarskoye Selo", "1910", license="copyright", image="frame"),
        ), extra_span="Russian"),
        Artist("berthe-morisot", "Berthe Morisot", 1841, 1895, ("impressionism",), (
            P("summers-day", "Summer&#39;s Day", "1879", ext=".JPG"),
            P("the-harbor-at-lorient", "The Harbor at Lorient", "1869", image="frame"),
            P("in-the-garden", "In the Garden", "1883", image="lazy", shape="portrait"),
        )),
        Artist("frank-weston-benson", "Frank Weston Benson", 1862, 1951, ("impressionism",), (
            P("summer-1909", "Summer", "1909"),
        )),
        Artist("ana-livramento", "Ana Livramento", 1950, None, ("impressionism",), (
            P("dunes", "Dunes", "2004", license="fair-use", image="frame", style="Contemporary Realism"),
        )),
        Artist("paul-cezanne", "Paul Cézanne", 1839, 1906, ("post-impressionism",), (
            P("mont-sainte-victoire", "Mont Sainte-Victoire", "1887", page_fault="503-once",
              style="Post-Impressionism"),
            P("bibemus-quarry", "Bibémus Quarry", "1895", image="foreign", style="Post-Impressionism"),
            P("the-large-bathers", "The Large Bathers", "1906", image="huge", ext=".png",
              style="Post-Impressionism"),
        )),
    )


def many_landscapes(n: int) -> tuple[Artist, ...]:
    """One impressionist with `n` fault-free public-domain landscapes: a corpus long enough to kill a
    scrape part-way many times."""
    paintings = tuple(Painting(f"landscape-{i:03d}", f"Landscape {i}", "1880") for i in range(n))
    return (Artist("alfred-sisley", "Alfred Sisley", 1839, 1899, ("impressionism",), paintings),)


# ---------------------------------------------------------------- images (deterministic, cached)

def _encode(img: Image.Image, fmt: str, compress_level: int = 1) -> bytes:
    buf = io.BytesIO()
    if fmt == "PNG":
        img.save(buf, "PNG", compress_level=compress_level)
    else:
        img.save(buf, "JPEG", quality=88)
    return buf.getvalue()


@lru_cache(maxsize=64)
def _canvas(key: str, shape: str) -> Image.Image:
    """A smooth random-coloured canvas with a few shapes, seeded by ``key``."""
    w, h = SHAPES[shape]
    rng = random.Random(key)
    small = Image.new("RGB", (4, 3))
    small.putdata([tuple(rng.randrange(256) for _ in range(3)) for _ in range(12)])
    img = small.resize((w, h), Image.BILINEAR)
    draw = ImageDraw.Draw(img)
    for _ in range(10):
        x, y = rng.randrange(w), rng.randrange(h)
        r = rng.randrange(w // 20, w // 5)
        colour = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x - r, y - r // 2, x + r, y + r // 2), fill=colour)
    return img


@lru_cache(maxsize=256)
def render_image(key: str, shape: str, ext: str, kind: str, size: str | None) -> bytes:
    """Bytes of one image file (original when ``size`` is None), deterministic in its arguments."""
    if kind == "not-image":
        return b"<!DOCTYPE html><html><body><h1>503 Service Unavailable</h1></body></html>\n"
    if kind == "huge":  # incompressible noise, stored uncompressed: ~3 bytes per pixel
        w, h = HUGE_SIZE
        noise = Image.frombytes("RGB", (w, h), random.Random(key).randbytes(w * h * 3))
        return _encode(noise, "PNG", compress_level=0)
    img = _canvas(key, shape)
    if size is not None:
        img = img.copy()
        img.thumbnail(SIZE_BOXES[size], Image.BILINEAR)
    return _encode(img, "PNG" if ext.lower() == ".png" else "JPEG")


@lru_cache(maxsize=4)
def _placeholder(name: str) -> bytes:
    if name == "frame":
        img = Image.new("RGB", (600, 480), (236, 236, 236))
        ImageDraw.Draw(img).rectangle((40, 40, 559, 439), outline=(150, 150, 150), width=12)
        return _encode(img, "JPEG")
    return _encode(Image.new("RGB", (60, 48), (245, 245, 245)), "PNG")


def _content_type(ext: str) -> str:
    return "image/png" if ext.lower() == ".png" else "image/jpeg"


# ---------------------------------------------------------------- request log

@dataclass
class RequestRecord:
    t: float  # time.monotonic() when the request arrived
    method: str
    path: str  # with query
    status: int
    bytes_sent: int  # body bytes
    complete: bool  # the whole body (as announced by Content-Length) went out


@dataclass
class _Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    truncate: bool = False


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30
    server_version = "FakeWikiArt/1.0"

    def setup(self) -> None:
        super().setup()
        # headers and body go out in separate writes: without this, Nagle + delayed ACK add ~40 ms a reply
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def _serve(self, head: bool) -> None:
        site: FakeWikiArt = self.server.site  # type: ignore[attr-defined]
        arrived = time.monotonic()
        resp = site._respond(self.path, arrived)
        if resp.delay:
            time.sleep(resp.delay)
        body = b"" if head else resp.body
        sent = len(body) // 2 if resp.truncate else len(body)
        record = RequestRecord(arrived, self.command, self.path, resp.status, sent, not resp.truncate)
        site._log(record)  # logged before the bytes go out, so a client never sees an unlogged reply
        try:
            self.send_response(resp.status)
            self.send_header("Content-Type", resp.content_type)
            self.send_header("Content-Length", str(len(resp.body)))
            for name, value in resp.headers:
                self.send_header(name, value)
            if resp.truncate:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body[:sent])
            self.wfile.flush()
        except OSError:
            record.complete, record.bytes_sent = False, 0
        if resp.truncate:
            self.close_connection = True


# ---------------------------------------------------------------- the site

class FakeWikiArt:
    """A threaded fake WikiArt on ``host:port`` (port 0 = any free port), started on construction."""

    def __init__(self, artists: Sequence[Artist] | None = None, movements: Sequence[str] = MOVEMENTS,
                 page_size: int = 3, host: str = "127.0.0.1", port: int = 0,
                 rate_limit: tuple[int, float] | None = None) -> None:
        """``rate_limit=(n, seconds)``: answer 403 to any request beyond n within the trailing window."""
        if page_size < 2:
            raise ValueError("page_size must be >= 2 so a short page is never empty")
        self.artists = tuple(default_artists() if artists is None else artists)
        self.movements = tuple(movements)
        self.page_size = page_size
        self.rate_limit = rate_limit
        self._artist = {a.slug: a for a in self.artists}
        self._painting: dict[str, tuple[Artist, Painting]] = {}
        self._by_slug: dict[str, Painting] = {}
        for a in self.artists:
            for p in a.paintings:
                self._painting[p.id] = (a, p)
                self._by_slug[p.slug] = p
        self._files: dict[str, tuple[Painting, str | None]] = {}  # image path -> (painting, size)
        for a in self.artists:
            for p in a.paintings:
                if p.image in UNUSABLE_IMAGES - {"not-image"}:
                    continue
                original = f"/images/{a.slug}/{p.slug}{p.ext}"
                self._files[original] = (p, None)
                if p.image not in ("large-404", "huge"):
                    for size in SIZE_BOXES:
                        self._files[f"{original}!{size}{p.ext}"] = (p, size)
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []
        self._fired: set[tuple[str, str]] = set()
        self._server = ThreadingHTTPServer((host, port), _Handler)
        self._server.site = self  # type: ignore[attr-defined]
        self.base_url = f"http://{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name="fake-wikiart")
        self._thread.start()
        self._stopped = False

    # -- lifecycle
    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeWikiArt:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- request log
    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of the log, in arrival order of the replies."""
        with self._lock:
            return list(self._records)

    def requests_to(self, path_prefix: str) -> list[RequestRecord]:
        return [r for r in self.requests if r.path.startswith(path_prefix)]

    def _log(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def _first_time(self, fault: str, key: str) -> bool:
        with self._lock:
            if (fault, key) in self._fired:
                return False
            self._fired.add((fault, key))
            return True

    # -- ground truth
    def artists_in(self, movement: str) -> list[Artist]:
        return [a for a in self.artists if movement in a.movements]

    def painting(self, painting_id: str) -> Painting:
        return self._painting[painting_id][1]

    def expected_title(self, painting_id: str) -> str:
        """The title with its HTML entities decoded."""
        return html.unescape(self.painting(painting_id).title)

    def image_url(self, painting_id: str) -> str:
        """The ``image`` field of the painting's JSON record (URL of the original)."""
        artist, p = self._painting[painting_id]
        if p.image == "frame":
            return self.base_url + FRAME_PATH
        if p.image == "lazy":
            return self.base_url + LAZY_PATH
        base = FOREIGN_BASE if p.image == "foreign" else self.base_url
        return f"{base}/images/{artist.slug}/{p.slug}{p.ext}"

    def image_bytes(self, painting_id: str, size: str | None = "Large") -> bytes:
        """The bytes a client gets for this painting's image at ``size`` ("Large", "HD", None = original),
        falling back to the original when the sized variant 404s. LookupError for a foreign host."""
        url = self.image_url(painting_id)
        if not url.startswith(self.base_url):
            raise LookupError(f"{url} is not on this server")
        path = url[len(self.base_url):]
        ext = path[path.rindex("."):]
        if size is not None:
            resp = self._static(f"{path}!{size}{ext}")
            if resp.status == 200:
                return resp.body
        return self._static(path).body

    def expected_kept(self, born_after: int | None = 1800, died_before: int | None = 1950,
                      exclude_artists: Sequence[str] = ("claude-monet",), genres: Sequence[str] = ("landscape",),
                      public_domain_only: bool = True, max_paintings: int | None = None,
                      movements: Sequence[str] | None = None, max_image_bytes: int | None = None,
                      size: str | None = "Large") -> list[str]:
        """Painting ids a correct scraper keeps, in listing order. Artists pass when born > born_after and
        died < died_before (a living artist fails any died_before). The first occurrence of an id or of
        identical image bytes wins; placeholders, non-images and foreign-host images are never kept."""
        kept: list[str] = []
        seen_ids: set[str] = set()
        seen_content: set[str] = set()
        for movement in movements or self.movements:
            for artist in self.artists_in(movement):
                if artist.slug in exclude_artists:
                    continue
                if born_after is not None and not artist.born > born_after:
                    continue
                if died_before is not None and (artist.died is None or not artist.died < died_before):
                    continue
                for p in artist.paintings:
                    if max_paintings is not None and len(kept) >= max_paintings:
                        return kept
                    if p.id in seen_ids:
                        continue
                    seen_ids.add(p.id)
                    if (genres and p.genre not in genres) or (public_domain_only and p.license != "public"):
                        continue
                    if p.image in UNUSABLE_IMAGES:
                        continue
                    if max_image_bytes is not None and len(self.image_bytes(p.id, size)) > max_image_bytes:
                        continue
                    content = p.same_bytes_as or p.slug
                    if content not in seen_content:
                        seen_content.add(content)
                        kept.append(p.id)
        return kept

    def pages(self, artist: Artist) -> tuple[list[list[Painting]], int]:
        """The JSON pages of an artist and the AllPaintingsCount reported with them."""
        listing, n = list(artist.paintings), self.page_size
        if artist.short_first_page and len(listing) > n - 1:
            first, rest = [listing[: n - 1]], listing[n - 1:]
        else:
            first, rest = [], listing
        chunks = first + [rest[i: i + n] for i in range(0, len(rest), n)]
        # WikiArt's count may exceed what the pages hold; it always covers every page
        return chunks, max(len(listing), n * (len(chunks) - 1) + 1)

    # -- routing
    def _respond(self, target: str, arrived: float) -> _Response:
        if self.rate_limit is not None:
            limit, window = self.rate_limit
            if sum(1 for r in self.requests if r.t >= arrived - window) >= limit:
                return _Response(403, b"Forbidden: too many requests\n")
        parts = urlsplit(target)
        path, query = unquote(parts.path), parse_qs(parts.query)
        segs = path.strip("/").split("/")
        if len(segs) == 4 and segs[:2] == ["en", "artists-by-art-movement"] and segs[3] == "text-list":
            if segs[2] in self.movements:
                return _html(self._text_list(segs[2]))
        elif len(segs) == 4 and segs[0] == "en" and segs[2:] == ["mode", "all-paintings"]:
            artist = self._artist.get(segs[1])
            if artist is not None and query.get("json") == ["2"]:
                return self._json_page(artist, query.get("page", ["1"])[0])
        elif len(segs) == 3 and segs[0] == "en" and segs[1] in self._artist:
            p = self._by_slug.get(segs[2])
            if p is not None and p in self._artist[segs[1]].paintings:
                return self._painting_page(self._artist[segs[1]], p)
        else:
            resp = self._static(path)
            if resp.status == 200:
                hit = self._files.get(path)
                resp.truncate = hit is not None and hit[0].image == "truncated" and self._first_time("cut", path)
                return resp
        return _Response(404, b"Not Found\n")

    def _static(self, path: str) -> _Response:
        if path.startswith((FRAME_PATH, LAZY_PATH)):
            frame = path.startswith(FRAME_PATH)
            return _Response(200, _placeholder("frame" if frame else "lazy"), "image/jpeg" if frame else "image/png")
        if path not in self._files:
            return _Response(404, b"Not Found\n")
        p, size = self._files[path]
        src = self._by_slug[p.same_bytes_as] if p.same_bytes_as else p
        body = render_image(src.slug, src.shape, src.ext, src.image, size)
        return _Response(200, body, _content_type(src.ext))

    def _text_list(self, movement: str) -> str:
        rows = []
        for a in self.artists_in(movement):
            life = f", {a.born} - {a.died}" if a.died is not None else f", {a.born} - "
            extra = f"<span class=\"nationality\">{a.extra_span}</span>" if a.extra_span else ""
            rows.append(f'<li class="painting-list-text-row"><a href="/en/{a.slug}">{html.escape(a.name)}</a>'
                        f"<span>{life}</span>{extra}<span>{self.pages(a)[1]} artworks</span></li>")
        title = movement.replace("-", " ").title()
        return (
            "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{title} - artists - WikiArt.org</title></head><body>\n"
            "<header><nav><ul class=\"menu\">"
            "<li><a href=\"/en/artists-by-art-movement\">Art Movements</a></li>"
            f"<li><a href=\"/en/paintings-by-style/{movement}\">Artworks</a></li>"
            "<li><a href=\"/ru/artists-by-art-movement/impressionism/text-list\">Русский</a></li>"
            "<li><a href=\"https://twitter.com/wikiart\">Twitter</a></li>"
            "<li><a href=\"#top\">Top</a></li></ul></nav></header>\n"
            f"<main><h1>{title}</h1><div class=\"masonry-text-view masonry-text-view-all\">"
            "<ul class=\"painting-list-text\">\n" + "\n".join(rows) + "\n</ul></div></main>\n"
            "<footer><a href=\"/en/about\">About</a> <a href=\"https://www.wikiart.org/en/terms-of-use\">Terms</a>"
            "</footer></body></html>\n"
        )

    def _json_page(self, artist: Artist, page_arg: str) -> _Response:
        try:
            page = int(page_arg)
        except ValueError:
            return _Response(404, b"Not Found\n")
        if dict(artist.json_faults).get(page) == "429-once" and self._first_time("429", f"{artist.slug}/{page}"):
            return _Response(429, b"Too Many Requests\n", headers=(("Retry-After", RETRY_AFTER),))
        chunks, count = self.pages(artist)
        paintings = [self._record(artist, p) for p in chunks[page - 1]] if 1 <= page <= len(chunks) else None
        envelope = {
            "ArtistsHtml": None, "CanLoadMoreArtists": False, "Artists": None, "AllArtistsCount": 0,
            "PaintingsHtml": None, "PaintingsHtmlBeta": None, "Paintings": paintings,
            "AllPaintingsCount": count, "PageSize": self.page_size, "TimeLog": None,
        }
        body = json.dumps(envelope, ensure_ascii=False).encode()
        return _Response(200, body, "application/json; charset=utf-8")

    def _record(self, artist: Artist, p: Painting) -> dict:
        src = self._by_slug[p.same_bytes_as] if p.same_bytes_as else p
        width, height = HUGE_SIZE if src.image == "huge" else SHAPES[src.shape]
        return {
            "id": p.id, "title": p.title, "year": p.year, "width": width, "height": height,
            "artistName": artist.name, "image": self.image_url(p.id),
            "paintingUrl": f"/en/{artist.slug}/{p.slug}", "artistUrl": f"/en/{artist.slug}",
            "albums": None, "flags": 0, "images": None, "map": "0123**67*",
        }

    def _painting_page(self, artist: Artist, p: Painting) -> _Response:
        if p.page_fault == "503-once" and self._first_time("503", p.slug):
            return _Response(503, b"<html><body>Service Unavailable</body></html>", "text/html; charset=utf-8",
                             headers=(("Retry-After", RETRY_AFTER),))
        image = self.image_url(p.id)
        ext = image[image.rindex("."):]
        title = html.escape(html.unescape(p.title))
        style_slug = STYLE_SLUGS.get(p.style, p.style.lower().replace(" ", "-"))
        licence = {"public": "Public domain", "copyright": "Copyright protected", "fair-use": "Fair Use"}[p.license]
        media = ", ".join(f"<a href=\"/en/paintings-by-media/{m}\">{m}</a>" for m in p.media.split(", "))
        date = f"<li><s>Date:</s> <span itemprop=\"dateCreated\">{p.year}</span></li>" if p.year else ""
        page = (
            "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{title} - {html.escape(artist.name)} - WikiArt.org</title>"
            f"<meta property=\"og:image\" content=\"{html.escape(image + '!Large' + ext)}\">"
            "</head><body>\n<div class=\"wiki-layout-artwork-info\"><article>"
            f"<{p.title_tag} itemprop=\"name\">{title}</{p.title_tag}>"
            f"<h5><span><a href=\"/en/{artist.slug}\">{html.escape(artist.name)}</a></span></h5><ul>"
            f"{date}"
            f"<li><s>Style:</s> <span><a href=\"/en/paintings-by-style/{style_slug}\">{p.style}</a></span></li>"
            f"<li class=\"dictionary-values\"><s>Genre:</s> <span><a href=\"/en/paintings-by-genre/{p.genre}\">"
            f"<span itemprop=\"genre\">{p.genre}</span></a></span></li>"
            f"<li><s>Media:</s> <span>{media}</span></li>"
            "</ul></article></div>\n"
            f"<div class=\"copyright-wrapper\"><a href=\"/en/terms-of-use\">{licence}</a></div>\n"
            "</body></html>\n"
        )
        return _Response(200, page.encode(), "text/html; charset=utf-8",
                         delay=SLOW_SECONDS if p.page_fault == "slow" else 0.0)


def _html(text: str) -> _Response:
    return _Response(200, text.encode(), "text/html; charset=utf-8")


@pytest.fixture
def fake_wikiart() -> Iterator[FakeWikiArt]:
    """A fresh fake WikiArt (default corpus, page size 3) for one test."""
    with FakeWikiArt() as site:
        yield site


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--page-size", type=int, default=3)
    args = parser.parse_args()
    site = FakeWikiArt(host=args.host, port=args.port, page_size=args.page_size)
    print(site.base_url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        site.stop()


if __name__ == "__main__":
    main()
