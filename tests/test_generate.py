"""Stages `train` and `generate` wired to the project layout, on tiny networks in a temp project."""

from __future__ import annotations

import numpy as np
import pandas as pd
import PIL.Image
import pytest
import torch
from typer.testing import CliRunner

from lowshot.models import dcgan, resnet_gan
from lowshot.models.lightweight_gan import Generator as LightweightGenerator, LightweightGANConfig
from lowshot.models.stylegan2 import Generator as StyleGenerator, StyleGAN2Config
from lowshot.params import parse_params
from lowshot.precision import resolve_precision
from lowshot.rank.clip import register_tiny_config
from lowshot.train import checkpoint
from lowshot.train.samples import interpolate, latent_dim, seed_latents, synthesize
from stages import generate, train
from stages.cli import app


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks: threads only add contention


BASELINES = {"dcgan": (dcgan.DCGANConfig.tiny, dcgan.Generator),
             "wgan-gp": (lambda r: dcgan.DCGANConfig.tiny(r, d_norm="layer"), dcgan.Generator),
             "resnet-wgan-gp": (resnet_gan.ResNetGANConfig.tiny, resnet_gan.Generator)}
ARCHS = ["lightweight", "stylegan2", *BASELINES]


def write_generator(arch: str) -> None:
    torch.manual_seed(0)
    if arch == "stylegan2":
        cfg, G = StyleGAN2Config.tiny(32), None
        G = StyleGenerator(cfg)
        G.mapping.w_avg.normal_()
    elif arch in BASELINES:
        config, generator = BASELINES[arch]
        cfg = config(32)
        G = generator(cfg)
        G.train()(torch.randn(8, cfg.z_dim))  # batch-norm statistics of a trained generator, not the initial ones
    else:
        cfg = LightweightGANConfig.tiny(32)
        G = LightweightGenerator(cfg)
    checkpoint.save_generator("models/gan/generator.pt", arch=arch, config=cfg.to_dict(), generator=G.eval(), kimg=1.5)


def params(precision: str = "fp32", **generate_kw):
    return parse_params({
        "device": "cpu", "precision": precision,
        "generate": {"count": 10, "keep": 4, "batch_size": 3, **generate_kw},
        "rank": {"method": "clip", "model": register_tiny_config(), "pretrained": None, "workers": 0},
    })


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def pixels(path) -> np.ndarray:
    return np.asarray(PIL.Image.open(path))


@pytest.mark.parametrize("arch", ["lightweight", "stylegan2", "resnet-wgan-gp"])
def test_generate_keeps_the_best_scored_and_records_every_draw(project, arch):
    write_generator(arch)
    summary = generate.run(params(), progress=False)
    assert (summary.drawn, summary.kept) == (10, 4)
    table = pd.read_csv("data/synthetic/scores.csv")
    assert len(table) == 10 and table["score"].is_monotonic_decreasing
    assert list(table["rank"]) == list(range(1, 11)) and table["kept"].sum() == 4
    kept = sorted(p.name for p in (project / "data/synthetic").glob("*.png"))
    assert kept == sorted(p.split("/")[-1] for p in table.loc[table["kept"], "path"])
    assert sorted(table["seed"]) == list(range(10))  # seed 0: image i is drawn from seed i
    assert PIL.Image.open("reports/synthetic_sheet.png").width > 0
    assert not list(project.glob("data/.tmp-*"))  # candidates are not left behind

    # Each kept image is the generator's output for its own seed, redrawn alone.
    G = checkpoint.load_generator("models/gan/generator.pt")
    best = table.iloc[0]
    alone = next(synthesize(G, seed_latents([int(best["seed"])], latent_dim(G))))
    expected = ((alone[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    # Up to one level of rounding: a batch of 1 may take other float kernels than a batch of 3.
    assert np.abs(pixels(best["path"]).astype(int) - expected.astype(int)).max() <= 1


def test_generate_is_deterministic_and_replaces_its_output(project):
    write_generator("lightweight")
    generate.run(params(), progress=False)
    first = {p.name: pixels(p) for p in (project / "data/synthetic").glob("*.png")}
    generate.run(params(keep=2), progress=False)
    second = {p.name: pixels(p) for p in (project / "data/synthetic").glob("*.png")}
    assert len(second) == 2 and all(np.array_equal(first[n], second[n]) for n in second)


@pytest.mark.parametrize("arch", ["lightweight", "stylegan2"])
def test_generate_under_bf16_draws_the_fp32_images_within_bf16_rounding(project, arch):
    write_generator(arch)
    G = checkpoint.load_generator("models/gan/generator.pt")
    z = seed_latents(range(3), latent_dim(G))
    fp32 = next(synthesize(G, z))
    bf16 = next(synthesize(G, z, precision=resolve_precision("bf16", "cpu")))
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, fp32)  # autocast did run
    assert (bf16 - fp32).abs().mean() < 0.02  # images in [-1, 1]
    generate.run(params("bf16"), progress=False)  # the stage under bf16 writes its kept images
    assert len(list((project / "data/synthetic").glob("*.png"))) == 4


def test_full_truncation_draws_the_mean_image(project):
    write_generator("stylegan2")
    G = checkpoint.load_generator("models/gan/generator.pt")
    z = seed_latents([1, 2, 3], latent_dim(G))
    images = next(synthesize(G, z, psi=0.0))
    assert torch.allclose(images[0], images[1], atol=1e-5) and torch.allclose(images[0], images[2], atol=1e-5)
    assert not torch.allclose(*next(synthesize(G, z[:2], psi=1.0)), atol=1e-3)


@pytest.mark.parametrize("arch", ARCHS)
def test_interpolation_strip_runs_between_the_two_seeds(project, arch):
    write_generator(arch)
    G = checkpoint.load_generator("models/gan/generator.pt")
    z = seed_latents([7, 8], latent_dim(G))
    strip = interpolate(G, z[0], z[1], 5)
    ends = next(synthesize(G, z))
    assert strip.shape == (5, 3, 32, 32)
    assert torch.allclose(strip[0], ends[0], atol=1e-4) and torch.allclose(strip[-1], ends[1], atol=1e-4)

    result = CliRunner().invoke(app, ["generate", "--interpolate", "5", "-q", "--params", str(write_params(project))])
    assert result.exit_code == 0, result.output
    sheet = PIL.Image.open("reports/interpolation.png")
    assert sheet.width > 5 * 32 and sheet.height > 4 * 32  # 4 strips of 5
    assert not (project / "data/synthetic").exists()  # interpolation only


def write_params(project):
    path = project / "params.yaml"
    path.write_text("device: cpu\n")
    return path


def test_generate_without_a_trained_generator_says_what_to_run(project):
    with pytest.raises(FileNotFoundError, match="run `lowshot train`"):
        generate.run(params(), progress=False)
    result = CliRunner().invoke(app, ["generate", "-q", "--params", str(write_params(project))])
    assert result.exit_code == 1 and "lowshot train" in result.output


def test_train_stage_uses_the_real_monets_when_nothing_is_ranked(project, caplog):
    folder = project / "data/processed/monet_train"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        PIL.Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"m{i}.png")
    p = parse_params({"device": "cpu", "train": {
        "resolution": 32, "batch": 4, "kimg": 0.008, "tick_kimg": 0.004, "snapshot_kimg": 0.004, "channels": 8,
        "monet_repeat": 2, "fid_every_kimg": None, "grid_size": 4, "workers": 1}})
    summary = train.run(p, progress=False, max_ticks=1)
    assert summary.stats["progress/kimg"] == 0.004
    with caplog.at_level("INFO"):
        summary = train.run(p, progress=False)
    assert "resuming from kimg 0.004" in caplog.text and summary.stats["progress/kimg"] == 0.008
    assert "4 files, 8 entries per epoch" in caplog.text  # monet_repeat 2, no ranked set
    G = checkpoint.load_generator("models/gan/generator.pt")
    assert G.arch == "lightweight" and G.config_dict["ngf"] == 8 and G.kimg == 0.008
    assert (project / "dvclive/train/metrics.json").is_file()
    assert "kimg 0.008" in summary.describe()


def test_changed_params_train_a_new_run_and_replace_the_old_one_when_done(project, caplog):
    folder = project / "data/processed/monet_train"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(4):
        PIL.Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"m{i}.png")
    train_kw = {"resolution": 32, "batch": 4, "kimg": 0.004, "tick_kimg": 0.004, "channels": 8,
                "fid_every_kimg": None, "grid_size": 4, "workers": 1}
    first = project / train.run(parse_params({"device": "cpu", "train": train_kw}), progress=False).run
    with caplog.at_level("INFO"):
        second = project / train.run(parse_params({"device": "cpu", "train": {**train_kw, "lr_d": 0.001}}),
                                     progress=False).run
    assert first != second and first.parent == second.parent == project / "models/gan/runs"
    assert "train.lr_d: 0.0002 -> 0.001" in caplog.text  # the other run is named with what differs
    assert not first.exists() and second.is_dir()  # pruned once the new run finished
    assert (project / "models/gan/generator.pt").read_bytes() == (second / "generator.pt").read_bytes()

    # New training data with the same params is a new run too, never a resume onto other images.
    PIL.Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / "m9.png")
    third = project / train.run(parse_params({"device": "cpu", "train": {**train_kw, "lr_d": 0.001}}),
                                progress=False).run
    assert third != second and not second.exists()
