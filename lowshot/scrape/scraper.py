"""The WikiArt scrape: artists of movements -> their paintings -> filters -> images, with a manifest.

Resumable: images are renamed into place only when whole, the manifest is rewritten atomically after every
batch, and painting-page details are kept in an append-only cache, so a run killed at any moment and started
again requests no completed image twice and ends with the manifest an uninterrupted run writes.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from lowshot.fsutil import atomic_write_bytes, remove_stale_temps, sha256_bytes, sha256_file
from lowshot.http import HttpClient, HttpError
from lowshot.manifest import read_manifest, relative_path, write_manifest
from lowshot.scrape.imagefetch import ImageRejected, fetch_image, host_allowed, is_placeholder, sniff_image
from lowshot.scrape.pages import (
    Artist,
    PaintingDetails,
    PaintingRecord,
    parse_artists,
    parse_painting_details,
    parse_paintings_page,
)

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["id", "artist", "title", "year", "style", "genre", "license", "image_url", "path", "sha256",
                    "width", "height"]


@dataclass(frozen=True)
class ScrapeFilters:
    movements: tuple[str, ...] = ("impressionism",)
    born_after: int = 1800
    died_before: int = 1950
    exclude_artists: tuple[str, ...] = ("claude-monet",)
    genres: tuple[str, ...] = ("landscape",)
    public_domain_only: bool = True
    image_size: str = "Large"
    image_hosts: tuple[str, ...] = ("*.wikiart.org",)
    max_paintings: int | None = None
    max_image_bytes: int = 20 << 20

    def keeps_artist(self, artist: Artist) -> bool:
        """Born after `born_after` and died before `died_before` (both strict; unknown years fail)."""
        return (
            artist.slug not in self.exclude_artists
            and artist.born is not None
            and artist.died is not None
            and artist.born > self.born_after
            and artist.died < self.died_before
        )

    @property
    def needs_details(self) -> bool:
        return bool(self.genres) or self.public_domain_only


@dataclass
class ScrapeSummary:
    artists: int = 0
    candidates: int = 0
    kept: int = 0
    reused: int = 0
    rejected: Counter = field(default_factory=Counter)
    http: Counter = field(default_factory=Counter)

    def describe(self) -> str:
        rej = ", ".join(f"{k} {v}" for k, v in sorted(self.rejected.items())) or "none"
        retries = ", ".join(f"{k[6:]} {v}" for k, v in sorted(self.http.items()) if k.startswith("retry/")) or "none"
        return (f"{self.artists} artists, {self.candidates} candidate paintings, {self.http['requests']} requests; "
                f"kept {self.kept} ({self.reused} already on disk); rejected: {rej}; retries: {retries}")


class WikiArt:
    """The requests lowshot makes of WikiArt, each parsed."""

    def __init__(self, base_url: str, client: HttpClient) -> None:
        self.base_url, self.client = base_url.rstrip("/"), client

    def artists(self, movement: str) -> list[Artist]:
        url = f"{self.base_url}/en/artists-by-art-movement/{movement}/text-list"
        return parse_artists(self.client.get(url).text, self.base_url)

    def paintings(self, artist: str) -> Iterator[PaintingRecord]:
        """Every painting of an artist, page by page; a short page is not the end unless the count says so."""
        page, pages = 1, None
        while pages is None or page <= pages:
            url = (f"{self.base_url}/en/{artist}/mode/all-paintings"
                   f"?json=2&layout=new&page={page}&resultType=masonry")
            try:
                payload = self.client.get(url).json()
            except ValueError as e:
                raise HttpError(url, None, f"not JSON: {e}") from None
            records, count, page_size = parse_paintings_page(payload or {}, self.base_url, artist)
            if not records:
                return
            yield from records
            pages = math.ceil(count / page_size) if count and page_size else page + 1
            page += 1

    def details(self, painting_url: str) -> PaintingDetails:
        return parse_painting_details(self.client.get(painting_url).text)


class _JsonLines:
    """An append-only JSON-lines map from painting id to a record; survives kills (a cut last line is skipped)."""

    def __init__(self, path: Path) -> None:
        self.path, self._entries = path, {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    self._entries[entry.pop("id")] = entry
                except (ValueError, TypeError, KeyError, AttributeError):
                    continue

    def get(self, pid: str) -> dict | None:
        return self._entries.get(pid)

    def put(self, pid: str, entry: dict) -> None:
        self._entries[pid] = entry
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"id": pid, **entry}) + "\n")
            f.flush()
            os.fsync(f.fileno())


@dataclass
class _Outcome:
    record: PaintingRecord
    row: dict | None = None
    data: bytes | None = None
    reason: str | None = None


def scrape(site: WikiArt, filters: ScrapeFilters, out_dir: Path, *, workers: int = 4, progress: bool = True,
           root: str | os.PathLike = ".") -> ScrapeSummary:
    """Scrape into `out_dir/images/{id}.{ext}` and `out_dir/manifest.csv` (paths relative to `root`, the
    project root: `lowshot.manifest`); return the summary."""
    images_dir, manifest_path = out_dir / "images", out_dir / "manifest.csv"
    images_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(images_dir)
    remove_stale_temps(out_dir)
    previous = read_manifest(manifest_path, root)
    previous = {} if previous is None else {r["id"]: r for r in previous.to_dict("records")}
    # painting-page details (so a resume re-requests no page) and the URL each image came from, written
    # before the image is renamed into place (so a file on disk always has its URL)
    details_cache = _JsonLines(out_dir / "details.jsonl")
    fetched = _JsonLines(out_dir / "fetched.jsonl")
    summary = ScrapeSummary(http=site.client.stats)

    # max_paintings 0 asks for no painting at all: not even the artist lists are requested
    candidates = [] if filters.max_paintings == 0 else _candidates(site, filters, summary, progress)
    rows: list[dict] = []
    seen_sha: dict[str, str] = {}

    def examine(record: PaintingRecord) -> _Outcome:
        try:
            return _examine(site, filters, record, images_dir, previous, details_cache, fetched)
        except ImageRejected as e:
            return _Outcome(record, reason=e.reason)
        except HttpError as e:
            return _Outcome(record, reason=f"http_{e.status}" if e.status else "http_failed")

    bar = tqdm(total=len(candidates), desc="scrape", unit="painting", disable=not progress)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        i = 0
        while i < len(candidates) and not _full(rows, filters):
            # never have more in flight than can still be kept: no image is fetched only to be dropped
            room = workers if filters.max_paintings is None else min(workers, filters.max_paintings - len(rows))
            batch = candidates[i: i + room]
            i += len(batch)
            for outcome in pool.map(examine, batch):
                _settle(outcome, rows, seen_sha, images_dir, summary, fetched, root)
            _write_manifest(manifest_path, rows)
            bar.update(len(batch))
            bar.set_postfix(kept=len(rows), rejected=sum(summary.rejected.values()))
    bar.close()

    _write_manifest(manifest_path, rows)
    kept_files = {Path(r["path"]).name for r in rows}
    for stale in images_dir.iterdir():  # files of paintings this run does not keep (older params)
        if stale.is_file() and stale.name not in kept_files:
            stale.unlink()
    summary.kept = len(rows)
    log.info("scrape: %s", summary.describe())
    return summary


def _full(rows: list[dict], filters: ScrapeFilters) -> bool:
    return filters.max_paintings is not None and len(rows) >= filters.max_paintings


def _candidates(site: WikiArt, filters: ScrapeFilters, summary: ScrapeSummary, progress: bool) -> list[PaintingRecord]:
    """Paintings of the kept artists, in listing order, each id once."""
    artists: dict[str, Artist] = {}
    for movement in filters.movements:
        for artist in site.artists(movement):
            if filters.keeps_artist(artist):
                artists.setdefault(artist.slug, artist)
    summary.artists = len(artists)
    records: dict[str, PaintingRecord] = {}
    for slug in tqdm(artists, desc="list paintings", unit="artist", leave=False, disable=not progress or len(artists) < 2):
        for record in site.paintings(slug):
            if record.id in records:
                summary.rejected["duplicate_id"] += 1
            else:
                records[record.id] = record
    summary.candidates = len(records)
    return list(records.values())


def _examine(site: WikiArt, filters: ScrapeFilters, record: PaintingRecord, images_dir: Path,
             previous: dict[str, dict], cache: _JsonLines, fetched: _JsonLines) -> _Outcome:
    """Decide one painting; download its image unless a complete one is already on disk."""
    old = previous.get(record.id)
    if old is not None and (images_dir / Path(old["path"]).name).is_file():
        return _Outcome(record, row=old)
    if not host_allowed(record.image, site.base_url, list(filters.image_hosts)):
        return _Outcome(record, reason="foreign_host")
    if is_placeholder(record.image):
        return _Outcome(record, reason="placeholder")
    details = PaintingDetails(style="", genre="", license="unknown", date="")
    if filters.needs_details:
        cached = cache.get(record.id)
        details = PaintingDetails(**cached) if cached else site.details(record.painting_url)
        if cached is None:
            cache.put(record.id, asdict(details))
        genres = {g.strip().lower() for g in details.genre.split(",") if g.strip()}
        if filters.genres and not genres & {g.lower() for g in filters.genres}:
            return _Outcome(record, reason="genre")
        if filters.public_domain_only and details.license != "public domain":
            return _Outcome(record, reason="not_public_domain")
    row = {"id": record.id, "artist": record.artist, "title": record.title, "year": record.year,
           "style": details.style, "genre": details.genre, "license": details.license}
    on_disk = sorted(images_dir.glob(f"{record.id}.*"))
    if on_disk and fetched.get(record.id):  # written, but the kill came before the manifest: keep the file, fetch nothing
        data = on_disk[0].read_bytes()
        ext, width, height = sniff_image(data)
        return _Outcome(record, row={**row, "image_url": fetched.get(record.id)["image_url"],
                                     "ext": ext, "width": width, "height": height}, data=data)
    image = fetch_image(site.client, record.image, size=filters.image_size, max_bytes=filters.max_image_bytes)
    return _Outcome(record, row={**row, "image_url": image.url, "ext": image.ext,
                                 "width": image.width, "height": image.height}, data=image.data)


def _settle(outcome: _Outcome, rows: list[dict], seen_sha: dict[str, str], images_dir: Path,
            summary: ScrapeSummary, fetched: _JsonLines, root: str | os.PathLike) -> None:
    """In listing order: reject content duplicates, write the image atomically, add its manifest row."""
    if outcome.reason is not None:
        summary.rejected[outcome.reason] += 1
        log.info("rejected %s (%s): %s", outcome.record.id, outcome.record.title, outcome.reason)
        return
    row = dict(outcome.row)
    if outcome.data is None:  # reused from the previous manifest
        sha = row["sha256"]
        summary.reused += 1
    else:
        sha = sha256_bytes(outcome.data)
    if sha in seen_sha:
        summary.rejected["duplicate_content"] += 1
        log.info("rejected %s: same image as %s", row["id"], seen_sha[sha])
        for p in images_dir.glob(f"{row['id']}.*"):
            p.unlink()
        return
    seen_sha[sha] = row["id"]
    if outcome.data is not None:
        path = images_dir / f"{row['id']}.{row.pop('ext')}"
        if not path.is_file() or sha256_file(path) != sha:
            fetched.put(row["id"], {"image_url": row["image_url"], "sha256": sha})
            atomic_write_bytes(path, outcome.data)
        row.update(path=relative_path(path, root), sha256=sha)
    rows.append({c: row.get(c, "") for c in MANIFEST_COLUMNS})


def _write_manifest(path: Path, rows: list[dict]) -> None:
    write_manifest(pd.DataFrame(rows, columns=MANIFEST_COLUMNS), path)
