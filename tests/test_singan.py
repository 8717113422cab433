"""ConSinGAN: networks, the image pyramid, per-stage learning rates, the loop (learning, exact resume,
divergence) and the `singan` stage (skips finished paintings, retrains only what a param changes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from typer.testing import CliRunner

from lowshot.models.consingan import ConSinGANConfig, Discriminator, Generator, noise_shapes, random_noise
from lowshot.params import ParamsError, SinGANParams, parse_params
from lowshot.train import checkpoint, losses
from lowshot.train.gan_loop import LOSSES_FILE, TrainingDiverged
from lowshot.images.grid import to_pil_images
from lowshot.train.singan_loop import (
    MODEL_FILE,
    image_pyramid,
    load_model,
    pyramid_sizes,
    scaled_sizes,
    stage_param_groups,
    train_singan,
)
from stages import singan as singan_stage
from stages.cli import app

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks: threads only add contention

TINY = ConSinGANConfig.tiny()  # 8 channels, 2 convs per stage: a 9 px discriminator patch


def write_painting(path: Path, size: tuple[int, int] = (24, 24), seed: int = 0) -> Path:
    """A smooth painting-like image (gradients + a blob): something a tiny model can learn quickly."""
    h, w = size
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    rng = np.random.default_rng(seed)
    c = rng.uniform(0.2, 0.8, size=3)
    blob = np.exp(-((x - c[0]) ** 2 + (y - c[1]) ** 2) / 0.05)
    rgb = np.stack([x, y * c[2], blob], axis=-1) * 255
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(rgb.clip(0, 255).astype(np.uint8)).save(path)
    return path


def tiny_params(**kw) -> SinGANParams:
    base = dict(stages=3, min_size=12, max_size=24, iterations=4, channels=TINY.channels, layers=TINY.layers,
                snapshot_iters=3, samples=3, size=32)
    return SinGANParams(**{**base, **kw})


def loss_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / LOSSES_FILE).read_text().splitlines()]


# --- networks and pyramid ------------------------------------------------------------------------


def test_generator_grows_by_copying_and_draws_at_each_pyramid_size():
    torch.manual_seed(0)
    G = Generator(TINY, stages=2)
    G.grow()
    assert G.stages == 3
    for a, b in zip(G.body[1].parameters(), G.body[2].parameters()):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()  # a copy, not shared weights
    sizes = [(12, 12), (17, 15), (24, 21)]
    assert noise_shapes(TINY, sizes) == [(3, 12, 12), (8, 21, 19), (8, 28, 25)]  # margin 2 = two 3x3 convs
    noise = random_noise(TINY, sizes, 2, generator=torch.Generator().manual_seed(0))
    out = G(noise, sizes, [1.0, 0.1, 0.1])
    assert out.shape == (2, 3, 24, 21) and out.abs().max() <= 1
    D = Discriminator(TINY)
    assert D(out).shape == (2, 1, 24 - 8, 21 - 8) and D.receptive_field == 9
    with pytest.raises(ValueError, match="3 stages got 2 noise maps"):
        G(noise[:2], sizes[:2], [1.0, 0.1])


def test_pyramid_follows_the_papers_rescaling():
    # The reference's 250 px pyramid of a square image: 6 levels, more of them at low resolution.
    assert pyramid_sizes(256, 256, min_size=25, max_size=250, stages=6) == \
        [(25, 25), (33, 33), (45, 45), (72, 72), (158, 158), (250, 250)]
    sizes = pyramid_sizes(300, 200, min_size=25, max_size=128, stages=5)
    assert sizes[-1] == (128, 86) and min(sizes[0]) == 25  # longer side to max_size, aspect kept
    steps = [b[0] / a[0] for a, b in zip(sizes, sizes[1:])]
    # Below the last plain geometric step, the growth factors rise: the levels crowd at the coarse end.
    assert steps[:-1] == sorted(steps[:-1]) and steps[-2] > steps[-1]
    assert pyramid_sizes(64, 48, min_size=20, max_size=250, stages=3)[-1] == (64, 48)  # never enlarged
    assert pyramid_sizes(64, 64, min_size=20, max_size=64, stages=2) == [(20, 20), (64, 64)]
    assert pyramid_sizes(64, 64, min_size=20, max_size=64, stages=1) == [(64, 64)]
    with pytest.raises(ValueError, match="min_size 70 px is not below"):
        pyramid_sizes(64, 64, min_size=70, max_size=250, stages=3)
    # Drawing at another size stretches every level by the same factors.
    assert scaled_sizes([(25, 25), (40, 40), (128, 128)], (256, 128)) == [(50, 25), (80, 40), (256, 128)]


def test_concurrent_stages_get_learning_rates_scaled_by_a_tenth_per_stage_below():
    G = Generator(TINY, stages=5)
    groups = stage_param_groups(G, lr=1e-3, concurrent=3, lr_scale=0.1)
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs == pytest.approx({"stage4": 1e-3, "stage3": 1e-4, "stage2": 1e-5, "tail": 1e-3})
    assert not any(p.requires_grad for i in (0, 1) for p in G.body[i].parameters())
    assert not any(p.requires_grad for p in G.head.parameters())
    assert all(p.requires_grad for i in (2, 3, 4) for p in G.body[i].parameters())

    # While stage 0 is among the trained ones, the head trains at its rate.
    young = Generator(TINY, stages=2)
    lrs = {g["name"]: g["lr"] for g in stage_param_groups(young, lr=1e-3, concurrent=3, lr_scale=0.1)}
    assert lrs == pytest.approx({"stage0": 1e-4, "stage1": 1e-3, "head": 1e-4, "tail": 1e-3})


# --- the loop ------------------------------------------------------------------------------------


def train(cfg: SinGANParams, painting: Path, out: Path, **kw) -> dict:
    return train_singan(cfg, painting=painting, out_dir=out, live_dir=kw.pop("live", None), device="cpu", seed=0,
                        model=TINY, progress=False, **kw)


def test_reconstruction_loss_falls_and_the_model_draws_variations(tmp_path):
    painting = write_painting(tmp_path / "p.png")
    # A lower rate than the paper's keeps 8-channel networks on a 12 px level out of WGAN's wild swings.
    cfg = tiny_params(stages=2, iterations=100, snapshot_iters=50, lr_g=2e-4, lr_d=2e-4)
    stats = train(cfg, painting, tmp_path / "out", live=tmp_path / "live")
    rows = loss_rows(tmp_path / "out")
    assert len(rows) == 200 and stats["progress/stage"] == 2
    recon = {s: [r["loss/recon"] for r in rows if r["stage"] == s] for s in (0, 1)}
    assert np.mean(recon[0][-20:]) < 0.5 * np.mean(recon[0][:10])
    assert np.mean(recon[1][-20:]) < 0.8 * np.mean(recon[1][:10])  # stage 1 starts from stage 0's progress
    # The adversarial loss alone also pulls G toward the painting's look; the reconstruction term does more.
    train(cfg.model_copy(update={"recon_weight": 0.0}), painting, tmp_path / "adversarial")
    alone = [r["loss/recon"] for r in loss_rows(tmp_path / "adversarial") if r["stage"] == 1]
    assert np.mean(recon[1][-20:]) < 0.75 * np.mean(alone[-20:])
    assert not checkpoint.list_states(tmp_path / "out")  # only the finished model is kept
    assert sorted(p.name for p in (tmp_path / "live/plots/images/stages").iterdir()) == ["0.png", "1.png"]

    model = load_model(tmp_path / "out" / MODEL_FILE)
    assert model.sizes == [(12, 12), (24, 24)] and model.amps[0] == 1.0 and model.amps[1] > 0
    real = torch.from_numpy(np.asarray(PIL.Image.open(painting), np.float32)).permute(2, 0, 1)[None] / 127.5 - 1
    assert torch.nn.functional.mse_loss(model.reconstruct(), real) < rows[0]["loss/recon"] / 2
    batch = model.draw([5, 6, 7])
    assert batch.shape == (3, 3, 24, 24)
    torch.testing.assert_close(model.draw([6])[0], batch[1])  # each variation redraws alone from its seed
    assert (batch[0] - batch[2]).abs().mean() > 1e-3  # variations, not one image
    assert model.draw([1, 2], size=(40, 56)).shape == (2, 3, 40, 56)  # other sizes: scaled noise maps


@pytest.mark.parametrize(("iterations", "stop_after", "stage_reached"), [
    (4, 6, 1.5),  # mid-stage, between two snapshots
    (4, 4, 1.0),  # exactly at a stage's end
    ([3, 5, 2], 7, 1.8),  # a count per stage
])
def test_interrupted_painting_resumes_exactly(iterations, stop_after, stage_reached, tmp_path):
    painting = write_painting(tmp_path / "p.png")
    cfg = tiny_params(iterations=iterations)
    train(cfg, painting, tmp_path / "whole")

    out = tmp_path / "parts"
    stats = train(cfg, painting, out, max_iters=stop_after)
    assert stats["progress/stage"] == pytest.approx(stage_reached) and stats["progress/ran"] == stop_after
    assert not (out / MODEL_FILE).exists() and checkpoint.latest_state(out) is not None
    train(cfg, painting, out)

    assert loss_rows(out) == loss_rows(tmp_path / "whole")  # every loss of every iteration, bit for bit
    per_stage = [iterations] * cfg.stages if isinstance(iterations, int) else iterations
    assert [r["stage"] for r in loss_rows(out)] == [s for s, n in enumerate(per_stage) for _ in range(n)]
    a, b = (checkpoint.load_state(d / MODEL_FILE) for d in (out, tmp_path / "whole"))
    assert a["amps"] == b["amps"] and a["sizes"] == b["sizes"]
    for name in b["G"]:
        assert torch.equal(a["G"][name], b["G"][name]), name
    assert all(torch.equal(x, y) for x, y in zip(a["fixed_noise"], b["fixed_noise"]))


def test_resuming_with_changed_params_is_refused_and_a_finished_model_is_kept(tmp_path):
    painting = write_painting(tmp_path / "p.png")
    train(tiny_params(), painting, tmp_path / "out", max_iters=2)
    with pytest.raises(checkpoint.ParamsMismatch, match=r"singan.lr_g: 0.0005 -> 0.001"):
        train(tiny_params(lr_g=0.001), painting, tmp_path / "out")
    train(tiny_params(samples=9), painting, tmp_path / "out")  # drawing params are not part of a run
    before = (tmp_path / "out" / MODEL_FILE).stat().st_mtime_ns
    assert train(tiny_params(), painting, tmp_path / "out")["progress/stage"] == 3
    assert (tmp_path / "out" / MODEL_FILE).stat().st_mtime_ns == before


def test_nan_loss_stops_and_keeps_the_last_good_state(tmp_path, monkeypatch):
    painting = write_painting(tmp_path / "p.png")
    real, calls = losses.gradient_penalty, {"n": 0}

    def nan_at_iteration_5(*args, **kw):
        calls["n"] += 1
        value = real(*args, **kw)
        return value * float("nan") if calls["n"] == 5 * 3 + 1 else value  # first critic step of iteration 5

    monkeypatch.setattr(losses, "gradient_penalty", nan_at_iteration_5)
    with pytest.raises(TrainingDiverged, match=r"stage 1, iteration 1.*loss/D.*state-000000.004.pt"):
        train(tiny_params(), painting, tmp_path / "out")


# --- the stage -----------------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for i in range(3):
        write_painting(tmp_path / "data/processed/monet_train" / f"m{i}.png", (24, 20), seed=i)
    return tmp_path


def stage_params(**singan):
    base = dict(stages=2, min_size=12, max_size=24, iterations=3, channels=8, layers=2, samples=3, size=32,
                paintings=2)
    return parse_params({"device": "cpu", "singan": {**base, **singan}})


def runs(project: Path) -> dict[str, int]:
    """Run folder -> mtime of its finished model."""
    return {p.name: (p / MODEL_FILE).stat().st_mtime_ns for p in (project / "models/singan/runs").iterdir()}


def test_stage_skips_finished_paintings_and_retrains_only_what_a_param_changes(project):
    first = singan_stage.run(stage_params(), progress=False)
    assert len(first.trained) == 2 and first.variations == 6
    written = sorted(p.name for p in (project / "data/singan").iterdir())
    assert len(written) == 6 and all(PIL.Image.open(project / "data/singan" / n).size == (32, 32) for n in written)
    sheet = PIL.Image.open(project / "reports/singan_sheet.png")
    assert sheet.width > 4 * 32 and sheet.height > 2 * 32  # 2 rows: the painting + 3 variations
    models = runs(project)

    # Drawing params retrain nothing; the variations already drawn come back unchanged.
    pixels = {n: np.asarray(PIL.Image.open(project / "data/singan" / n)) for n in written}
    again = singan_stage.run(stage_params(samples=4), progress=False)
    assert again.trained == [] and runs(project) == models
    assert len(list((project / "data/singan").iterdir())) == 8
    assert all(np.array_equal(np.asarray(PIL.Image.open(project / "data/singan" / n)), a) for n, a in pixels.items())
    # Written at `size` from the training size: resized by default, or drawn with scaled noise maps.
    stem = written[0].rsplit("-", 1)[0]  # variation 0 of this painting
    model = load_model(next((project / "models/singan/runs").glob(f"{stem}-*")) / MODEL_FILE)
    seed = singan_stage.variation_seeds(0, project / "data/processed/monet_train" / f"{stem}.png", 1)
    (resized,) = image_pyramid(model.draw(seed), [(32, 32)])
    assert np.array_equal(pixels[written[0]], np.asarray(to_pil_images(resized)[0]))
    singan_stage.run(stage_params(upscale="noise"), progress=False)
    assert runs(project) == models
    assert np.array_equal(np.asarray(PIL.Image.open(project / "data/singan" / written[0])),
                          np.asarray(to_pil_images(model.draw(seed, (32, 32)))[0]))

    # One more painting trains only that one (a count keeps the paintings a smaller one drew).
    more = singan_stage.run(stage_params(paintings=3), progress=False)
    assert len(more.trained) == 1 and {k: v for k, v in runs(project).items() if k in models} == models

    # A training param retrains every painting; the old runs go once the new ones are done.
    changed = singan_stage.run(stage_params(paintings=3, lr_d=0.001), progress=False)
    assert len(changed.trained) == 3 and not set(runs(project)) & set(models)


def test_killed_stage_keeps_finished_paintings_and_resumes_the_one_it_was_on(project, caplog):
    stopped = singan_stage.run(stage_params(), progress=False, max_iters=7)  # 6 iterations a painting
    assert len(stopped.ready) == 1 and len(stopped.trained) == 2 and stopped.written is None
    assert not (project / "data/singan").exists()
    with caplog.at_level("INFO"):
        resumed = singan_stage.run(stage_params(), progress=False)
    assert f"{stopped.trained[1]}: resuming at stage 0, iteration 1" in caplog.text
    assert len(resumed.ready) == 2 and resumed.trained == [stopped.trained[1]]


def test_named_paintings_and_other_sizes(project):
    summary = singan_stage.run(stage_params(paintings=["m2.png"]), progress=False, size=(40, 24))
    assert summary.ready == ["m2.png"]
    out = project / "data/singan_40x24"
    assert sorted(p.name for p in out.iterdir()) == ["m2-000.png", "m2-001.png", "m2-002.png"]
    assert PIL.Image.open(out / "m2-000.png").size == (40, 24)
    assert (project / "reports/singan_sheet_40x24.png").is_file() and not (project / "data/singan").exists()
    with pytest.raises(FileNotFoundError, match=r"singan.paintings names \['nope.png'\]"):
        singan_stage.run(stage_params(paintings=["m2.png", "nope.png"]), progress=False)
    with pytest.raises(ValueError, match="asks for 7 paintings but .* holds 3"):
        singan_stage.run(stage_params(paintings=7), progress=False)


def test_cli_rejects_a_bad_size(project):
    (project / "params.yaml").write_text("device: cpu\n")
    result = CliRunner().invoke(app, ["singan", "--size", "512by256", "-q"])
    assert result.exit_code == 2 and "WIDTHxHEIGHT" in result.output


@pytest.mark.parametrize(("singan", "message"), [
    ({"paintings": 0}, "singan.paintings must be a count >= 1"),
    ({"paintings": []}, "singan.paintings must name at least one painting"),
    ({"paintings": ["a.jpg", "a.jpg"]}, "singan.paintings must be distinct file names"),
    ({"paintings": ["sub/a.jpg"]}, "singan.paintings must be distinct file names"),
    ({"min_size": 30, "max_size": 25}, r"singan min_size \(30\) must be below max_size \(25\)"),
    ({"iterations": 0}, "singan.iterations must be a count >= 1"),
    ({"iterations": [5, 0, 5, 5, 5, 5]}, "singan.iterations must be a count >= 1 or a list"),
    ({"iterations": [5, 5]}, "singan iterations lists 2 counts for 6 stages"),
    ({"lr_scale": 2}, "singan.lr_scale must be <= 1"),
])
def test_bad_singan_params_name_the_key(singan, message):
    with pytest.raises(ParamsError, match=message):
        parse_params({"singan": singan})


def test_singan_is_a_monet_source_of_the_translator_off_by_default():
    from stages.cyclegan import MONET_SOURCES
    from stages.paths import SINGAN

    assert parse_params({}).cyclegan.monet_sources["singan"] == 0.0
    assert parse_params({"cyclegan": {"monet_sources": {"singan": 1.0}}}).cyclegan.monet_sources == {"singan": 1.0}
    assert MONET_SOURCES["singan"] == SINGAN
