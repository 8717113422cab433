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
    photo = torch.from_numpy(np.asarray(PIL.Image.open(photos[1])).transpose(2, 0, 1).copy())
    with torch.inference_mode():
        expected = G(photo[None].float() / 127.5 - 1)[0]
    expected = np.asarray(PIL.Image.open(io.BytesIO(translate._encode(expected, "JPEG", 95)))).astype(float)
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


# --- any photo, any size -------------------------------------------------------------------------------


class Pointwise(torch.nn.Module):
    """A 'generator' whose output pixel depends on its input pixel alone, so tiles must blend to the whole."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1)
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        assert x.shape[-1] % 4 == 0 and x.shape[-2] % 4 == 0
        return torch.tanh(self.conv(x))


def test_tiles_blend_back_to_the_whole_image():
    torch.manual_seed(0)
    G = Pointwise()
    x = torch.rand(1, 3, 100, 72) * 2 - 1
    with torch.no_grad():
        whole = G(x)
        G.shapes.clear()
        tiled = translate.translate_tiled(G, x, tile=32, overlap=8)
    torch.testing.assert_close(tiled, whole)
    assert len(G.shapes) == 4 * 3 and set(G.shapes) == {(1, 3, 32, 32)}  # starts 0,24,48,68 x 0,24,40
    assert translate.translate_tiled(G, x, tile=128, overlap=8).shape == x.shape  # fits: one piece
    with pytest.raises(ValueError, match="multiples of 4"):
        translate.translate_tiled(G, x, tile=30, overlap=8)


def test_feathered_seams_hide_a_step_between_tiles():
    # A generator that adds a different constant per call (as instance norm can per tile): with feathering
    # the largest jump between neighbouring pixels stays a fraction of the step between tiles.
    class Shifty(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.calls = 0
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            self.calls += 1
            return x * 0 + 0.1 * self.calls

    with torch.no_grad():
        y = translate.translate_tiled(Shifty(), torch.zeros(1, 3, 32, 96), tile=32, overlap=16)
    assert (y[..., 1:] - y[..., :-1]).abs().max() < 0.1 / 8


def write(path, size, **kw):
    rng = np.random.default_rng(len(str(path)))
    PIL.Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, **kw)
    return path


@pytest.mark.parametrize("sizing, expected", [
    (translate.Sizing("keep"), {"wide.jpg": (50, 37), "tall.png": (30, 61)}),
    (translate.Sizing("long_side", 40), {"wide.jpg": (40, 30), "tall.png": (20, 40)}),
    (translate.Sizing("square", 32), {"wide.jpg": (32, 32), "tall.png": (32, 32)}),
])
def test_any_photo_at_any_size_keeps_its_shape(sizing, expected, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    write(src / "wide.jpg", (50, 37))
    write(src / "tall.png", (30, 61))
    G, _ = generator(tmp_path, 0)
    jobs = translate.output_jobs(src, tmp_path / "out", "png")
    report = translate.translate_files(G, jobs, sizing=sizing, workers=0, tile=32, overlap=8, progress=False)
    assert not report.failed
    for target in report.written:
        with PIL.Image.open(target) as im:
            assert im.format == "PNG" and im.size == expected[{"tall": "tall.png", "wide": "wide.jpg"}[target.stem]]


def test_exif_orientation_is_applied_and_an_unreadable_file_does_not_stop_the_others(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # rotate 90: stored 40 wide, shown 40 tall
    write(src / "a_rotated.jpg", (40, 24), exif=exif)
    (src / "b_broken.jpg").write_bytes(b"not a jpeg at all")
    write(src / "c_fine.png", (24, 24))
    G, _ = generator(tmp_path, 0)
    report = translate.translate_files(G, translate.output_jobs(src, tmp_path / "out"), sizing=translate.Sizing("keep"),
                                       workers=1, progress=False)
    assert [p.name for p in report.written] == ["a_rotated.jpg", "c_fine.jpg"]
    assert [(p.name, why.split(":")[0]) for p, why in report.failed] == [("b_broken.jpg", "not_an_image")]
    assert PIL.Image.open(tmp_path / "out/a_rotated.jpg").size == (24, 40)


def test_output_names_and_bad_inputs(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("x.jpg", "x.png", "y.webp"):
        write(src / name, (8, 8))
    names = [t.name for _, t in translate.output_jobs(src, tmp_path / "out", "jpg")]
    assert names == ["x_jpg.jpg", "x_png.jpg", "y.jpg"]
    assert [t.name for _, t in translate.output_jobs(src / "y.webp", tmp_path, "png")] == ["y.png"]
    with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
        translate.output_jobs(tmp_path / "nowhere", tmp_path)
    with pytest.raises(ValueError, match="output format"):
        translate.output_jobs(src, tmp_path, "gif")


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


@pytest.mark.parametrize("arch", ["cyclegan", "cut", "fastcut", "patches"])
def test_translate_stage_writes_count_jpegs_and_the_zip(arch, project):
    from lowshot.params import parse_params
    from lowshot.train.checkpoint import save_patch_translator, save_photo2monet
    from stages import translate as stage

    params = parse_params({"device": "cpu", "translate": {"count": 3, "batch_size": 2}})
    with pytest.raises(FileNotFoundError, match="run `lowshot cyclegan`"):
        stage.run(params, progress=False)
    config = CycleGANConfig.tiny()
    (project / "models/cyclegan").mkdir(parents=True)
    if arch == "patches":
        save_patch_translator(project / "models/cyclegan/photo2monet.pt", config={"patch": 8, "descriptor": 4},
                              paintings=torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    else:
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


def test_translate_command_takes_any_folder_without_a_params_file(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from lowshot.train.checkpoint import save_photo2monet
    from stages.cli import app

    monkeypatch.chdir(tmp_path)
    config = CycleGANConfig.tiny()
    save_photo2monet(tmp_path / "g.pt", arch="cut", config=config.to_dict(),
                     generator=ResnetGenerator.from_config(config), epoch=1.0)
    src = tmp_path / "mine"
    src.mkdir()
    write(src / "big.jpg", (300, 200))
    (src / "bad.png").write_bytes(b"\x89PNG broken")
    runner = CliRunner()
    result = runner.invoke(app, ["translate", "--input", str(src), "--output", "out", "--model", "g.pt", "-q",
                                 "--size", "100", "--format", "png"])
    assert result.exit_code == 1 and "bad.png" in result.output  # named, and the others are still written
    assert PIL.Image.open(tmp_path / "out/big.png").size == (100, 67)
    result = runner.invoke(app, ["translate", "--input", str(src / "big.jpg"), "--output", "kept", "--model", "g.pt",
                                 "-q", "--keep-size"])
    assert result.exit_code == 0, result.output
    assert PIL.Image.open(tmp_path / "kept/big.jpg").size == (300, 200)
    assert runner.invoke(app, ["translate", "--input", str(src)]).exit_code == 2  # no --output
    result = runner.invoke(app, ["translate", "--input", str(src), "--output", "o", "--model", "missing.pt"])
    assert result.exit_code == 1 and "no trained translator at missing.pt" in result.output


def test_photo2monet_of_a_residual_generator_loads_as_residual(tmp_path):
    from lowshot.train.checkpoint import load_photo2monet, save_photo2monet

    torch.manual_seed(0)
    config = CycleGANConfig(ngf=8, ndf=8, g_blocks=2, residual=True)
    G = ResnetGenerator.from_config(config)
    torch.nn.init.normal_(G.model[-2].weight, 0, 0.01)  # a trained generator: no longer the identity
    save_photo2monet(tmp_path / "photo2monet.pt", arch="cut", config=config.to_dict(), generator=G, epoch=2.0)
    loaded = load_photo2monet(tmp_path / "photo2monet.pt")
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    assert loaded.residual and torch.allclose(loaded(x), G(x)) and not torch.allclose(loaded(x), x, atol=1e-3)


def test_cyclegan_stage_with_patches_publishes_the_paintings_and_translate_uses_them(project):
    from lowshot.models.patch_transfer import PatchTransfer
    from lowshot.params import parse_params
    from lowshot.train.checkpoint import load_photo2monet
    from stages import cyclegan, translate

    params = parse_params({"device": "cpu", "translate": {"count": 2, "batch_size": 2},
                           "cyclegan": {"model": "patches", "patch_size": 16, "patch_descriptor": 4,
                                        "patch_stride": 16, "grid_size": 2, "eval_every": None,
                                        "monet_sources": {"real": 1.0, "ranked": 1.0}}})
    summary = cyclegan.run(params, progress=False)
    assert summary.stats["patches/paintings"] == 3  # monet_train's three; ranked is absent
    model = load_photo2monet(project / "models/cyclegan/photo2monet.pt")
    assert isinstance(model, PatchTransfer) and len(model.paintings) == 3
    assert (project / "dvclive/cyclegan/metrics.json").is_file()
    assert (project / "dvclive/cyclegan/plots/images/translations/0.png").is_file()
    assert translate.run(params, progress=False).translated == 2
