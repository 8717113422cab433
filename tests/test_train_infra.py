"""Training infrastructure: EMA, checkpoints and params fingerprints, RNG states, the data sampler."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from torch import nn

from lowshot.params import TrainParams
from lowshot.train import checkpoint, distributed
from lowshot.train.data import ImageDataset, InfiniteSampler
from lowshot.train.ema import ema_beta, make_ema, update_ema


def write_images(folder: Path, count: int, size: int = 32, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        PIL.Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return folder


# --- EMA ----------------------------------------------------------------------------------------


def test_ema_beta_follows_the_half_life_in_images():
    # After half_life_kimg * 1000 images, i.e. that many / batch steps, the old weights count half.
    beta = ema_beta(16, 5.0, cur_nimg=10**6, rampup=None)
    assert beta ** (5000 / 16) == pytest.approx(0.5)
    # Ramp-up caps the half-life at rampup * images seen: 0.05 * 1000 = 50 images.
    assert ema_beta(16, 5.0, cur_nimg=1000, rampup=0.05) == pytest.approx(0.5 ** (16 / 50))
    assert ema_beta(16, 5.0, cur_nimg=10**6, rampup=0.05) == pytest.approx(beta)
    assert ema_beta(16, 5.0, cur_nimg=0, rampup=0.05) == 0.0  # the first step copies
    assert ema_beta(16, 0.0, cur_nimg=10**6) == 0.0  # no EMA: G_ema is G


def test_update_ema_averages_parameters_and_copies_buffers():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    ema = make_ema(model)
    before = [p.clone() for p in ema.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.train()(torch.randn(8, 3))  # moves the batch-norm running statistics
    update_ema(ema, model, beta=0.75)
    for old, new, cur in zip(before, ema.parameters(), model.parameters()):
        torch.testing.assert_close(new, 0.75 * old + 0.25 * cur)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        torch.testing.assert_close(b_ema, b)
    assert not any(p.requires_grad for p in ema.parameters())


# --- checkpoints ----------------------------------------------------------------------------------


def test_states_rotate_and_latest_is_the_most_trained(tmp_path):
    for kimg in (0.5, 9.5, 10.0, 100.25):
        checkpoint.save_state(tmp_path, {"kimg": kimg, "w": torch.full((2,), kimg)}, kimg=kimg, keep=2)
    states = checkpoint.list_states(tmp_path)
    assert [checkpoint.load_state(p)["kimg"] for p in states] == [10.0, 100.25]
    assert checkpoint.latest_state(tmp_path) == states[-1]
    torch.testing.assert_close(checkpoint.load_state(states[-1])["w"], torch.full((2,), 100.25))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]  # written atomically
    assert checkpoint.latest_state(tmp_path / "missing") is None


def test_unreadable_state_is_a_clear_error(tmp_path):
    bad = tmp_path / "state-000001.000.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="state-000001.000.pt is unreadable"):
        checkpoint.load_state(bad)


def fingerprint(cfg: TrainParams) -> dict:
    from lowshot.train.gan_loop import run_fingerprint

    return run_fingerprint(cfg, seed=0, data="the same images")


def test_params_mismatch_names_the_differing_keys():
    saved = fingerprint(TrainParams())
    changed = fingerprint(TrainParams(lr_d=0.01, aug={"kind": "ada"}))
    with pytest.raises(checkpoint.ParamsMismatch) as err:
        checkpoint.check_params(saved, changed, source="run/state-000005.000.pt")
    message = str(err.value)
    assert "train.lr_d: 0.0002 -> 0.01" in message
    assert "train.aug.kind: 'diffaugment' -> 'ada'" in message
    assert "train.batch" not in message and "run/state-000005.000.pt" in message


def test_run_length_and_cadence_do_not_change_the_fingerprint():
    base = fingerprint(TrainParams())
    longer = fingerprint(TrainParams(kimg=500, tick_kimg=2, snapshot_kimg=50, fid_every_kimg=None, workers=8))
    assert checkpoint.params_hash(base) == checkpoint.params_hash(longer)
    checkpoint.check_params(base, longer, source="x")  # no error
    assert checkpoint.params_hash(base) != checkpoint.params_hash(fingerprint(TrainParams(batch=24)))


def test_rng_states_round_trip_through_a_state_file(tmp_path):
    gen = torch.Generator().manual_seed(7)

    def draws() -> tuple:
        return (random.random(), float(np.random.rand()), float(torch.rand(1)), float(torch.rand(1, generator=gen)))

    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    draws()
    checkpoint.save_state(tmp_path, {"rng": checkpoint.rng_state({"z": gen})}, kimg=1.0, keep=1)
    expected = [draws() for _ in range(3)]
    random.seed(99), np.random.seed(99), torch.manual_seed(99), gen.manual_seed(99)
    checkpoint.set_rng_state(checkpoint.load_state(checkpoint.latest_state(tmp_path))["rng"], {"z": gen})
    assert [draws() for _ in range(3)] == expected


# --- data -----------------------------------------------------------------------------------------


def test_sampler_resumes_with_the_identical_sequence():
    def stream(sampler: InfiniteSampler, batches: int) -> list[tuple[int, bool]]:
        out = []
        for _ in range(batches):
            entries, flips = sampler.next_batch(3)
            out += list(zip(entries.tolist(), flips.tolist()))
        return out

    whole = stream(InfiniteSampler(7, seed=5, mirror=True), 10)  # crosses four epoch boundaries
    first = InfiniteSampler(7, seed=5, mirror=True)
    head = stream(first, 4)
    resumed = InfiniteSampler(7, seed=5, mirror=True)
    resumed.load_state_dict(first.state_dict())
    assert head + stream(resumed, 6) == whole
    assert sorted(e for e, _ in whole[:7]) == list(range(7))  # each epoch is a permutation
    assert any(f for _, f in whole) and not all(f for _, f in whole)
    assert whole != stream(InfiniteSampler(7, seed=6, mirror=True), 10)


def test_sampler_shards_one_stream_across_processes():
    single = InfiniteSampler(10, seed=0, mirror=False).next_batch(4)[0].tolist()
    rank0 = InfiniteSampler(10, seed=0, mirror=False, rank=0, world=2).next_batch(2)[0].tolist()
    rank1 = InfiniteSampler(10, seed=0, mirror=False, rank=1, world=2).next_batch(2)[0].tolist()
    assert rank0 == single[0::2] and rank1 == single[1::2]


def test_monet_repeat_shows_up_in_sampling_counts(tmp_path):
    ranked = write_images(tmp_path / "ranked", 4, seed=1)
    monet = write_images(tmp_path / "monet", 2, seed=2)
    data = ImageDataset([(ranked, 1), ([*sorted(monet.iterdir())], 3)], 32, workers=1)
    assert len(data) == 4 + 2 * 3
    sampler = InfiniteSampler(len(data), seed=0, mirror=False)
    entries, _ = sampler.next_batch(len(data) * 5)  # five epochs
    counts = np.bincount(data.entries[entries.numpy()], minlength=6)
    assert counts.tolist() == [5, 5, 5, 5, 15, 15]


def test_images_are_resized_scaled_and_mirrored(tmp_path):
    write_images(tmp_path / "a", 2, size=48)
    data = ImageDataset([(tmp_path / "a", 1)], 32, workers=1)
    x = data.batch(torch.tensor([0, 0]), torch.tensor([False, True]))
    assert x.shape == (2, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    torch.testing.assert_close(x[1], x[0].flip(2))


def test_no_images_names_the_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no training images.*empty \(0 images.*nowhere \(0 images"):
        ImageDataset([(tmp_path / "empty", 1), (tmp_path / "nowhere", 5)], 32)


def test_batch_not_divisible_by_processes_names_the_key(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    assert distributed.local_batch(6) == 2
    with pytest.raises(ValueError, match=r"train.batch = 16 is not divisible by the 3 training processes"):
        distributed.local_batch(16)
