"""Parsers for WikiArt's pages and JSON (see shared/WIKIART.md): the artists of a movement, one artist's
paintings, and the genre / style / licence block of one painting's page. Pure functions of text."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlparse

from bs4 import BeautifulSoup

_LIFESPAN = re.compile(r"(\d{3,4})\s*[-–]\s*(\d{3,4})?")
_ARTIST_PATH = re.compile(r"^/en/([^/?#]+)/?$")
_ID = re.compile(r"^[0-9a-f]{24}$")


@dataclass(frozen=True)
class Artist:
    slug: str
    name: str
    born: int | None
    died: int | None


@dataclass(frozen=True)
class PaintingRecord:
    """One painting from an artist's JSON listing."""

    id: str
    title: str
    year: str
    artist: str  # the artist's slug
    artist_name: str
    image: str  # URL of the original
    painting_url: str
    width: int | None
    height: int | None


@dataclass(frozen=True)
class PaintingDetails:
    """What a painting's own page adds: style, genre, licence."""

    style: str
    genre: str
    license: str  # "public domain", "copyright protected", "fair use" or "unknown"
    date: str


def clean_text(text: str | None) -> str:
    """Decode HTML entities, turn non-breaking and runs of whitespace into single spaces."""
    if not text:
        return ""
    return " ".join(html.unescape(text).replace("\xa0", " ").split())


def parse_artists(page: str, base_url: str) -> list[Artist]:
    """Artists of a movement's `text-list` page, in page order, each once; other links are ignored."""
    base_host = urlparse(base_url).netloc
    artists: dict[str, Artist] = {}
    for li in BeautifulSoup(page, "html.parser").find_all("li"):
        link = li.find("a", href=True)
        if link is None:
            continue
        url = urlparse(urljoin(base_url + "/", link["href"]))
        match = _ARTIST_PATH.match(url.path)
        if url.netloc != base_host or match is None:
            continue
        spans = li.find_all("span")
        born = died = None
        if spans and (years := _LIFESPAN.search(spans[0].get_text())):
            born = int(years.group(1))
            died = int(years.group(2)) if years.group(2) else None
        slug = match.group(1)
        artists.setdefault(slug, Artist(slug, clean_text(link.get_text()), born, died))
    return list(artists.values())


def parse_paintings_page(payload: dict[str, Any], base_url: str, artist: str) -> tuple[list[PaintingRecord], int, int]:
    """Records of one `all-paintings?json=2` page, plus (AllPaintingsCount, PageSize)."""
    records = []
    for p in payload.get("Paintings") or []:
        pid = str(p.get("id") or "")
        image = p.get("image") or ""
        if not _ID.match(pid) or not image:
            continue
        records.append(
            PaintingRecord(
                id=pid,
                title=clean_text(p.get("title")),
                year=clean_text(str(p.get("year") or "")),
                artist=artist,
                artist_name=clean_text(p.get("artistName")),
                image=urljoin(base_url + "/", image),
                painting_url=urljoin(base_url + "/", p.get("paintingUrl") or ""),
                width=_int_or_none(p.get("width")),
                height=_int_or_none(p.get("height")),
            )
        )
    return records, int(payload.get("AllPaintingsCount") or 0), int(payload.get("PageSize") or 0)


def parse_painting_details(page: str) -> PaintingDetails:
    """Style, genre, date and licence from a painting's page (`div.wiki-layout-artwork-info article`)."""
    soup = BeautifulSoup(page, "html.parser")
    info = soup.select_one("div.wiki-layout-artwork-info article") or soup
    fields: dict[str, str] = {}
    for li in info.find_all("li"):
        label = li.find("s")
        if label is None:
            continue
        key = clean_text(label.get_text()).rstrip(":").strip().lower()
        label.extract()
        fields[key] = clean_text(li.get_text())
    genre = info.select_one('[itemprop="genre"]')
    date = info.select_one('[itemprop="dateCreated"]')
    wrapper = soup.select_one(".copyright-wrapper")
    return PaintingDetails(
        style=fields.get("style", ""),
        genre=clean_text(genre.get_text()) if genre else fields.get("genre", ""),
        license=_license(wrapper.get_text() if wrapper else ""),
        date=clean_text(date.get_text()) if date else fields.get("date", ""),
    )


def _license(text: str) -> str:
    text = clean_text(text).lower()
    if "public domain" in text:
        return "public domain"
    if "fair use" in text:
        return "fair use"
    if "copyright" in text:
        return "copyright protected"
    return "unknown"


def _int_or_none(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None
