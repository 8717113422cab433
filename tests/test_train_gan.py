"""The GAN training loop on tiny networks and 32 px images, on CPU: every architecture with every
augmentation, exact resume, critic steps, reference defaults, divergence, transfer learning, DDP."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from lowshot.models.dcgan import DCGANConfig
from lowshot.models.lightweight_gan import LightweightGANConfig
from lowshot.models.resnet_gan import ResNetGANConfig
from lowshot.models.stylegan2 import StyleGAN2Config
from lowshot.params import TrainParams
from lowshot.precision import FP32, Precision
from lowshot.train import checkpoint, distributed, losses, recipes
from lowshot.train.gan_loop import LOSSES_FILE, TrainingDiverged, make_phases, run_fingerprint, train_gan
from lowshot.train.samples import latent_dim

TINY = {"stylegan2": StyleGAN2Config.tiny(32), "lightweight": LightweightGANConfig.tiny(32),
        "dcgan": DCGANConfig.tiny(32), "wgan-gp": DCGANConfig.tiny(32, d_norm="layer"),
        "resnet-wgan-gp": ResNetGANConfig.tiny(32)}
ARCHS = list(TINY)
LOSSES = {"stylegan2": {"loss/r1", "loss/pl"}, "lightweight": {"loss/recon"}, "dcgan": set(),
          "wgan-gp": {"loss/gp"}, "resnet-wgan-gp": {"loss/gp"}}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks: threads only add contention


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(8):
        PIL.Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def params(arch: str, **kw) -> TrainParams:
    base = dict(arch=arch, resolution=32, batch=4, kimg=0.008, tick_kimg=0.004, snapshot_kimg=0.008,
                fid_every_kimg=None, grid_size=4, workers=1)
    return TrainParams(**{**base, **kw})


def run(cfg: TrainParams, images: Path, out: Path, live: Path | None = None, **kw) -> dict:
    return train_gan(cfg, sources=[(images, 1)], out_dir=out, live_dir=live, device="cpu", seed=0,
                     model=TINY[cfg.arch], progress=False, **kw)


def loss_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / LOSSES_FILE).read_text().splitlines()]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", ["ada", "diffaugment", "fixed", "none"])
def test_each_arch_and_augmentation_trains_and_leaves_a_usable_generator(arch, kind, images, tmp_path):
    # critic_steps 1: G trains on both minibatches of this short run (the critics' reference is 5).
    cfg = params(arch, aug={"kind": kind, "p": 0.5}, r1_interval=1, pl_interval=1, critic_steps=1)
    precision = Precision(bf16=True, channels_last=True, reason="test") if kind == "fixed" else FP32
    stats = run(cfg, images, tmp_path / "out", tmp_path / "live", precision=precision)
    assert stats["progress/kimg"] == 0.008
    assert all(np.isfinite(v) for v in stats.values())
    expected = {"loss/G", "loss/D"} | LOSSES[arch]
    assert set(stats) & {"loss/r1", "loss/pl", "loss/recon", "loss/gp"} == LOSSES[arch]
    assert expected <= set(stats)
    rows = loss_rows(tmp_path / "out")
    assert [r["step"] for r in rows] == [0, 1] and expected <= set(rows[0])

    G = checkpoint.load_generator(tmp_path / "out" / "generator.pt", "cpu")
    assert G.kimg == 0.008 and G.arch == arch
    x = G(torch.randn(3, latent_dim(G)))
    assert x.shape == (3, 3, 32, 32) and torch.isfinite(x).all()

    live = tmp_path / "live"
    assert (live / "plots" / "metrics" / "loss" / "G.tsv").is_file()
    assert (live / "plots" / "metrics" / "speed" / "kimg_per_hour.tsv").is_file()
    assert sorted(p.name for p in (live / "plots" / "images" / "samples").iterdir()) == ["0.png", "1.png"]
    assert json.loads((live / "metrics.json").read_text())["progress"]["kimg"] == 0.008


@pytest.mark.parametrize("arch,interrupt", [("stylegan2", "max_ticks"), ("lightweight", "kimg"), ("dcgan", "kimg"),
                                           ("wgan-gp", "max_ticks"), ("resnet-wgan-gp", "kimg")])
def test_interrupted_run_continues_exactly_as_an_uninterrupted_one(arch, interrupt, images, tmp_path):
    # ADA moving fast, lazy R1 / path length every few steps, flips: every kind of state is exercised.
    cfg = params(arch, kimg=0.040, snapshot_kimg=0.016, r1_interval=3, pl_interval=2,
                 aug={"kind": "ada", "p": 0.3, "speed_kimg": 0.2, "interval": 2})
    whole = run(cfg, images, tmp_path / "whole")

    out = tmp_path / "parts"
    if interrupt == "max_ticks":
        run(cfg, images, out, max_ticks=5)  # stops at 0.020 kimg, between two snapshots
    else:
        run(cfg.model_copy(update={"kimg": 0.020}), images, out)
    state = checkpoint.load_state(checkpoint.latest_state(out))
    # ADA has adjusted p (up and down: it may be back at 0.3), so its state is part of the test.
    assert state["progress"]["nimg"] == 20 and state["augment"]["controller"]["r_t"] is not None
    resumed = run(cfg, images, out, tmp_path / "live")

    assert loss_rows(out) == loss_rows(tmp_path / "whole")  # every loss of every step, bit for bit
    assert len(loss_rows(out)) == 10
    assert resumed["aug/p"] == whole["aug/p"]
    assert 0.3 != state["augment"]["p"] or 0.3 != whole["aug/p"]  # p moved
    a = checkpoint.load_state(checkpoint.latest_state(out))
    b = checkpoint.load_state(checkpoint.latest_state(tmp_path / "whole"))
    assert a["kimg"] == b["kimg"] == 0.04
    for key in ("G", "D", "G_ema"):
        for name in b[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name}"


def test_critic_steps_run_g_once_per_n_minibatches_and_kimg_counts_reals_shown_to_d(images, tmp_path):
    # 10 minibatches of 4 real images: 10 critic steps, 2 G steps (after critic steps 0-4 and 5-9 minus one).
    cfg = params("wgan-gp", kimg=0.040, snapshot_kimg=0.040)
    stats = run(cfg, images, tmp_path)
    rows = loss_rows(tmp_path)
    assert [r["step"] for r in rows] == list(range(10))
    assert [round(r["kimg"] * 1000) for r in rows] == [4 * i for i in range(10)]  # batch reals per critic step
    assert [r["step"] for r in rows if "loss/G" in r] == [4, 9]
    assert all("loss/D" in r and "loss/gp" in r for r in rows)
    state = checkpoint.load_state(checkpoint.latest_state(tmp_path))
    assert state["progress"]["nimg"] == 40 and stats["progress/kimg"] == 0.04
    assert state["sampler"] == {"epoch": 5, "position": 0}  # 40 reals drawn from the 8 images
    assert {float(s["step"]) for s in state["opt_G"]["state"].values()} == {2.0}  # Adam steps of G
    assert {float(s["step"]) for s in state["opt_D"]["state"].values()} == {10.0}
    assert state["optim"] == {"lr_g": 1e-4, "lr_d": 1e-4, "betas": [0.0, 0.9], "critic_steps": 5}


@pytest.mark.parametrize("arch,expected", [
    ("stylegan2", (0.0025, 0.0025, (0.0, 0.99), 1)), ("lightweight", (2e-4, 2e-4, (0.5, 0.999), 1)),
    ("dcgan", (2e-4, 2e-4, (0.5, 0.999), 1)), ("wgan-gp", (1e-4, 1e-4, (0.0, 0.9), 5)),
    ("resnet-wgan-gp", (1e-4, 1e-4, (0.0, 0.9), 5))])
def test_null_optimiser_params_resolve_to_the_arch_reference_and_set_ones_override(arch, expected):
    assert recipes.make_recipe(params(arch), TINY[arch]).optim == recipes.Optim(*expected)
    mixed = recipes.make_recipe(params(arch, lr_d=0.003, betas=(0.1, 0.2)), TINY[arch]).optim
    assert mixed == recipes.Optim(expected[0], 0.003, (0.1, 0.2), expected[3])


def test_adam_gets_the_resolved_settings_corrected_for_lazy_regularisation():
    cfg = params("stylegan2", pl_interval=4, r1_interval=16)
    recipe = recipes.make_recipe(cfg, TINY["stylegan2"])
    G, D = recipe.build()
    phases = {p.name: p for p in make_phases(cfg, recipe, G, D, lambda x: x, losses.PathLengthPenalty(),
                                             torch.Generator())}
    (g,), (d,) = phases["G"].opt.param_groups, phases["D"].opt.param_groups
    assert g["lr"] == pytest.approx(0.0025 * 4 / 5) and g["betas"] == pytest.approx((0.0, 0.99 ** (4 / 5)))
    assert d["lr"] == pytest.approx(0.0025 * 16 / 17) and d["betas"] == pytest.approx((0.0, 0.99 ** (16 / 17)))


def test_resolved_settings_are_the_fingerprint_so_a_changed_reference_is_a_new_run(images, tmp_path, monkeypatch,
                                                                                     caplog):
    cfg = params("dcgan")
    explicit = params("dcgan", lr_g=2e-4, lr_d=2e-4, betas=(0.5, 0.999), critic_steps=1)
    assert run_fingerprint(cfg, 0, "data") == run_fingerprint(explicit, 0, "data")  # the same training
    with caplog.at_level("INFO"):
        run(cfg, images, tmp_path)
    assert "train.lr_g 0.0002 (dcgan reference)" in caplog.text and "train.critic_steps 1 (dcgan reference)" in caplog.text
    monkeypatch.setitem(recipes.REFERENCE, "dcgan", recipes.Optim(3e-4, 2e-4, (0.5, 0.999), 1))
    with pytest.raises(checkpoint.ParamsMismatch, match=r"train.lr_g: 0.0002 -> 0.0003"):
        run(cfg.model_copy(update={"kimg": 0.016}), images, tmp_path)


def test_gradient_penalty_is_taken_on_interpolates_of_the_images_d_saw(monkeypatch):
    cfg = params("wgan-gp", gp_weight=10.0)
    recipe = recipes.make_recipe(cfg, TINY["wgan-gp"])
    G, D = recipe.build()
    seen = []

    def augment(x):  # a stand-in augmentation that records what D is shown
        seen.append(x.flip(3) * 0.5 + 0.25)
        return seen[-1]

    spied = []
    real_interpolates = losses.interpolates
    monkeypatch.setattr(losses, "interpolates", lambda real, fake, gen: spied.append((real, fake)) or
                        real_interpolates(real, fake, gen))
    phases = {p.name: p for p in make_phases(cfg, recipe, G, D, augment, losses.PathLengthPenalty(),
                                             torch.Generator(), torch.Generator().manual_seed(0))}
    batch = {"real": torch.rand(4, 3, 32, 32) * 2 - 1, "z_d": torch.randn(4, 16)}
    total, scalars = phases["D"].loss(batch)
    (real, fake), = spied
    assert torch.equal(fake, seen[0]) and torch.equal(real, seen[1])  # the augmented fakes and reals
    torch.testing.assert_close(total, scalars["loss/D"] + 10.0 * scalars["loss/gp"])


def test_resuming_with_changed_params_is_refused(images, tmp_path):
    run(params("lightweight"), images, tmp_path)
    with pytest.raises(checkpoint.ParamsMismatch, match=r"train.lr_g: 0.0002 -> 0.001"):
        run(params("lightweight", lr_g=0.001, kimg=0.016), images, tmp_path)
    # Run length is not part of the fingerprint: a longer run resumes.
    assert run(params("lightweight", kimg=0.012), images, tmp_path)["progress/kimg"] == 0.012


def test_nan_loss_raises_and_keeps_the_last_good_state(images, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = losses.g_hinge

    def g_hinge_nan_at_step_3(logits):
        loss = real(logits)
        calls["n"] += 1
        return loss * float("nan") if calls["n"] == 4 else loss  # the 4th minibatch is step 3

    monkeypatch.setattr(losses, "g_hinge", g_hinge_nan_at_step_3)
    cfg = params("lightweight", kimg=0.024)
    out, live = tmp_path / "out", tmp_path / "live"
    with pytest.raises(TrainingDiverged, match=r"step 3 \(kimg 0.012\).*loss/G.*last good state is .*state-000000.008.pt"):
        run(cfg, images, out, live)
    states = checkpoint.list_states(out)
    assert [p.name for p in states] == ["state-000000.008.pt"]
    assert checkpoint.load_state(states[0])["progress"]["step"] == 2

    # The last good state resumes; what was logged after it (step 2, tick 2) is redone, not repeated.
    monkeypatch.setattr(losses, "g_hinge", real)
    assert run(cfg, images, out, live)["progress/kimg"] == 0.024
    assert [r["step"] for r in loss_rows(out)] == list(range(6))
    history = (live / "plots" / "metrics" / "loss" / "G.tsv").read_text().splitlines()[1:]
    assert [int(line.split("\t")[0]) for line in history] == list(range(6))


@pytest.mark.parametrize("arch", ["stylegan2", "resnet-wgan-gp"])
def test_resume_from_another_run_initialises_weights_and_restarts_kimg(arch, images, tmp_path):
    donor = tmp_path / "donor"
    run(params(arch, critic_steps=1), images, donor)  # G trains in both of the donor's steps
    cfg = params(arch, kimg=0.004, lr_g=1e-12, lr_d=1e-12,
                 resume_from=str(checkpoint.latest_state(donor)), ema_kimg=0)
    run(cfg, images, tmp_path / "child")
    child = checkpoint.load_state(checkpoint.latest_state(tmp_path / "child"))
    parent = checkpoint.load_state(checkpoint.latest_state(donor))
    assert child["kimg"] == 0.004 and child["progress"]["step"] == 1
    fresh = TrainParams(**{**cfg.model_dump(), "resume_from": None})
    run(fresh, images, tmp_path / "fresh")
    scratch = checkpoint.load_state(checkpoint.latest_state(tmp_path / "fresh"))
    for key in ("G", "D"):
        name = next(n for n, v in parent[key].items() if v.is_floating_point() and "weight" in n)
        torch.testing.assert_close(child[key][name], parent[key][name], rtol=0, atol=1e-6)
        assert (scratch[key][name] - parent[key][name]).abs().max() > 1e-5

    # resume_from is ignored once the run has a state of its own.
    again = cfg.model_copy(update={"kimg": 0.008, "resume_from": str(tmp_path / "does-not-exist.pt")})
    assert run(again, images, tmp_path / "child")["progress/kimg"] == 0.008

    with pytest.raises(ValueError, match=f"holds a {arch} generator"):
        run(params("lightweight", resume_from=str(donor / "generator.pt")), images, tmp_path / "other")


def test_batch_not_divisible_by_the_processes_is_refused(images, tmp_path, monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    with pytest.raises(ValueError, match="train.batch = 4 is not divisible by the 3 training processes"):
        run(params("lightweight"), images, tmp_path)


@pytest.mark.slow
def test_fid_is_measured_against_the_reference_and_skipped_without_one(images, tmp_path, caplog):
    cfg = params("lightweight", fid_every_kimg=0.008, fid_images=4)
    stats = run(cfg, images, tmp_path / "a", tmp_path / "live", fid_reference=images,
                metrics_cache=tmp_path / "cache")
    assert stats["metrics/fid"] > 0 and np.isfinite(stats["metrics/kid"])
    assert (tmp_path / "live" / "plots" / "metrics" / "metrics" / "fid.tsv").is_file()
    assert any((tmp_path / "cache").rglob("set-*.npz"))  # reference features cached
    lonely = tmp_path / "one"
    lonely.mkdir()
    (lonely / "x.png").write_bytes((images / "0.png").read_bytes())
    with caplog.at_level("INFO"):
        stats = run(cfg, images, tmp_path / "b", fid_reference=lonely)
    assert "metrics/fid" not in stats and "FID off" in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["lightweight", "wgan-gp"])
def test_two_processes_hold_identical_weights(arch, images, tmp_path, free_port):
    # Each rank saves what the shared state file holds after training, and its own live networks.
    # wgan-gp: critic steps, and a gradient penalty drawn from each process's own stream.
    port = free_port
    torch.multiprocessing.spawn(_ddp_worker_live, args=(port, str(images), str(tmp_path), arch), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"live{r}.pt") for r in (0, 1))
    for key in ("G", "D"):
        for name in r0[key]:
            assert torch.equal(r0[key][name], r1[key][name]), f"{key}.{name}"
    state = checkpoint.load_state(checkpoint.latest_state(tmp_path / "out"))
    assert state["progress"]["nimg"] == 8 and len(state["rng"]) == 2
    assert len(loss_rows(tmp_path / "out")) == 2  # rank 0 alone writes the files


def _ddp_worker_live(rank: int, port: int, images: str, tmp: str, arch: str) -> None:
    """Train on 2 processes (2 images each), then save this process's own networks."""
    import lowshot.train.gan_loop as loop

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    nets = {}
    original = loop.make_recipe

    def capture(cfg, model):
        recipe = original(cfg, model)
        build = recipe.build

        def build_and_keep():
            nets["G"], nets["D"] = build()
            return nets["G"], nets["D"]

        recipe.build = build_and_keep
        return recipe

    loop.make_recipe = capture
    try:
        run(params(arch, aug={"kind": "ada"}, critic_steps=1 if arch == "lightweight" else 2), Path(images),
            Path(tmp) / "out")
        torch.save({k: {n: t.detach().clone() for n, t in m.state_dict().items()} for k, m in nets.items()},
                   Path(tmp) / f"live{rank}.pt")
    finally:
        loop.make_recipe = original
        distributed.cleanup()


@pytest.mark.parametrize("shrink,expected", [(2, 2), (1, 4), (8, 1)])
def test_path_length_runs_on_the_shrunk_batch(shrink, expected, images, tmp_path, monkeypatch):
    seen: list[int] = []
    penalty = losses.PathLengthPenalty.__call__
    monkeypatch.setattr(losses.PathLengthPenalty, "__call__",
                        lambda self, img, ws, *a, **kw: seen.append(len(img)) or penalty(self, img, ws, *a, **kw))
    run(params("stylegan2", batch=4, pl_interval=1, pl_batch_shrink=shrink), images, tmp_path / "out")
    assert seen and set(seen) == {expected}  # NVlabs' pl_batch_shrink: batch 4 / 2 = 2 latents
