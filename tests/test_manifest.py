"""One path convention in manifests (relative to the project root), and old manifests still read."""

from __future__ import annotations

from urllib.parse import urlsplit

import pandas as pd
import pytest

from lowshot.manifest import read_manifest, relative_path, to_relative
from test_scrape import manifest, run_scrape
from wikiart_server import FakeWikiArt


def test_paths_are_relative_to_the_root_or_absolute_outside_it(tmp_path):
    root = tmp_path / "project"
    assert relative_path(root / "data/scraped/images/a.jpg", root) == "data/scraped/images/a.jpg"
    assert relative_path(tmp_path / "elsewhere/b.jpg", root) == (tmp_path / "elsewhere/b.jpg").as_posix()
    frame = to_relative(pd.DataFrame({"path": [str(root / "x.png"), ""], "id": ["x", "y"]}), root)
    assert frame["path"].tolist() == ["x.png", ""] and frame["id"].tolist() == ["x", "y"]


def test_old_manifests_are_read_in_the_new_convention(tmp_path):
    root = tmp_path
    (root / "data/processed/paintings").mkdir(parents=True)
    (root / "data/processed/paintings/a.png").write_bytes(b"png")
    (root / "data/processed/paintings/b.png").write_bytes(b"png")
    csv = root / "data/processed/manifest.csv"
    # a = written before the convention (relative to the manifest's folder), b = after it, c = file gone
    pd.DataFrame({"id": ["a", "b", "c"], "path": ["paintings/a.png", "data/processed/paintings/b.png",
                                                  "paintings/c.png"]}).to_csv(csv, index=False)
    frame = read_manifest(csv, root)
    assert frame["path"].tolist() == ["data/processed/paintings/a.png", "data/processed/paintings/b.png",
                                      "paintings/c.png"]
    assert read_manifest(root / "missing.csv", root) is None
    (root / "bad.csv").write_bytes(b"\xff\xfe\x00garbage\n\"unclosed")
    with pytest.raises(ValueError, match="bad.csv"):
        read_manifest(root / "bad.csv", root)


def test_a_scrape_over_an_old_manifest_fetches_nothing_again_and_rewrites_it(tmp_path):
    root, out = tmp_path, tmp_path / "data/scraped"
    with FakeWikiArt() as site:
        run_scrape(site, out, root=root)
        new = manifest(out)
        assert all(p.startswith("data/scraped/images/") and (root / p).is_file() for p in new["path"])
        old = new.assign(path=new["path"].str.removeprefix("data/scraped/"))  # the old convention
        old.to_csv(out / "manifest.csv", index=False)
        n_requests = len(site.requests)
        summary = run_scrape(site, out, root=root)
        kept_urls = {urlsplit(u).path for u in new["image_url"]}
        refetched = [r for r in site.requests[n_requests:] if urlsplit(r.path).path in kept_urls]
    assert not refetched and summary.reused == len(new)
    pd.testing.assert_frame_equal(manifest(out), new)
