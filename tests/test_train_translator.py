"""The translator loop (CycleGAN, CUT, FastCUT) on tiny networks and 32 px crops of 40 px images, on CPU:
training and the inference snapshot, exact resume, params checks, the learning-rate rule, divergence,
PatchNCE's shared patch positions, the weighted Monet sources and the crop data path, metrics, DDP."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from pydantic import ValidationError
import torch

from lowshot.models.cyclegan import CycleGANConfig
from lowshot.params import CycleGANParams
from lowshot.augment import AdaController
from lowshot.train import checkpoint, distributed, losses, translator_loop
from lowshot.models.cut import PatchSampleMLP
from lowshot.precision import Precision
from lowshot.train.data import ImageDataset, InfiniteSampler, WeightedSampler
from lowshot.train.translator_loop import (EVAL_SIZE, LOSSES_FILE, PHOTO2MONET_FILE, TrainingDiverged,
                                           load_photo2monet, load_size, lr_factor, model_config,
                                           train_translator)

NETS = {"cyclegan": ("G_AB", "G_BA", "D_A", "D_B"), "cut": ("G_AB", "H", "D_B"), "fastcut": ("G_AB", "H", "D_B")}
G_LOSSES = {"loss/G", "loss/G_AB", "loss/G_BA", "loss/cycle_A", "loss/cycle_B", "loss/idt_A", "loss/idt_B"}
D_LOSSES = {"loss/D_A", "loss/D_B"}
LOSSES = {"cyclegan": G_LOSSES | D_LOSSES, "cut": {"loss/G", "loss/G_AB", "loss/NCE", "loss/NCE_Y", "loss/D_B"},
          "fastcut": {"loss/G", "loss/G_AB", "loss/NCE", "loss/D_B"}}
BF16 = Precision(bf16=True, channels_last=True, reason="test")


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks: threads only add contention


def write_images(folder: Path, count: int, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        PIL.Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    return {"photos": write_images(root / "photos", 6, 0), "real": write_images(root / "real", 3, 1),
            "ranked": write_images(root / "ranked", 4, 2)}


def params(**kw) -> CycleGANParams:
    # 2 steps per epoch, 1 constant + 1 decaying epoch: 4 steps.
    base = dict(model="cyclegan", size=32, batch=2, epochs=1, decay_epochs=1, epoch_images=4, pool_size=3,
                eval_every=None, grid_size=3, workers=1)
    return CycleGANParams(**{**base, **kw})


def run(cfg: CycleGANParams, data: dict[str, Path], out: Path, live: Path | None = None, *, monet=None,
        model: CycleGANConfig | None = None, **kw) -> dict:
    monet = monet if monet is not None else [(data["real"], 1.0), (data["ranked"], 1.0)]
    return train_translator(cfg, photos=data["photos"], monet=monet, out_dir=out, live_dir=live, device="cpu",
                            seed=0, model=model or CycleGANConfig.tiny(), progress=False, **kw)


def loss_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / LOSSES_FILE).read_text().splitlines()]


def history(live: Path, name: str) -> list[tuple[int, float]]:
    """(step, value) rows of a dvclive metric (the timestamp column left out)."""
    header, *rows = (live / "plots" / "metrics" / f"{name}.tsv").read_text().splitlines()
    cols = header.split("\t")
    return [(int(r.split("\t")[cols.index("step")]), float(r.split("\t")[-1])) for r in rows]


# --- training and the snapshot ----------------------------------------------------------------------


@pytest.mark.parametrize("variant, precision", [
    ({}, None),
    ({"gan_loss": "hinge", "lambda_identity": 0.0, "diffaugment": "", "pool_size": 0, "upsample": "resize"}, BF16),
    ({"gan_loss": "vanilla", "mirror": False, "diffaugment": "translation"}, None),
    ({"model": "cut", "upsample": "resize"}, None),
    ({"model": "fastcut", "nce_patches": 7}, BF16),
    ({"model": "cut", "nce_idt": False, "pool_size": 2, "gan_loss": "hinge"}, None),
])
def test_trains_and_leaves_a_usable_photo2monet(variant, precision, data, tmp_path, caplog):
    cfg = params(**variant)
    empty = tmp_path / "empty"
    empty.mkdir()
    monet = [(data["real"], 1.0), (empty, 1.0), (data["ranked"], 0.0)]
    out, live = tmp_path / "out", tmp_path / "live"
    with caplog.at_level(logging.WARNING):
        stats = run(cfg, data, out, live, monet=monet, **({"precision": precision} if precision else {}))
    assert "empty dropped: no images" in caplog.text and "ranked dropped: weight 0" in caplog.text

    expected = LOSSES[cfg.model] - ({"loss/idt_A", "loss/idt_B"} if not cfg.lambda_identity else set()) \
        - ({"loss/NCE_Y"} if cfg.nce_idt is False else set())
    assert expected <= set(stats) and all(np.isfinite(v) for v in stats.values())
    assert stats["progress/epoch"] == 2 and stats["optim/lr"] == pytest.approx(cfg.lr / 2)
    rows = loss_rows(out)
    assert [(r["step"], r["epoch"]) for r in rows] == [(0, 0), (1, 0), (2, 1), (3, 1)]
    assert all(set(r) == expected | {"step", "epoch"} for r in rows)
    assert [p.name for p in checkpoint.list_states(out)] == ["state-000001.000.pt", "state-000002.000.pt"]

    G = load_photo2monet(out / PHOTO2MONET_FILE, "cpu")
    assert G.epoch == 2 and G.arch == cfg.model and G.config_dict == CycleGANConfig.tiny().to_dict()
    assert set(checkpoint.load_state(checkpoint.latest_state(out))) >= set(NETS[cfg.model])
    y = G(torch.rand(2, 3, 40, 44) * 2 - 1)  # any size that is a multiple of 4
    assert y.shape == (2, 3, 40, 44) and torch.isfinite(y).all() and y.abs().max() <= 1
    state = checkpoint.load_state(checkpoint.latest_state(out))
    torch.testing.assert_close(G.state_dict(), state["G_AB"])

    assert [v for _, v in history(live, "optim/lr")] == pytest.approx([cfg.lr, cfg.lr / 2])
    assert [s for s, _ in history(live, "loss/D_B")] == [0, 1]
    assert (live / "plots" / "metrics" / "speed" / "images_per_sec.tsv").is_file()
    grids = live / "plots" / "images" / "translations"
    assert sorted(p.name for p in grids.iterdir()) == ["0.png", "1.png"]
    # Whole photos at the size translate writes, over their translations.
    assert PIL.Image.open(grids / "0.png").size == (3 * EVAL_SIZE + 4 * 2, 2 * EVAL_SIZE + 3 * 2)


def test_residual_antialiased_cut_trains_and_resumes_exactly(data, tmp_path):
    model = CycleGANConfig(ngf=8, ndf=8, g_blocks=2, residual=True, antialias=True)
    cfg = params(epoch_images=6, model="cut")
    run(cfg, data, tmp_path / "whole", model=model, precision=BF16)
    run(cfg, data, tmp_path / "parts", model=model, precision=BF16, max_steps=4)
    run(cfg, data, tmp_path / "parts", model=model, precision=BF16)
    assert loss_rows(tmp_path / "parts") == loss_rows(tmp_path / "whole") and len(loss_rows(tmp_path / "whole")) == 6
    G = load_photo2monet(tmp_path / "whole" / PHOTO2MONET_FILE)
    assert G.residual and G.config_dict == model.to_dict()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert 0 < (G(x) - x).abs().mean() < 0.5  # trained away from the identity it started as, not to noise


def test_cut_antialiases_by_default_and_cyclegan_does_not():
    assert model_config(params(model="cut")).antialias and model_config(params(model="fastcut")).antialias
    assert not model_config(params(model="cyclegan")).antialias
    assert not model_config(params(model="cut", antialias=False)).antialias
    assert not model_config(params(model="cut")).residual and model_config(params(model="cut", residual=True)).residual


def test_without_monet_images_the_error_names_every_source(data, tmp_path):
    why = r"no Monet images.*nowhere \(0 images, weight 1\).*real \(3 images, weight 0\)"
    with pytest.raises(ValueError, match=why):
        run(params(), data, tmp_path / "out", monet=[(tmp_path / "nowhere", 1.0), (data["real"], 0.0)])


def test_batch_not_divisible_by_the_processes_is_refused(data, tmp_path, monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    with pytest.raises(ValueError, match="cyclegan.batch = 2 is not divisible by the 3 training processes"):
        run(params(), data, tmp_path)


def test_patches_defaults_are_one_set():
    """params.yaml's patch_* defaults and the translator's own (which an old photo2monet.pt falls back on) agree."""
    from lowshot.models.patch_transfer import PatchTransferConfig

    assert translator_loop.patch_config(CycleGANParams()) == PatchTransferConfig()


def test_patches_translator_keeps_the_paintings_and_rebuilds_photos_from_them(data, tmp_path):
    """model: patches learns nothing: photo2monet.pt holds every painting of the weighted sources at 256 px,
    loads as a PatchTransfer, logs its translation grid, and its keys leave other models' runs alone."""
    from lowshot.models.patch_transfer import PatchTransfer

    cfg = params(model="patches", patch_size=16, patch_descriptor=4, patch_stride=8, patch_colour=0.5, patch_detail=2.0)
    stats = run(cfg, data, tmp_path / "out", tmp_path / "live", monet=[(data["real"], 1.0), (data["ranked"], 0.0)])
    assert stats["patches/paintings"] == 3  # the real three; ranked has weight 0
    G = load_photo2monet(tmp_path / "out" / PHOTO2MONET_FILE)
    assert isinstance(G, PatchTransfer) and G.arch == "patches"
    assert tuple(G.paintings.shape) == (3, 3, EVAL_SIZE, EVAL_SIZE)
    assert (G.config.patch, G.config.descriptor, G.config.bank_stride, G.config.colour, G.config.detail) == \
        (16, 4, 8, 0.5, 2.0)
    assert stats["patches/bank"] == G.bank_size == 2 * 3 * ((EVAL_SIZE - 16) // 8 + 1) ** 2  # mirrors too
    assert (tmp_path / "live" / "plots" / "images" / "translations" / "0.png").is_file()
    photo = torch.rand(1, 3, 64, 64) * 2 - 1
    assert G(photo).shape == photo.shape
    fingerprint = translator_loop.run_fingerprint(params(model="cut"), 0, "d")
    assert fingerprint == translator_loop.run_fingerprint(params(model="cut", patch_size=32), 0, "d")
    assert translator_loop.run_fingerprint(cfg, 0, "d") != \
        translator_loop.run_fingerprint(cfg.model_copy(update={"patch_size": 32}), 0, "d")


def test_patch_params_are_checked():
    with pytest.raises(ValidationError, match="patch_size .*patch_descriptor"):
        params(model="patches", patch_size=16, patch_descriptor=3)


# --- resume -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["cyclegan", "cut", "fastcut"])
def test_killed_run_resumes_exactly(model, data, tmp_path):
    # 3 steps per epoch; kills at step 2 (mid epoch 0) and step 4 (mid epoch 1). The pool fills and
    # swaps, crops, flips, DiffAugment, patch positions and FastCUT's flips draw: every random stream
    # is exercised.
    cfg = params(epoch_images=6, model=model, pool_size=3)
    run(cfg, data, tmp_path / "whole", tmp_path / "live_whole")
    out, live = tmp_path / "parts", tmp_path / "live_parts"
    run(cfg, data, out, live, max_steps=2)
    assert checkpoint.latest_state(out).name == "state-000000.666.pt"
    run(cfg, data, out, live, max_steps=2)
    assert checkpoint.latest_state(out).name == "state-000001.333.pt"
    run(cfg, data, out, live)

    assert loss_rows(out) == loss_rows(tmp_path / "whole")  # every loss of every step, bit for bit
    assert len(loss_rows(out)) == 6
    # Epoch means cover the steps before and after each kill.
    assert history(live, "loss/G") == history(tmp_path / "live_whole", "loss/G")
    a = checkpoint.load_state(checkpoint.latest_state(out))
    b = checkpoint.load_state(checkpoint.latest_state(tmp_path / "whole"))
    assert a["epoch"] == b["epoch"] == 2.0
    for key in NETS[model]:
        for name in b[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name}"
    pools_a, pools_b = a["local"][0]["pools"]["B"]["images"], b["local"][0]["pools"]["B"]["images"]
    assert len(pools_b) == 3 and all(torch.equal(x, y) for x, y in zip(pools_a, pools_b))


def test_ada_raises_p_while_d_is_sure_of_the_monets_and_resumes_exactly(data, tmp_path, monkeypatch):
    # Every D(real) counted as sure (midpoint far below): p climbs 8 images / 40 = 0.2 every 4 minibatches.
    monkeypatch.setitem(translator_loop.REAL_MIDPOINT, "lsgan", -1e3)
    cfg = params(epoch_images=12, model="cut", pool_size=0, ada_target=0.6, ada_kimg=0.04)  # 6 steps per epoch
    run(cfg, data, tmp_path / "whole")
    rows = loss_rows(tmp_path / "whole")
    assert [r["aug/p"] for r in rows] == pytest.approx([0] * 3 + [0.2] * 4 + [0.4] * 4 + [0.6])
    # Until p leaves 0, D sees what it sees without ADA; then the transforms change its inputs.
    run(params(epoch_images=12, model="cut", pool_size=0), data, tmp_path / "plain")
    plain = loss_rows(tmp_path / "plain")
    assert [r["loss/D_B"] for r in rows[:4]] == [r["loss/D_B"] for r in plain[:4]]
    assert all(a["loss/D_B"] != b["loss/D_B"] for a, b in zip(rows[4:], plain[4:]))
    # Killed mid-interval (step 2) and right after an adjustment (step 7): the same steps, bit for bit.
    run(cfg, data, tmp_path / "parts", max_steps=2)
    run(cfg, data, tmp_path / "parts", max_steps=5)
    run(cfg, data, tmp_path / "parts")
    assert loss_rows(tmp_path / "parts") == rows
    assert checkpoint.load_state(checkpoint.latest_state(tmp_path / "parts"))["ada"]["p"] == pytest.approx(0.6)


def test_ema_generator_is_the_product_and_resumes_exactly(data, tmp_path):
    cfg = params(epoch_images=6, model="cut", ema_kimg=0.004, ema_rampup=None)  # half-life 2 steps of 2 photos
    run(cfg, data, tmp_path / "whole")
    run(cfg, data, tmp_path / "parts", max_steps=2)
    run(cfg, data, tmp_path / "parts")
    whole = checkpoint.load_state(checkpoint.latest_state(tmp_path / "whole"))
    parts = checkpoint.load_state(checkpoint.latest_state(tmp_path / "parts"))
    for name, w in whole["G_ema"].items():
        assert torch.equal(parts["G_ema"][name], w), name
    G = load_photo2monet(tmp_path / "whole" / PHOTO2MONET_FILE)
    ema, trained = whole["G_ema"], whole["G_AB"]
    for name, w in G.state_dict().items():
        assert torch.equal(w, ema[name]), name  # the average is what translate loads
    from_state = load_photo2monet(checkpoint.latest_state(tmp_path / "whole")).state_dict()
    assert all(torch.equal(w, ema[name]) for name, w in from_state.items())
    # The average lies between where the weights were and where they are: not the last step's weights.
    assert any(not torch.equal(ema[k], trained[k]) for k in trained if trained[k].is_floating_point())
    assert G.epoch == 2.0


@pytest.mark.parametrize("model", ["cyclegan", "cut"])
def test_colour_anchor_is_part_of_the_generators_loss(model, data, tmp_path):
    run(params(model=model, lambda_colour=3.0, colour_pool=8), data, tmp_path / "run")
    rows = loss_rows(tmp_path / "run")
    for r in rows:
        assert r["loss/colour"] > 0
        if model == "cut":  # G = adversarial + PatchNCE (mean of photo and Monet terms) + 3 x anchor
            rest = r["loss/G_AB"] + 0.5 * (r["loss/NCE"] + r["loss/NCE_Y"])
        else:
            rest = r["loss/G_AB"] + r["loss/G_BA"] + 10 * (r["loss/cycle_A"] + r["loss/cycle_B"]) + \
                5 * (r["loss/idt_A"] + r["loss/idt_B"])
        assert r["loss/G"] == pytest.approx(rest + 3.0 * r["loss/colour"], rel=1e-5)


def test_colour_anchor_compares_a_flipped_translation_with_the_flipped_photo(data, tmp_path):
    # A residual generator that (almost) does not learn stays the identity: the anchor is ~0 on every
    # step, flipped or not; against the unflipped photo it would be the photo's asymmetry, ~0.1 here.
    cfg = params(model="fastcut", residual=True, lr=1e-12, lambda_colour=1.0, colour_pool=4, epoch_images=12)
    run(cfg, data, tmp_path / "run", model=CycleGANConfig(ngf=8, ndf=8, g_blocks=2, residual=True))
    assert max(r["loss/colour"] for r in loss_rows(tmp_path / "run")) < 2e-3


def test_ada_measures_lsgan_outputs_from_their_midpoint():
    ada = AdaController(1, target=0.5, speed_kimg=1, interval=1)
    translator_loop._observe_real(ada, translator_loop.REAL_MIDPOINT["lsgan"], torch.tensor([0.6, 0.7, 0.4, 0.9]))
    ada.step()
    assert ada.r_t == 0.5  # three outputs nearer the real target 1, one nearer the fake target 0


def test_changed_params_are_refused_unless_the_learning_rate_so_far_stays(data, tmp_path, caplog):
    cfg = params(epoch_images=2)  # 1 step per epoch
    run(cfg, data, tmp_path / "a")
    with pytest.raises(checkpoint.ParamsMismatch, match=r"cyclegan.lr: 0.0002 -> 0.001"):
        run(params(epoch_images=2, lr=0.001, decay_epochs=2), data, tmp_path / "a")
    with pytest.raises(checkpoint.ParamsMismatch, match=r"epochs / decay_epochs 1 / 1 -> 2 / 2 change the learning"):
        run(params(epoch_images=2, epochs=2, decay_epochs=2), data, tmp_path / "a")
    with pytest.raises(checkpoint.ParamsMismatch, match=r"data: '"):  # other Monet weights: other data
        run(cfg, data, tmp_path / "a", monet=[(data["real"], 1.0), (data["ranked"], 2.0)])

    # Stopped in its constant phase, a run may be lengthened; cadence keys may change freely.
    run(params(epoch_images=2, epochs=2), data, tmp_path / "b", max_steps=1)
    longer = params(epoch_images=2, epochs=3, grid_size=2, keep_snapshots=1, eval_every=5)
    with caplog.at_level(logging.INFO):
        stats = run(longer, data, tmp_path / "b")
    assert "resuming from epoch 1 step 1" in caplog.text
    assert stats["progress/epoch"] == 4 and [r["step"] for r in loss_rows(tmp_path / "b")] == [0, 1, 2, 3]


def test_keys_of_a_feature_that_is_off_do_not_block_a_resume(data, tmp_path):
    cfg = params(epoch_images=2)
    run(cfg, data, tmp_path / "a", max_steps=1)
    # ADA and EMA off: their settings change nothing learned (and a run from before they existed lacks them).
    fingerprint = checkpoint.load_state(checkpoint.latest_state(tmp_path / "a"))["params"]
    assert not any(k.startswith(("cyclegan.ada_", "cyclegan.ema_", "cyclegan.colour_")) for k in fingerprint)
    run(params(epoch_images=2, ada_kimg=9.0, ema_rampup=None, colour_pool=4), data, tmp_path / "a")
    assert len(loss_rows(tmp_path / "a")) == 2
    with pytest.raises(checkpoint.ParamsMismatch, match=r"cyclegan.ema_kimg: '<absent>' -> 0.5"):
        run(params(epoch_images=2, ema_kimg=0.5), data, tmp_path / "a")


def test_a_state_saved_under_bf16_resumes_under_fp32(data, tmp_path):
    cfg = params(model="cut", epoch_images=4)
    run(cfg, data, tmp_path / "out", precision=BF16, max_steps=3)
    assert run(cfg, data, tmp_path / "out")["progress/epoch"] == 2
    assert [r["step"] for r in loss_rows(tmp_path / "out")] == [0, 1, 2, 3]


def test_patchnce_compares_the_translation_and_the_photo_at_the_same_positions(data, tmp_path, monkeypatch):
    calls = []
    forward = PatchSampleMLP.forward

    def record(self, feats, patches, ids=None, generator=None):
        out, used = forward(self, feats, patches, ids, generator)
        calls.append(([tuple(f.shape) for f in feats], ids is None, [u.clone() for u in used]))
        return out, used

    monkeypatch.setattr(PatchSampleMLP, "forward", record)
    run(params(model="cut", nce_patches=5, epoch_images=2, epochs=1, decay_epochs=0), data, tmp_path / "out")
    # Per step: keys (fresh positions) then queries (given the keys' positions), for photos then Monets.
    assert len(calls) == 4
    for keys, queries in (calls[0:2], calls[2:4]):
        assert keys[1] and not queries[1]
        assert keys[0] == queries[0]  # same layers, same shapes
        assert all(torch.equal(k, q) for k, q in zip(keys[2], queries[2]))
        assert [len(ids) for ids in keys[2]] == [min(5, h * w) for _, _, h, w in keys[0]]
    assert not all(torch.equal(a, b) for a, b in zip(calls[0][2], calls[2][2]))  # redrawn per call


def test_learning_rate_is_constant_then_decays_linearly():
    assert [lr_factor(e, 2, 3) for e in range(6)] == [1.0, 1.0, 0.75, 0.5, 0.25, 0.0]
    # The paper's 100 + 100 epochs: the 101st epoch is the first decayed, the last runs at 1/101.
    assert lr_factor(99, 100, 100) == 1.0
    assert lr_factor(100, 100, 100) == pytest.approx(100 / 101)
    assert lr_factor(199, 100, 100) == pytest.approx(1 / 101)
    assert lr_factor(0, 0, 1) == 0.5 and lr_factor(3, 4, 0) == 1.0


def test_nan_loss_raises_naming_the_step_and_keeps_the_last_good_state(data, tmp_path, monkeypatch):
    real, calls = losses.gan_loss, {"n": 0}

    def nan_in_step_3(*args, **kw):
        calls["n"] += 1
        loss = real(*args, **kw)
        return loss * float("nan") if calls["n"] == 3 * 6 + 1 else loss  # 6 calls a step; G_AB's comes first

    monkeypatch.setattr(losses, "gan_loss", nan_in_step_3)
    out = tmp_path / "out"
    with pytest.raises(TrainingDiverged,
                       match=r"step 3 \(epoch 1\), phase G: non-finite total, loss/G, loss/G_AB .*state-000001.000.pt"):
        run(params(), data, out)
    states = checkpoint.list_states(out)
    assert [p.name for p in states] == ["state-000001.000.pt"]
    assert checkpoint.load_state(states[0])["progress"]["step"] == 2

    monkeypatch.setattr(losses, "gan_loss", real)
    assert run(params(), data, out)["progress/epoch"] == 2
    assert [r["step"] for r in loss_rows(out)] == [0, 1, 2, 3]


# --- data -------------------------------------------------------------------------------------------


def test_weighted_sampler_follows_the_weights_and_resumes():
    sampler = WeightedSampler([3, 5, 4], [3.0, 0.0, 1.0], seed=0, mirror=True)
    entries, flips, _ = sampler.take(4000)
    sources = sampler.source_of(entries)
    counts = np.bincount(sources, minlength=3)
    assert counts[1] == 0  # weight 0: never drawn
    assert 2.7 < counts[0] / counts[2] < 3.3  # 3:1
    # Each source is walked in its own permutations: its first draws cover it once.
    assert sorted(entries[sources == 0][:3].tolist()) == [0, 1, 2]
    assert sorted(entries[sources == 2][:4].tolist()) == [8, 9, 10, 11]
    assert flips.any() and not flips.all()

    first = WeightedSampler([3, 5, 4], [3.0, 0.0, 1.0], seed=0, mirror=True)
    head = first.take(1500)[0]
    resumed = WeightedSampler([3, 5, 4], [3.0, 0.0, 1.0], seed=0, mirror=True)
    resumed.load_state_dict(first.state_dict())
    assert np.array_equal(np.concatenate([head, resumed.take(2500)[0]]), entries)
    ranks = [WeightedSampler([3, 4], [1, 1], seed=1, mirror=False, rank=r, world=2).next_items(5)[0] for r in (0, 1)]
    single = WeightedSampler([3, 4], [1, 1], seed=1, mirror=False).take(10)[0]
    assert ranks[0].tolist() == single[0::2].tolist() and ranks[1].tolist() == single[1::2].tolist()


def test_images_are_loaded_larger_and_cropped(data):
    assert load_size(params(size=256)) == 286 and load_size(params(size=32)) == 36
    assert load_size(params(size=128, load_size=256)) == 256
    with pytest.raises(ValueError, match=r"load_size \(100\) must be >= cyclegan.size \(128\)"):
        params(size=128, load_size=100)
    ds = ImageDataset([(data["photos"], 1)], 32, load_size=36, workers=1)
    assert ds.images.shape[-2:] == (36, 36) and ds.crop_range == 4
    full = ds.images[0].float() / 127.5 - 1
    x = ds.batch(torch.tensor([0, 0, 0]), torch.tensor([False, False, True]), torch.tensor([[0, 4], [4, 0], [4, 0]]))
    assert x.shape == (3, 3, 32, 32)
    torch.testing.assert_close(x[0], full[:, 0:32, 4:36])
    torch.testing.assert_close(x[1], full[:, 4:36, 0:32])
    torch.testing.assert_close(x[2], x[1].flip(2))
    torch.testing.assert_close(ds[0], full[:, 2:34, 2:34])  # centre crop without offsets
    # The crop option adds offsets without changing the order or flips of a stream.
    plain = InfiniteSampler(6, seed=3, mirror=True).next_items(9)
    cropped = InfiniteSampler(6, seed=3, mirror=True, crop=4).next_items(9)
    assert torch.equal(plain[0], cropped[0]) and torch.equal(plain[1], cropped[1])
    assert not plain[2].any() and cropped[2].max() <= 4 and cropped[2].any()


# --- metrics and DDP --------------------------------------------------------------------------------


def test_select_best_publishes_the_epoch_of_lowest_kid_and_survives_a_kill(data, tmp_path, monkeypatch):
    import lowshot.train.translator_loop as loop

    kids = iter([0.30, 0.10, 0.20, 0.30, 0.10, 0.20])  # epochs 1-3 of the whole run, then of the killed one

    def fake_evaluator(*args, **kwargs):
        return lambda G: {"metrics/fid": 1.0, "metrics/kid": next(kids), "metrics/mifid": 1.0}

    monkeypatch.setattr(loop, "_make_evaluator", fake_evaluator)
    cfg = params(epochs=2, decay_epochs=1, eval_every=1, select="best", keep_snapshots=5)
    stats = run(cfg, data, tmp_path / "whole")
    G = load_photo2monet(tmp_path / "whole" / PHOTO2MONET_FILE)
    epoch2 = checkpoint.load_state(tmp_path / "whole" / "state-000002.000.pt")
    assert G.epoch == 2 and stats["metrics/best_kid"] == 0.10 and stats["metrics/kid"] == 0.20
    torch.testing.assert_close(G.state_dict(), epoch2["G_AB"])
    assert checkpoint.load_state(checkpoint.latest_state(tmp_path / "whole"))["best"] == {"kid": 0.10, "epoch": 2.0}

    run(cfg, data, tmp_path / "killed", max_steps=5)  # stops mid epoch 3, after the best
    run(cfg, data, tmp_path / "killed")
    resumed = load_photo2monet(tmp_path / "killed" / PHOTO2MONET_FILE)
    assert resumed.epoch == 2
    torch.testing.assert_close(resumed.state_dict(), G.state_dict())


def test_select_best_needs_the_in_training_metric(data, tmp_path):
    with pytest.raises(ValidationError, match="set cyclegan.eval_every"):
        params(select="best")
    with pytest.raises(ValueError, match="select: best needs the in-training KID"):
        run(params(select="best", eval_every=1), data, tmp_path / "out")  # no reference folder given


@pytest.mark.slow
def test_eval_metrics_are_logged_against_the_reference(data, tmp_path):
    cfg = params(epoch_images=2, eval_every=1, eval_images=3)
    stats = run(cfg, data, tmp_path / "out", tmp_path / "live", eval_reference=data["ranked"],
                metrics_cache=tmp_path / "cache")
    assert {"metrics/fid", "metrics/kid", "metrics/mifid"} <= set(stats)
    assert stats["metrics/fid"] > 0 and np.isfinite(stats["metrics/kid"]) and stats["metrics/mifid"] > 0
    assert [s for s, _ in history(tmp_path / "live", "metrics/mifid")] == [0, 1]
    assert any((tmp_path / "cache").rglob("set-*.npz"))  # reference features cached
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["cyclegan", "cut"])
def test_two_processes_hold_identical_weights(model, data, tmp_path, free_port):
    port = free_port
    torch.multiprocessing.spawn(_ddp_worker, args=(port, {k: str(v) for k, v in data.items()}, str(tmp_path), model),
                                nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"nets{r}.pt") for r in (0, 1))
    for name in r0:
        assert torch.equal(r0[name], r1[name]), name
    state = checkpoint.load_state(checkpoint.latest_state(tmp_path / "out"))
    assert state["progress"]["step"] == 4 and len(state["local"]) == 2
    assert len(loss_rows(tmp_path / "out")) == 4  # rank 0 alone writes the files


def _ddp_worker(rank: int, port: int, data: dict[str, str], tmp: str, model: str) -> None:
    """Train on 2 processes (1 image pair each), then save this process's own networks."""
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    kept = {}
    original = torch.nn.ModuleDict.__init__

    def keep(self, modules=None):
        original(self, modules)
        if modules and set(modules) == set(NETS[model]):
            kept["nets"] = self

    torch.nn.ModuleDict.__init__ = keep
    try:
        run(params(model=model), {k: Path(v) for k, v in data.items()}, Path(tmp) / "out")
        torch.save({k: v.detach().clone() for k, v in kept["nets"].state_dict().items()}, Path(tmp) / f"nets{rank}.pt")
    finally:
        torch.nn.ModuleDict.__init__ = original
        distributed.cleanup()
