"""Stage `scrape`: impressionist landscapes from WikiArt -> data/scraped/{images/, manifest.csv}."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import PIL.Image

from lowshot.fsutil import sha256_file
from lowshot.http import HttpClient, RateLimiter, RetryPolicy
from lowshot.manifest import relative_path, write_manifest
from lowshot.params import Params
from lowshot.scrape.scraper import MANIFEST_COLUMNS, ScrapeFilters, ScrapeSummary, WikiArt, scrape
from lowshot.sources import copy_local
from stages.paths import SCRAPED

log = logging.getLogger(__name__)

# the recent request starts, beside the manifest (RateLimiter's state_file): a scrape killed and started
# again at once still keeps the limit in every window
REQUEST_LOG = SCRAPED / "request_starts.log"


@dataclass
class LocalSummary:
    copied: int
    source: str

    def describe(self) -> str:
        return f"copied {self.copied} paintings from {self.source} (scrape.local_dir; WikiArt not asked)"


def run(params: Params, *, progress: bool = True) -> ScrapeSummary | LocalSummary:
    p = params.scrape
    if p.max_paintings == 0:
        log.warning("scrape.max_paintings is 0: no paintings (WikiArt not asked); the pipeline runs on the "
                    "real Monets alone")
    elif p.local_dir:
        return _from_folder(Path(p.local_dir))
    client = HttpClient(
        timeout_s=p.timeout_s,
        retry=RetryPolicy(retries=p.retries, backoff_s=p.backoff_s, max_backoff_s=p.max_backoff_s),
        rate_limiter=RateLimiter(p.rate_limit.requests, p.rate_limit.per_seconds, state_file=REQUEST_LOG),
    )
    filters = ScrapeFilters(
        movements=tuple(p.movements),
        born_after=p.born_after,
        died_before=p.died_before,
        exclude_artists=tuple(p.exclude_artists),
        genres=tuple(p.genres),
        public_domain_only=p.public_domain_only,
        image_size=p.image_size,
        image_hosts=tuple(p.image_hosts),
        max_paintings=p.max_paintings,
        max_image_bytes=int(p.max_image_mb * (1 << 20)),
    )
    return scrape(WikiArt(p.base_url, client), filters, SCRAPED, workers=p.workers, progress=progress)


def _from_folder(folder: Path) -> LocalSummary:
    """Your own paintings instead of WikiArt: copied into data/scraped/images/ with a manifest
    (id = file name without suffix; WikiArt's columns left empty)."""
    images = copy_local(folder, SCRAPED / "images")
    rows = []
    for path in images:
        with PIL.Image.open(path) as im:
            width, height = im.size
        rows.append({"id": path.stem, "image_url": (folder / path.name).as_posix(), "path": relative_path(path),
                     "sha256": sha256_file(path), "width": width, "height": height})
    write_manifest(pd.DataFrame(rows, columns=MANIFEST_COLUMNS), SCRAPED / "manifest.csv")
    return LocalSummary(len(images), str(folder))
