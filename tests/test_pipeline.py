"""The DVC pipeline end to end, in a temporary copy of the repository, against local servers only."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from wikiart_server import FakeWikiArt

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
STAGES = ("scrape", "fetch", "preprocess", "rank", "train", "generate", "singan", "cyclegan", "translate", "evaluate")
SHARED = REPO.parent / "shared" / "datasets"


def _sh(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out


def copy_repo(dest: Path) -> Path:
    """The project's tracked and new files, as a fresh git repository."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for f in files:
        if (REPO / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, dest / f)
    _sh(["git", "init", "-q"], dest)
    _sh(["git", "add", "-A"], dest)
    _sh(["git", "commit", "-qm", "copy"], dest)
    return dest


def image_folder(path: Path, n: int, size: tuple[int, int], seed: int, real: str | None = None) -> Path:
    """`n` images: the first of ../shared/datasets/`real` when present, else coloured noise."""
    path.mkdir(parents=True)
    if real and (SHARED / real).is_dir():
        for src in sorted((SHARED / real).iterdir())[:n]:
            shutil.copyfile(src, path / src.name)
        return path
    for i in range(n):
        img = Image.effect_noise(size, 40 + 5 * i).convert("RGB")
        img = Image.merge("RGB", [c.point(lambda v, k=k: (v + 37 * (i + seed) * (k + 1)) % 256)
                                  for k, c in enumerate(img.split())])
        img.save(path / f"img{i:02d}.jpg", quality=92)
    return path


def ran(out: subprocess.CompletedProcess) -> set[str]:
    """Stages a `dvc repro` / `dvc exp run` actually ran."""
    text = out.stdout + out.stderr
    return {s for s in STAGES if f"Running stage '{s}'" in text}


def write_tiny_params(repo: Path, tmp_path: Path, scrape: dict) -> None:
    """params.yaml with tiny images and networks, local photos and Monets, and `scrape` overrides."""
    photos = image_folder(tmp_path / "photos", 6, (320, 240), 1, real="photos")
    monets = image_folder(tmp_path / "monets", 8, (300, 300), 2, real="monet-pool120")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["scrape"].update(scrape)
    params["fetch"]["photos"] = {"source": str(photos), "sha256": None, "subdirs": None}
    params["fetch"]["monet"] = {"source": str(monets), "sha256": None, "subdirs": None}
    params["preprocess"].update(size=64, monet_train_count=5, workers=1, min_side=64)
    # offline ranking: exemplars in Inception space need no CLIP weights
    params["rank"].update(method="exemplar", features="inception", top_n=4, workers=0)
    params["train"].update(resolution=32, batch=4, kimg=0.008, tick_kimg=0.004, snapshot_kimg=0.004, channels=8,
                           fid_every_kimg=0.008, fid_images=4, grid_size=4, workers=1)
    params["generate"].update(count=8, keep=4, batch_size=4)
    params["singan"].update(paintings=1, samples=2, size=32, stages=2, min_size=12, max_size=24, iterations=2,
                            channels=8, layers=2)
    # CUT, not the default `patches`: the GAN loop through the DAG (the patches stage has its own test in
    # test_translate); the synthetic paintings in its Monets (not by default), so a new GAN changes the translator
    params["cyclegan"]["monet_sources"]["synthetic"] = 1.0
    params["cyclegan"].update(model="cut", size=32, g_blocks=6, ngf=8, ndf=8, epochs=1, decay_epochs=1, epoch_images=4,
                              batch=2, eval_images=4, grid_size=2, workers=1)
    params["translate"].update(batch_size=4)
    params["evaluate"].update(kid_subsets=10, workers=0)
    params["device"] = "cpu"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def declared_outputs(repo: Path) -> list[str]:
    """Every path dvc.yaml declares as a stage's out, metric or plot."""
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    return [next(iter(entry)) if isinstance(entry, dict) else entry
            for stage in stages.values() for kind in ("outs", "metrics", "plots") for entry in stage.get(kind, [])]


def test_dvc_repro_caches_and_experiments_rerun_only_what_changed(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    with FakeWikiArt() as site:
        write_tiny_params(repo, tmp_path, dict(
            base_url=site.base_url, movements=list(site.movements), rate_limit={"requests": 50, "per_seconds": 1.0},
            backoff_s=0.01, max_backoff_s=2.0, workers=2))

        first = _sh(["dvc", "repro"], repo)
        assert ran(first) == set(STAGES)
        scraped = pd.read_csv(repo / "data/scraped/manifest.csv")
        assert list(scraped["id"]) == site.expected_kept()
        processed = repo / "data/processed"
        assert len(list((processed / "monet_train").iterdir())) == 5
        assert len(list((processed / "monet_ref").iterdir())) == 3
        assert len(list((processed / "photos").iterdir())) == 6
        assert len(list((processed / "paintings").iterdir())) >= 1
        for png in (processed / "paintings").iterdir():
            assert Image.open(png).size == (64, 64)
        assert (repo / "dvc.lock").is_file()

        ranked = pd.read_csv(repo / "data/ranked/scores.csv")
        assert len(ranked) == len(list((processed / "paintings").iterdir()))
        assert ranked["score"].is_monotonic_decreasing
        assert sorted(p.name for p in (repo / "data/ranked/top").iterdir()) == sorted(
            Path(p).name for p in ranked["path"][:4])
        assert (repo / "reports/rank_sheet.png").is_file()
        assert (repo / "models/gan/generator.pt").is_file()
        live = json.loads((repo / "dvclive/train/metrics.json").read_text())
        assert live["progress"]["kimg"] == 0.008 and np.isfinite(live["metrics"]["fid"])
        assert len(list((repo / "dvclive/train/plots/images/samples").iterdir())) == 2
        synthetic = pd.read_csv(repo / "data/synthetic/scores.csv")
        assert len(synthetic) == 8 and synthetic["kept"].sum() == 4
        assert len(list((repo / "data/synthetic").glob("*.png"))) == 4
        assert (repo / "reports/synthetic_sheet.png").is_file()
        assert len(list((repo / "data/singan").glob("*.png"))) == 2 and (repo / "reports/singan_sheet.png").is_file()
        assert (repo / "models/cyclegan/photo2monet.pt").is_file()
        live = json.loads((repo / "dvclive/cyclegan/metrics.json").read_text())
        assert all(np.isfinite(live["metrics"][k]) for k in ("fid", "kid", "mifid"))
        translated = sorted((repo / "data/translated").glob("*.jpg"))
        assert len(translated) == 6 and Image.open(translated[0]).size == (256, 256)
        with zipfile.ZipFile(repo / "submission/images.zip") as zf:
            assert sorted(zf.namelist()) == [p.name for p in translated]
        metrics = json.loads((repo / "metrics/evaluate.json").read_text())
        assert {f"{s}.{m}" for s in ("monet_train", "ranked", "synthetic", "translated")
                for m in ("fid", "kid", "kid_std", "mifid")} <= set(metrics)
        assert all(np.isfinite(v) for v in metrics.values())

        second = _sh(["dvc", "repro"], repo)
        assert ran(second) == set()
        n_requests = len(site.requests)

        _sh(["git", "add", "-A"], repo)
        _sh(["git", "commit", "-qm", "first run"], repo)
        old_runs = list((repo / "models/gan/runs").iterdir())
        exp = _sh(["dvc", "exp", "run", "-S", "train.lr_d=0.001"], repo)
        assert ran(exp) == {"train", "generate", "cyclegan", "translate", "evaluate"}  # downstream only
        assert len(site.requests) == n_requests  # nothing upstream ran: WikiArt was not asked again
        new_runs = list((repo / "models/gan/runs").iterdir())
        assert len(new_runs) == 1 and new_runs != old_runs  # a new run, not a refused resume
        shown = _sh(["dvc", "exp", "show", "--no-pager", "--csv"], repo).stdout
        assert "synthetic.fid" in shown and "train.lr_d" in shown

    bad = yaml.safe_load((repo / "params.yaml").read_text())
    bad["preprocess"]["sise"] = 64
    (repo / "params.yaml").write_text(yaml.safe_dump(bad))
    failed = _sh(["lowshot", "preprocess"], repo, check=False)
    assert failed.returncode == 2 and "preprocess.sise is not a known key" in failed.stderr


def test_real_monets_only_runs_every_stage_and_writes_every_output(tmp_path):
    """scrape.max_paintings 0: no WikiArt at all (base_url points nowhere), an empty ranked set, and the
    GAN and the translator trained on the real Monets alone."""
    repo = copy_repo(tmp_path / "repo")
    write_tiny_params(repo, tmp_path, dict(base_url="http://127.0.0.1:9", max_paintings=0, retries=0))
    out = _sh(["dvc", "repro"], repo)
    assert ran(out) == set(STAGES)
    missing = [p for p in declared_outputs(repo) if not (repo / p).exists()]
    assert not missing, f"declared outputs not written: {missing}"

    assert len(pd.read_csv(repo / "data/scraped/manifest.csv")) == 0
    assert list((repo / "data/processed/paintings").iterdir()) == []
    scores = pd.read_csv(repo / "data/ranked/scores.csv")
    assert len(scores) == 0 and list(scores.columns) == ["id", "path", "score", "rank"]
    assert list((repo / "data/ranked/top").iterdir()) == []
    assert "the ranked set is empty" in out.stdout + out.stderr
    assert "Monet source data/ranked/top dropped: no images" in out.stdout + out.stderr
    assert len(list((repo / "data/synthetic").glob("*.png"))) == 4
    assert len(list((repo / "data/translated").glob("*.jpg"))) == 6
    metrics = json.loads((repo / "metrics/evaluate.json").read_text())
    assert {s for s in ("monet_train", "ranked", "synthetic", "translated") if f"{s}.fid" in metrics} == {
        "monet_train", "synthetic", "translated"}  # the empty ranked set is skipped, not an error
