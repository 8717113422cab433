"""Stage `scrape`: impressionist landscapes from WikiArt -> data/scraped/{images/, manifest.csv}."""

from __future__ import annotations

from lowshot.http import HttpClient, RateLimiter, RetryPolicy
from lowshot.params import Params
from lowshot.scrape.scraper import ScrapeFilters, ScrapeSummary, WikiArt, scrape
from stages.paths import SCRAPED


def run(params: Params, *, progress: bool = True) -> ScrapeSummary:
    p = params.scrape
    client = HttpClient(
        timeout_s=p.timeout_s,
        retry=RetryPolicy(retries=p.retries, backoff_s=p.backoff_s, max_backoff_s=p.max_backoff_s),
        rate_limiter=RateLimiter(p.rate_limit.requests, p.rate_limit.per_seconds),
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
