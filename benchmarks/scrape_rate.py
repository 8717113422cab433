"""The scraper's politeness claim: one rate limit (N requests per W seconds, shared by every thread) is
never exceeded in any sliding window of the server's own request log, while throughput approaches N/W.

    python benchmarks/scrape_rate.py [--limits 10/1,20/1] [--threads 1,4,8] [--windows 4]

Against the fake WikiArt of tests/wikiart_server.py (127.0.0.1, started here), with the real client
(`lowshot.http.HttpClient` + `RateLimiter`). For each limit and thread count, `windows * N` GETs of
fault-free URLs (painting pages and !Large images) go through one shared client; a fresh server per row
enforces the same limit itself (403 to a request beyond N in its trailing W seconds), so a row's "403"
column is what a strict server would refuse. "max in window" is `max_in_window` of tests/test_http.py
over the arrival times the server logged: it must be <= N. Baseline rows: the same requests, same
threads, no limiter. The last rows run the whole `scrape()` on the fake corpus (its 429/503 faults
with Retry-After included).

The limiter lets the first N requests start at once, then spaces starts by W plus a 0.05 s margin, so
over a few windows "mean req/s" (requests / elapsed) exceeds N/W; "steady req/s" (the K - N requests
after the first N, over the time from the N-th arrival to the last) is the figure to compare with
N/W, ideally N/(W + 0.05).
The pipeline's own default is 10 per 5 s (WikiArt's stated limit); 1 s windows keep this run short.

Restarts (`--restarts K`, 0 to skip): `lowshot scrape` processes in a temporary project, each SIGKILLed
right after its k-th request reaches the server and started again at once, K times (tests/test_scrape.py's
`kill_restart_cycles`), at `--restart-limit` (its window longer than a restart, ~1.5 s). With the request
log (`data/scraped/request_starts.log`, the stage's default) the new process waits for the old one's
starts; the baseline deletes the log before each restart, as the scraper did before it existed. Also
the cost of keeping the log: microseconds per `RateLimiter.acquire` with and without `state_file`, at a
limit high enough never to wait.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the fake WikiArt and max_in_window live with the tests

from test_http import max_in_window
from test_scrape import kill_restart_cycles, restart_params
from wikiart_server import FakeWikiArt, many_landscapes

from lowshot.http import HttpClient, HttpError, RateLimiter, RetryPolicy
from lowshot.scrape.scraper import ScrapeFilters, WikiArt, scrape


def clean_urls(site: FakeWikiArt) -> list[str]:
    """Painting pages and !Large images that carry no fault (no 429/503, no delay, no truncation)."""
    urls = []
    for artist in site.artists:
        for p in dict.fromkeys(artist.paintings):
            if p.page_fault is None:
                urls.append(f"{site.base_url}/en/{artist.slug}/{p.slug}")
            if p.image == "ok":
                urls.append(f"{site.image_url(p.id)}!Large{p.ext}")
                site.image_bytes(p.id)  # render once now, so no row pays the server's image encoding
    return urls


def run_requests(limit: tuple[int, float], threads: int, count: int, limited: bool) -> dict:
    """`count` GETs over `threads` threads through one client; the server enforces `limit` itself."""
    n, window = limit
    with FakeWikiArt(rate_limit=limit) as site:
        pool = clean_urls(site)
        urls = [pool[i % len(pool)] for i in range(count)]
        client = HttpClient(timeout_s=10, retry=RetryPolicy(retries=0),
                            rate_limiter=RateLimiter(n, window) if limited else None)

        def get(url: str) -> int:
            try:
                _ = client.get(url).content  # read the whole body, as the scraper does
                return 200
            except HttpError as e:
                return e.status or 0

        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=threads) as ex:
            statuses = list(ex.map(get, urls))
        elapsed = time.perf_counter() - start
        times = sorted(r.t for r in site.requests)
    return {"requests": len(times), "elapsed": elapsed, "times": times,
            "refused": sum(s == 403 for s in statuses), "failed": sum(s not in (200, 403) for s in statuses)}


def run_scrape(limit: tuple[int, float], workers: int) -> dict:
    """The whole scrape of the fake corpus under `limit`, as the scrape stage runs it."""
    n, window = limit
    with FakeWikiArt(rate_limit=limit) as site, tempfile.TemporaryDirectory() as tmp:
        client = HttpClient(timeout_s=10, retry=RetryPolicy(retries=4, backoff_s=0.05, max_backoff_s=2.0),
                            rate_limiter=RateLimiter(n, window))
        filters = ScrapeFilters(movements=tuple(site.movements))
        start = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()):  # its per-artist listing bar ignores progress=False
            summary = scrape(WikiArt(site.base_url, client), filters, Path(tmp), workers=workers, progress=False)
        elapsed = time.perf_counter() - start
        times = sorted(r.t for r in site.requests)
        refused = sum(r.status == 403 for r in site.requests)
        ok = summary.kept == len(site.expected_kept())
    return {"requests": len(times), "elapsed": elapsed, "times": times, "refused": refused, "failed": 0 if ok else -1}


def run_restarts(limit: tuple[int, float], restarts: int, keep_log: bool) -> dict:
    """`restarts` kill-and-restart cycles of the scrape stage; the server enforces `limit` itself."""
    n, window = limit
    kill_after = [(n, 1, n // 2, n - 1, 5)[i % 5] for i in range(restarts)]
    with FakeWikiArt(artists=many_landscapes(60 * restarts), movements=["impressionism"], page_size=100,
                     rate_limit=limit) as site, tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        restart_params(cwd, site, n, window)
        log_file = cwd / "data/scraped/request_starts.log"
        start = time.perf_counter()
        killed = kill_restart_cycles(site, cwd, kill_after,
                                     before_restart=lambda: None if keep_log else log_file.unlink(missing_ok=True))
        elapsed = time.perf_counter() - start
        times = sorted(r.t for r in site.requests)
        refused = sum(r.status == 403 for r in site.requests)
    ended = killed.count(False)  # a process whose requests were refused can finish before its kill
    return {"requests": len(times), "elapsed": elapsed, "times": times, "refused": refused, "failed": 0,
            "note": f"{ended} ended before the kill" if ended else ""}


def acquire_cost(count: int) -> dict[str, float]:
    """Microseconds per RateLimiter.acquire that never waits, without and with the request log."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, state in (("in memory", None), ("request log", Path(tmp) / "request_starts.log")):
            limiter = RateLimiter(10, 1e-9, margin_s=0.0, state_file=state)
            start = time.perf_counter()
            for _ in range(count):
                limiter.acquire()
            out[label] = (time.perf_counter() - start) / count * 1e6
    return out


def parse_limit(text: str) -> tuple[int, float]:
    n, w = text.split("/")
    return int(n), float(w)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limits", default="10/1,20/1", help="comma-separated N/W: N requests per W seconds")
    ap.add_argument("--threads", default="1,4,8", help="comma-separated thread counts")
    ap.add_argument("--windows", type=int, default=4, help="requests per row = windows * N")
    ap.add_argument("--scrape-workers", default="4,8", help="workers of the end-to-end scrape rows ('' for none)")
    ap.add_argument("--restarts", type=int, default=6, help="kill-and-restart cycles of the stage (0: skip)")
    ap.add_argument("--restart-limit", default="30/3", help="N/W of the restart rows")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    limits = [parse_limit(t) for t in args.limits.split(",")]
    threads = [int(t) for t in args.threads.split(",")]

    rows = []
    for n, w in limits:
        for t in threads:
            rows.append((f"{n} per {w:g} s", "RateLimiter", t, n, w, run_requests((n, w), t, args.windows * n, True)))
        for t in threads:
            rows.append((f"{n} per {w:g} s", "no limiter (baseline)", t, n, w,
                         run_requests((n, w), t, args.windows * n, False)))
    n, w = limits[0]
    for workers in [int(x) for x in args.scrape_workers.split(",") if x]:
        rows.append((f"{n} per {w:g} s", "scrape() fake corpus", workers, n, w, run_scrape((n, w), workers)))
    if args.restarts:
        n, w = parse_limit(args.restart_limit)
        for keep_log, label in ((True, f"{args.restarts} kills, request log"), (False, f"{args.restarts} kills, no log")):
            rows.append((f"{n} per {w:g} s", label, 4, n, w, run_restarts((n, w), args.restarts, keep_log)))

    print(f"\nloadavg {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs; "
          f"steady = requests after the first N / their arrival span; limit holds if max in window <= N")
    print(f"{'limit':<11} {'client':<22} {'threads':>7} {'requests':>8} {'elapsed s':>9} {'mean req/s':>10} "
          f"{'steady req/s':>12} {'max in window':>13} {'403':>4}  ok")
    for label, client, t, n, w, r in rows:
        times = r["times"]
        # the N-th start to the last: K - N starts, each at least W after the start N before it
        span = times[-1] - times[n - 1] if len(times) > n else float("nan")
        steady = (len(times) - n) / span if span > 0 else float("inf")
        worst = max_in_window(times, w)
        ok = "yes" if worst <= n else "NO"
        if r["failed"]:
            ok += f" ({r['failed']} failed)" if r["failed"] > 0 else " (wrong kept set)"
        if r.get("note"):
            ok += f" ({r['note']})"
        print(f"{label:<11} {client:<22} {t:>7} {r['requests']:>8} {r['elapsed']:>9.2f} "
              f"{r['requests'] / r['elapsed']:>10.1f} {steady:>12.2f} {worst:>8} / {n:<2} {r['refused']:>4}  {ok}")
    if args.restarts:
        cost = acquire_cost(2000)
        print("\nRateLimiter.acquire (never waiting), microseconds per request: "
              + ", ".join(f"{k} {v:.0f}" for k, v in cost.items()))


if __name__ == "__main__":
    main()
