"""The fake WikiArt itself: formats of ../shared/WIKIART.md, faults, log and ground truth."""

from __future__ import annotations

import hashlib
import html
import io
import math
import re
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
import requests
from bs4 import BeautifulSoup
from PIL import Image

from wikiart_server import HUGE_BYTES_AT_LEAST, FakeWikiArt, fake_wikiart  # noqa: F401  (fixture)

ENVELOPE = {"Paintings", "AllPaintingsCount", "PageSize", "ArtistsHtml", "CanLoadMoreArtists", "Artists",
            "AllArtistsCount", "PaintingsHtml", "PaintingsHtmlBeta", "TimeLog"}
RECORD = {"id", "title", "year", "width", "height", "artistName", "image", "paintingUrl", "artistUrl", "map",
          "flags", "albums", "images"}


def get(session: requests.Session, url: str) -> requests.Response:
    """GET with the retries a polite client makes: Retry-After on 429/503, again on a cut body."""
    for _ in range(3):
        try:
            r = session.get(url, timeout=10)
        except requests.exceptions.ChunkedEncodingError:
            continue
        if r.status_code in (429, 503):
            time.sleep(float(r.headers["Retry-After"]))
            continue
        return r
    raise AssertionError(f"no answer from {url}")


def json_url(base: str, slug: str, page: int) -> str:
    return f"{base}/en/{slug}/mode/all-paintings?json=2&layout=new&page={page}&resultType=masonry"


def lifespan(text: str) -> tuple[int, int | None]:
    m = re.fullmatch(r",\s*(\d{4})\s*-\s*(\d{4})?\s*", text)
    assert m, text
    return int(m[1]), int(m[2]) if m[2] else None


def text_list(site: FakeWikiArt, movement: str) -> list[tuple[str, str, str]]:
    """(slug, lifespan span, last span) of each artist row, links resolved and filtered as WIKIART.md says."""
    r = requests.get(f"{site.base_url}/en/artists-by-art-movement/{movement}/text-list", timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    rows = []
    for li in BeautifulSoup(r.text, "html.parser").find_all("li"):
        a, spans = li.find("a", href=True), li.find_all("span")
        if a is None:
            continue
        url = urlsplit(urljoin(r.url, a["href"]))
        if url.netloc == urlsplit(site.base_url).netloc and url.path.startswith("/en/") and spans:
            rows.append((url.path.split("/")[2], spans[0].get_text(), spans[-1].get_text()))
    return rows


def test_text_list_lists_artists_with_lifespans_and_counts(fake_wikiart: FakeWikiArt) -> None:
    site = fake_wikiart
    for movement in site.movements:
        rows = text_list(site, movement)
        assert [slug for slug, _, _ in rows] == [a.slug for a in site.artists_in(movement)]
        for (slug, life, count), artist in zip(rows, site.artists_in(movement)):
            born, died = lifespan(life)
            assert (born, died) == (artist.born, artist.died)
            assert re.fullmatch(r"\d+ artworks", count)
    page = requests.get(f"{site.base_url}/en/artists-by-art-movement/impressionism/text-list", timeout=10).text
    hrefs = [a["href"] for a in BeautifulSoup(page, "html.parser").find_all("a", href=True)]
    assert any(h.startswith("https://") for h in hrefs) and "/en/artists-by-art-movement" in hrefs
    assert {"claude-monet", "ana-livramento"} <= {s for s, _, _ in text_list(site, "impressionism")}
    first, second = ({s for s, _, _ in text_list(site, m)} for m in site.movements)
    assert first & second == {"camille-pissarro"}
    assert requests.get(f"{site.base_url}/en/artists-by-art-movement/cubism/text-list", timeout=10).status_code == 404


def test_json_pages_follow_the_envelope_and_paginate(fake_wikiart: FakeWikiArt) -> None:
    site, s = fake_wikiart, requests.Session()
    short_seen = False
    for artist in site.artists:
        ids, page = [], 1
        while True:
            r = get(s, json_url(site.base_url, artist.slug, page))
            assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
            env = r.json()
            assert set(env) == ENVELOPE and env["PageSize"] == site.page_size
            if env["Paintings"] is None:
                break
            for rec in env["Paintings"]:
                assert set(rec) == RECORD and re.fullmatch(r"[0-9a-f]{24}", rec["id"])
                assert isinstance(rec["year"], str) and rec["paintingUrl"].startswith(rec["artistUrl"] + "/")
                assert rec["images"] is None and urlsplit(rec["image"]).scheme == "http"
            if len(env["Paintings"]) < env["PageSize"] and page < math.ceil(env["AllPaintingsCount"] / env["PageSize"]):
                short_seen = True
            ids += [rec["id"] for rec in env["Paintings"]]
            page += 1
        assert page - 1 == math.ceil(env["AllPaintingsCount"] / site.page_size)  # null right after the last page
        assert ids == [p.id for p in artist.paintings]
    assert short_seen
    assert get(s, json_url(site.base_url, "nobody", 1)).status_code == 404


def test_painting_pages_carry_genre_licence_date_and_large_image(fake_wikiart: FakeWikiArt) -> None:
    site, s = fake_wikiart, requests.Session()
    tags = set()
    for artist in site.artists:
        for p in artist.paintings:
            soup = BeautifulSoup(get(s, f"{site.base_url}/en/{artist.slug}/{p.slug}").text, "html.parser")
            info = soup.select_one("div.wiki-layout-artwork-info article")
            labels = {li.s.get_text(): li for li in info.find_all("li") if li.s}
            assert labels["Genre:"].select_one("span[itemprop=genre]").get_text() == p.genre
            assert labels["Style:"].get_text(" ", strip=True) == f"Style: {p.style}"
            assert "Media:" in labels
            date = info.select_one("span[itemprop=dateCreated]")
            assert (date.get_text() if date else "") == p.year
            licence = soup.select_one(".copyright-wrapper").get_text(strip=True)
            assert (licence == "Public domain") == (p.license == "public")
            assert licence in ("Public domain", "Copyright protected", "Fair Use")
            title = info.find(["h1", "h3"])
            tags.add(title.name)
            assert title.get_text() == site.expected_title(p.id)
            og = soup.select_one("meta[property='og:image']")["content"]
            assert re.search(r"!Large\.(jpg|png|JPG)$", og) and og.startswith(site.image_url(p.id))
    assert tags == {"h1", "h3"}


def test_images_have_sized_variants_and_placeholders(fake_wikiart: FakeWikiArt) -> None:
    site, s = fake_wikiart, requests.Session()
    hashes: dict[str, str] = {}
    for artist in site.artists:
        for p in artist.paintings:
            url = site.image_url(p.id)
            if p.image == "foreign":
                assert urlsplit(url).netloc != urlsplit(site.base_url).netloc
                continue
            ext = url[url.rindex("."):]
            original = get(s, url)
            large = get(s, f"{url}!Large{ext}")
            assert original.status_code == 200
            if p.image == "not-image":
                with pytest.raises(Image.UnidentifiedImageError):
                    Image.open(io.BytesIO(large.content))
                continue
            if p.image in ("large-404", "huge"):
                assert large.status_code == 404 and get(s, f"{url}!HD{ext}").status_code == 404
                large = original
            img = Image.open(io.BytesIO(large.content))
            assert img.format == ("PNG" if ext.lower() == ".png" else "JPEG")
            assert large.content == site.image_bytes(p.id)
            if p.image in ("frame", "lazy"):
                assert urlsplit(url).path.startswith("/Content/images/")
                continue
            if p.image == "ok":
                big = Image.open(io.BytesIO(original.content)).size
                assert img.width <= 750 and img.height <= 600 and big[0] > img.width and big[1] > img.height
            hashes.setdefault(hashlib.sha256(large.content).hexdigest(), p.slug)
    assert len(hashes) == len({p.same_bytes_as or p.slug for a in site.artists for p in a.paintings
                               if p.image not in ("frame", "lazy", "foreign", "not-image")})
    paintings = [p for a in site.artists for p in a.paintings]
    assert any(site.image_url(p.id).endswith(".png") and p.image == "ok" for p in paintings)
    upper = site.image_url(next(p.id for p in paintings if p.ext == ".JPG"))
    assert get(s, upper + "!Large.JPG").status_code == 200 and get(s, upper + "!Large.jpg").status_code == 404


def test_faults_fire_once_and_the_log_records_them(fake_wikiart: FakeWikiArt) -> None:
    site, base = fake_wikiart, fake_wikiart.base_url
    url = json_url(base, "alfred-sisley", 1)
    first, second = requests.get(url, timeout=10), requests.get(url, timeout=10)
    assert (first.status_code, first.headers["Retry-After"], second.status_code) == (429, "1", 200)
    page = f"{base}/en/paul-cezanne/mont-sainte-victoire"
    assert [requests.get(page, timeout=10).status_code for _ in range(2)] == [503, 200]
    t0 = time.monotonic()
    assert requests.get(f"{base}/en/alfred-sisley/flood-at-port-marly", timeout=10).status_code == 200
    assert time.monotonic() - t0 >= 0.3
    cut = f"{base}/images/camille-pissarro/the-hermitage-at-pontoise.jpg!Large.jpg"
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(cut, timeout=10)
    assert len(requests.get(cut, timeout=10).content) > 0
    assert requests.get(f"{base}/nothing/here", timeout=10).status_code == 404
    log = site.requests
    assert [r.status for r in log] == [429, 200, 503, 200, 200, 200, 200, 404]
    assert all(r.method == "GET" for r in log) and [r.t for r in log] == sorted(r.t for r in log)
    cut_log = site.requests_to("/images/camille-pissarro/")
    assert [r.complete for r in cut_log] == [False, True]
    assert cut_log[0].bytes_sent == cut_log[1].bytes_sent // 2
    assert site.requests_to("/en/alfred-sisley/mode/")[1].path == urlsplit(url).path + "?" + urlsplit(url).query


def test_rate_limit_blocks_beyond_the_window() -> None:
    with FakeWikiArt(rate_limit=(3, 5.0)) as site:
        codes = [requests.get(f"{site.base_url}/en/paul-cezanne/bibemus-quarry", timeout=10).status_code
                 for _ in range(4)]
    assert codes == [200, 200, 200, 403]


def test_expected_kept_matches_what_the_site_serves(fake_wikiart: FakeWikiArt) -> None:
    """Walk the site as WIKIART.md describes and apply the filters to what it served."""
    site, s = fake_wikiart, requests.Session()
    host = urlsplit(site.base_url).netloc
    served = []  # (artist, born, died, record, genre, licence, image bytes or None), listing order
    for movement in site.movements:
        for slug, life, _ in text_list(site, movement):
            born, died = lifespan(life)
            page, count = 1, 1
            while page <= math.ceil(count / site.page_size):
                env = get(s, json_url(site.base_url, slug, page)).json()
                count = env["AllPaintingsCount"]
                for rec in env["Paintings"] or []:
                    soup = BeautifulSoup(get(s, site.base_url + rec["paintingUrl"]).text, "html.parser")
                    data = None
                    if urlsplit(rec["image"]).netloc == host and "/Content/images/" not in rec["image"]:
                        ext = rec["image"][rec["image"].rindex("."):]
                        r = get(s, f"{rec['image']}!Large{ext}")
                        data = (r if r.status_code == 200 else get(s, rec["image"])).content
                        if not data.startswith((b"\xff\xd8", b"\x89PNG")):
                            data = None
                    served.append((slug, born, died, rec,
                                   soup.select_one("span[itemprop=genre]").get_text(),
                                   soup.select_one(".copyright-wrapper").get_text(strip=True), data))
                page += 1
    assert len(site.requests_to("/en/camille-pissarro/mode/")) >= 4  # listed under both movements

    def keep(exclude=("claude-monet",), genres=("landscape",), public_only=True, limits=True, max_bytes=None):
        ids, contents, kept = set(), set(), []
        for slug, born, died, rec, genre, licence, data in served:
            if slug in exclude or (limits and not (born > 1800 and died is not None and died < 1950)):
                continue
            if rec["id"] in ids:
                continue
            ids.add(rec["id"])
            if (genres and genre not in genres) or (public_only and licence != "Public domain") or data is None:
                continue
            digest = hashlib.sha256(data).hexdigest()
            if (max_bytes is None or len(data) <= max_bytes) and digest not in contents:
                contents.add(digest)
                kept.append(rec["id"])
        return kept

    assert site.expected_kept() == keep() and len(keep()) >= 8
    everything = site.expected_kept(None, None, (), (), False)
    assert everything == keep((), (), False, False) and len(everything) > len(keep())
    assert site.expected_kept(max_image_bytes=HUGE_BYTES_AT_LEAST - 1) == keep(max_bytes=HUGE_BYTES_AT_LEAST - 1)
    assert len(site.expected_kept(max_image_bytes=HUGE_BYTES_AT_LEAST - 1)) == len(keep()) - 1
    assert site.expected_kept(max_paintings=3) == keep()[:3]
    titles = [site.expected_title(i) for i in keep()]
    assert any("../" in t and "'" in t and "&" in t and "É" in t for t in titles)
    assert all(html.unescape(rec["title"]) == site.expected_title(rec["id"]) for *_, rec, _, _, _ in served)


def test_standalone_serves_until_killed() -> None:
    script = Path(__file__).with_name("wikiart_server.py")
    proc = subprocess.Popen([sys.executable, str(script), "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        base = proc.stdout.readline().strip()
        assert base.startswith("http://127.0.0.1:")
        r = requests.get(f"{base}/en/artists-by-art-movement/impressionism/text-list", timeout=10)
        assert r.status_code == 200 and "/en/alfred-sisley" in r.text
    finally:
        proc.terminate()
        proc.wait(timeout=10)
