"""Translating photos to 256 px JPEGs (resumable) and writing Kaggle's submission zip."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch

from lowshot import translate
from lowshot.models.cyclegan import CycleGANConfig, ResnetGenerator


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        size = 256 if i % 2 else 64  # both the usual 256 px photos and ones that must be resized
        PIL.Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return sorted(folder.iterdir())


def generator(tmp_path, seed: int):
    torch.manual_seed(seed)
    G = ResnetGenerator.from_config(CycleGANConfig.tiny()).eval()
    path = tmp_path / f"g{seed}.pt"
    torch.save(G.state_dict(), path)
    return G, path


def test_translations_are_256_px_rgb_jpegs_of_the_generator_output(photos, tmp_path):
    G, path = generator(tmp_path, 0)
    out = translate.translate_photos(G, path, photos, tmp_path / "out", batch_size=2, progress=False)
    assert [p.name for p in out] == [f"p{i}.jpg" for i in range(5)]
    for p in out:
        with PIL.Image.open(p) as im:
            assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (256, 256))
    with torch.inference_mode():
        expected = G(translate._photo_tensor(photos[1])[None])[0]
    expected = np.asarray(PIL.Image.open(io.BytesIO(translate._jpeg(expected, 95)))).astype(float)
    got = np.asarray(PIL.Image.open(out[1])).astype(float)
    assert np.abs(got - expected).mean() < 0.5  # the same image, batched or alone


def test_rerun_translates_only_what_is_missing_and_a_new_generator_starts_afresh(photos, tmp_path):
    G, path = generator(tmp_path, 0)
    out_dir = tmp_path / "out"
    first = translate.translate_photos(G, path, photos[:3], out_dir, progress=False)
    stamps = {p: p.stat().st_mtime_ns for p in first}
    (out_dir / "stray.jpg").write_bytes(b"x")
    again = translate.translate_photos(G, path, photos, out_dir, progress=False)
    assert all(p.stat().st_mtime_ns == stamps[p] for p in first)  # kept, not redone
    assert sorted(p.name for p in out_dir.glob("*.jpg")) == sorted(p.name for p in again)  # stray removed

    G2, path2 = generator(tmp_path, 1)
    redone = translate.translate_photos(G2, path2, photos[:2], out_dir, progress=False)
    assert sorted(out_dir.glob("*.jpg")) == sorted(redone)
    assert all(p.stat().st_mtime_ns != stamps[p] for p in redone)


def test_submission_zip_holds_checked_jpegs_at_top_level(photos, tmp_path, caplog):
    G, path = generator(tmp_path, 0)
    images = translate.translate_photos(G, path, photos, tmp_path / "out", progress=False)
    with caplog.at_level("WARNING"):
        n = translate.write_submission(images, tmp_path / "sub" / "images.zip")
    assert n == 5 and "Kaggle wants 7000 to 10000" in caplog.text
    with zipfile.ZipFile(tmp_path / "sub" / "images.zip") as zf:
        assert sorted(zf.namelist()) == sorted(p.name for p in images)
        with zf.open(zf.namelist()[0]) as f, PIL.Image.open(f) as im:
            assert (im.format, im.size) == ("JPEG", (256, 256))


def test_submission_is_capped_at_kaggles_maximum(photos, tmp_path, monkeypatch):
    G, path = generator(tmp_path, 0)
    images = translate.translate_photos(G, path, photos, tmp_path / "out", progress=False)
    monkeypatch.setattr(translate, "KAGGLE_MAX", 3)
    assert translate.write_submission(images, tmp_path / "images.zip") == 3
    assert len(zipfile.ZipFile(tmp_path / "images.zip").namelist()) == 3


def test_an_invalid_image_is_named_and_no_zip_is_written(photos, tmp_path):
    G, path = generator(tmp_path, 0)
    images = translate.translate_photos(G, path, photos[:2], tmp_path / "out", progress=False)
    PIL.Image.new("RGB", (128, 128)).save(images[1], format="JPEG")
    with pytest.raises(translate.SubmissionError, match=r"p1.jpg is a 128x128 RGB JPEG"):
        translate.write_submission(images, tmp_path / "images.zip")
    assert not list(tmp_path.glob("*.zip*"))


# --- the stages, in a temporary project ------------------------------------------------------------


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    for folder, n in (("photos", 5), ("monet_train", 3)):
        (tmp_path / "data/processed" / folder).mkdir(parents=True)
        for i in range(n):
            PIL.Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(
                tmp_path / "data/processed" / folder / f"{folder}{i}.png")
    return tmp_path


@pytest.mark.parametrize("arch", ["cyclegan", "cut", "fastcut"])
def test_translate_stage_writes_count_jpegs_and_the_zip(arch, project):
    from lowshot.params import parse_params
    from lowshot.train.checkpoint import save_photo2monet
    from stages import translate as stage

    params = parse_params({"device": "cpu", "translate": {"count": 3, "batch_size": 2}})
    with pytest.raises(FileNotFoundError, match="run `lowshot cyclegan`"):
        stage.run(params, progress=False)
    config = CycleGANConfig.tiny()
    (project / "models/cyclegan").mkdir(parents=True)
    save_photo2monet(project / "models/cyclegan/photo2monet.pt", arch=arch, config=config.to_dict(),
                     generator=ResnetGenerator.from_config(config), epoch=1.0)
    summary = stage.run(params, progress=False)
    assert (summary.translated, summary.zipped) == (3, 3)
    assert sorted(p.name for p in (project / "data/translated").glob("*.jpg")) == [f"photos{i}.jpg" for i in range(3)]
    assert len(zipfile.ZipFile(project / "submission/images.zip").namelist()) == 3


def test_cyclegan_stage_mixes_the_sources_that_exist_and_publishes_when_finished(project, caplog):
    from lowshot.params import parse_params
    from stages import cyclegan as stage

    torch.set_num_threads(1)
    params = parse_params({"device": "cpu", "cyclegan": {
        "size": 32, "g_blocks": 6, "ngf": 8, "ndf": 8, "epochs": 1, "decay_epochs": 0, "epoch_images": 4,
        "batch": 2, "eval_every": None, "grid_size": 2, "workers": 1,
        "monet_sources": {"real": 1.0, "ranked": 0.0, "synthetic": 2.0}}})
    with caplog.at_level("WARNING"):
        first = stage.run(params, progress=False, max_steps=1)
    assert "data/synthetic" in caplog.text  # weighted but absent: dropped, named
    assert not (project / "models/cyclegan/photo2monet.pt").exists()  # not finished: nothing published
    done = stage.run(params, progress=False)
    assert done.run == first.run and (project / "models/cyclegan/photo2monet.pt").is_file()
    assert (project / "dvclive/cyclegan/metrics.json").is_file()
