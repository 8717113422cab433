"""The WikiArt scraper against a local fake WikiArt (tests/wikiart_server.py): the kept set, politeness,
faults, and a SIGKILL in the middle of a real scrape process."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
import pytest
import yaml
from PIL import Image

from lowshot.http import HttpClient, RateLimiter, RetryPolicy
from lowshot.scrape.scraper import MANIFEST_COLUMNS, ScrapeFilters, WikiArt, scrape
from lowshot.scrape.imagefetch import sized_url
from test_http import max_in_window
from wikiart_server import FakeWikiArt, many_landscapes

REPO = Path(__file__).resolve().parents[1]
FAST = dict(retries=4, backoff_s=0.01, max_backoff_s=0.05)


def run_scrape(site: FakeWikiArt, out: Path, *, requests=200, per_seconds=1.0, workers=4, root: Path | None = None,
               **filters):
    """The scrape into `out`; manifest paths relative to `root` (default: `out`, so they read `images/...`)."""
    client = HttpClient(timeout_s=5, retry=RetryPolicy(retries=4, backoff_s=0.01, max_backoff_s=2.0),
                        rate_limiter=RateLimiter(requests, per_seconds))
    filters.setdefault("movements", tuple(site.movements))
    f = ScrapeFilters(image_hosts=("*.wikiart.org",), **filters)
    return scrape(WikiArt(site.base_url, client), f, out, workers=workers, progress=False, root=root or out)


def manifest(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)


def test_scrape_keeps_exactly_the_expected_paintings(tmp_path):
    with FakeWikiArt() as site:
        summary = run_scrape(site, tmp_path)
        expected = site.expected_kept()
        m = manifest(tmp_path)
        assert list(m.columns) == MANIFEST_COLUMNS
        assert list(m["id"]) == expected  # listing order, each painting once
        assert summary.kept == len(expected)
        for row in m.to_dict("records"):
            path = tmp_path / row["path"]
            assert path.name.startswith(row["id"] + ".")  # named by id, never by title
            data = path.read_bytes()
            assert hashlib.sha256(data).hexdigest() == row["sha256"]
            assert data == site.image_bytes(row["id"])
            with Image.open(path) as img:
                assert img.size == (int(row["width"]), int(row["height"]))
            # entities decoded; non-breaking spaces and runs of whitespace become one space
            assert row["title"] == " ".join(site.expected_title(row["id"]).replace("\xa0", " ").split())
            assert row["license"] == "public domain" and "landscape" in row["genre"]
        # no stray files: the images folder holds exactly the manifest's files
        assert sorted(p.name for p in (tmp_path / "images").iterdir()) == sorted(Path(p).name for p in m["path"])
        # faults were met and survived: throttling and truncation were retried
        assert summary.http["retry/http_429"] >= 1 and summary.http["retry/truncated_body"] >= 1
        # copyrighted works come as placeholders, caught before their page is even requested
        assert summary.rejected["genre"] == 3 and summary.rejected["placeholder"] == 3
        assert summary.rejected["foreign_host"] >= 1
        assert summary.rejected["duplicate_content"] >= 1
        assert not any("evil" in r.path for r in site.requests)


def test_rate_limit_holds_in_every_window_of_the_servers_log(tmp_path):
    with FakeWikiArt() as site:
        run_scrape(site, tmp_path, requests=10, per_seconds=1.0, workers=6)
        times = [r.t for r in site.requests]
        assert len(times) > 20
        assert max_in_window(times, 1.0) <= 10
        # sits just under the ceiling: not needlessly slow either
        span = max(times) - min(times)
        assert len(times) / span > 0.6 * 10 / 1.0


def test_no_painting_page_is_requested_without_genre_or_licence_filter(tmp_path):
    with FakeWikiArt() as site:
        run_scrape(site, tmp_path, genres=(), public_domain_only=False, max_paintings=4)
        assert list(manifest(tmp_path)["id"]) == site.expected_kept(genres=(), public_domain_only=False,
                                                                  max_paintings=4)
        assert not [r for r in site.requests if r.path.startswith("/en/") and "json=2" not in r.path
                    and "artists-by-art-movement" not in r.path]


def test_max_paintings_and_a_rerun_with_fewer_removes_extra_files(tmp_path):
    with FakeWikiArt() as site:
        run_scrape(site, tmp_path, max_paintings=5)
        assert list(manifest(tmp_path)["id"]) == site.expected_kept(max_paintings=5)
        run_scrape(site, tmp_path, max_paintings=2)
        m = manifest(tmp_path)
        assert list(m["id"]) == site.expected_kept(max_paintings=2)
        assert len(list((tmp_path / "images").iterdir())) == 2


def test_oversized_images_are_rejected(tmp_path):
    with FakeWikiArt() as site:
        summary = run_scrape(site, tmp_path, max_image_bytes=1_000_000)
        assert summary.rejected["too_large"] == 1
        assert list(manifest(tmp_path)["id"]) == site.expected_kept(max_image_bytes=1_000_000)
        for path in (tmp_path / "images").iterdir():
            assert path.stat().st_size <= 1_000_000


def test_sized_url_keeps_extension_and_case():
    assert sized_url("https://u.wikiart.org/a/b.jpg", "Large") == "https://u.wikiart.org/a/b.jpg!Large.jpg"
    assert sized_url("https://u.wikiart.org/a/b.PNG", "HD") == "https://u.wikiart.org/a/b.PNG!HD.PNG"
    assert sized_url("https://u.wikiart.org/a/b.jpg!Large.jpg", "original") == "https://u.wikiart.org/a/b.jpg"


def _params_file(tmp: Path, base_url: str) -> Path:
    params = {"scrape": {"base_url": base_url, "movements": ["impressionism", "post-impressionism"], "rate_limit": {"requests": 20, "per_seconds": 1.0},
                         "workers": 2, **FAST}}
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _lowshot_scrape(cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "stages.cli", "scrape", "--quiet"], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_sigkill_mid_scrape_then_rerun_matches_an_uninterrupted_run(tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    with FakeWikiArt() as site:
        for d in (killed, clean):
            d.mkdir()
            _params_file(d, site.base_url)
        images = killed / "data/scraped/images"
        proc = _lowshot_scrape(killed)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            done = [p for p in images.glob("*") if not p.name.startswith(".tmp-")] if images.is_dir() else []
            if len(done) >= 3:
                break
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert len(done) >= 3, "the scrape should have been killed part-way"
        completed = {p.name: p.read_bytes() for p in images.iterdir() if not p.name.startswith(".tmp-")}
        for data in completed.values():  # every file under its final name is whole
            Image.open(__import__("io").BytesIO(data)).load()
        n_before = len(site.requests)

        proc = _lowshot_scrape(killed)
        assert proc.wait(timeout=120) == 0, proc.stdout.read().decode()
        resumed = site.requests[n_before:]
        proc = _lowshot_scrape(clean)
        assert proc.wait(timeout=120) == 0, proc.stdout.read().decode()

    a, b = manifest(killed / "data/scraped"), manifest(clean / "data/scraped")
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == len(set(a["id"])) == len(set(a["sha256"]))
    assert not [p for p in images.iterdir() if p.name.startswith(".tmp-")]
    # no image completed before the kill was requested again
    urls = dict(zip(a["path"].map(lambda p: Path(p).name), a["image_url"]))
    refetched = [name for name in completed if name in urls
                 and any(r.path == urlsplit(urls[name]).path for r in resumed)]
    assert not refetched


def kill_restart_cycles(site: FakeWikiArt, cwd: Path, kill_after: Sequence[int],
                        before_restart: Callable[[], None] = lambda: None) -> list[bool]:
    """Start `lowshot scrape` in `cwd`, SIGKILL it right after its k-th request reaches the server, start
    it again at once, for each k; whether each process was killed (rather than finished first)."""
    killed = []
    for k in kill_after:
        before_restart()
        before = len(site.requests)
        proc = _lowshot_scrape(cwd)
        deadline = time.monotonic() + 30
        while len(site.requests) < before + k and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        killed.append(proc.wait() == -signal.SIGKILL)
    return killed


def restart_params(cwd: Path, site: FakeWikiArt, limit: int, window: float) -> None:
    params = {"scrape": {"base_url": site.base_url, "movements": list(site.movements), "genres": [],
                         "public_domain_only": False, "rate_limit": {"requests": limit, "per_seconds": window},
                         "workers": 4, **FAST}}
    (cwd / "params.yaml").write_text(yaml.safe_dump(params))


@pytest.mark.slow
def test_sigkill_and_immediate_restart_never_exceed_the_rate_limit(tmp_path):
    """Six scrapes, each SIGKILLed right after its k-th request arrives and started again at once: the
    server's own log holds at most the limit in every window, across processes."""
    limit, window = 30, 3.0  # a window longer than a restart (~1.5 s), so old and new requests share one
    with FakeWikiArt(artists=many_landscapes(150), movements=["impressionism"], page_size=75,
                     rate_limit=(limit, window)) as site:
        restart_params(tmp_path, site, limit, window)
        killed = kill_restart_cycles(site, tmp_path, (limit, 1, 12, limit - 1, 5, 20))
        log = site.requests
    assert max_in_window([r.t for r in log], window) <= limit
    assert not [r for r in log if r.status == 403]  # the server, counting the same way, refused nothing
    assert killed == [True] * 6 and len(log) >= 6 + limit * 3  # each one was killed part-way


def test_local_dir_replaces_wikiart_with_your_own_paintings(tmp_path, monkeypatch):
    from lowshot.params import parse_params
    from stages import scrape as stage

    mine = tmp_path / "mine" / "sub"
    mine.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (30 + i, 20), (i * 50, 0, 0)).save(mine / f"painting{i}.png")
    (mine / "notes.txt").write_text("not an image")
    monkeypatch.chdir(tmp_path)
    # base_url points nowhere: a request would fail the test
    params = parse_params({"scrape": {"local_dir": str(tmp_path / "mine"), "base_url": "http://127.0.0.1:9"}})
    summary = stage.run(params, progress=False)
    assert summary.copied == 3 and "WikiArt not asked" in summary.describe()
    manifest = pd.read_csv(tmp_path / "data/scraped/manifest.csv")
    assert list(manifest["width"]) == [30, 31, 32]
    assert all((tmp_path / p).is_file() for p in manifest["path"])


def test_max_paintings_zero_asks_nothing_and_writes_an_empty_manifest(tmp_path, monkeypatch):
    from lowshot.params import parse_params
    from stages import scrape as stage

    with FakeWikiArt() as site:
        run_scrape(site, tmp_path / "data/scraped", max_paintings=2)  # a previous scrape's images and manifest
        n_before = len(site.requests)
        monkeypatch.chdir(tmp_path)
        # local_dir is not read either: 0 paintings means none from anywhere
        params = parse_params({"scrape": {"base_url": site.base_url, "max_paintings": 0,
                                          "local_dir": str(tmp_path / "nowhere")}})
        summary = stage.run(params, progress=False)
        assert len(site.requests) == n_before
    assert summary.kept == 0
    m = manifest(tmp_path / "data/scraped")
    assert list(m.columns) == MANIFEST_COLUMNS and len(m) == 0
    assert list((tmp_path / "data/scraped/images").iterdir()) == []
