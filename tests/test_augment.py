"""DiffAugment, ADA and the ADA p controller: shapes, gradients, identities, the statistics of each
op against its definition, exact pixel moves, determinism and resume."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from lowshot.augment import AdaController, AdaptiveAugment, diff_augment, make_augment
from lowshot.augment.ada import COLOR_OPS, GEOMETRIC_OPS, affine_warp
from lowshot.augment.diffaugment import (
    brightness, contrast, cutout, cutout_side, max_shift, saturation, translation,
)

CPU = torch.device("cpu")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n: int = 4, c: int = 3, h: int = 12, w: int = 20, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    return (torch.rand(n, c, h, w, generator=gen(seed), dtype=dtype) * 2 - 1)


# --------------------------------------------------------------------------------------------
# DiffAugment

@pytest.mark.parametrize("policy", ["color", "translation", "cutout", "color,translation,cutout"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_diff_augment_keeps_shape_and_dtype_and_changes_images(policy, dtype):
    x = images(dtype=dtype)
    y = diff_augment(x, policy, gen(1))
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    assert not torch.equal(y, x)


def test_diff_augment_rejects_unknown_op_by_name():
    with pytest.raises(ValueError, match="colour"):
        diff_augment(images(), "colour,translation")


def test_diff_augment_empty_policy_is_identity():
    x = images()
    assert diff_augment(x, "") is x


@pytest.mark.parametrize("op", [brightness, saturation, contrast, translation, cutout,
                                lambda x, g: diff_augment(x, "color,translation,cutout", g)])
def test_diff_augment_ops_pass_gradients_to_the_input(op):
    x = images().requires_grad_(True)
    weights = torch.rand(x.shape, generator=gen(7))
    (op(x, gen(1)) * weights).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_diff_augment_values_stay_sane():
    x = images(n=64)
    y = diff_augment(x, "color,translation,cutout", gen(2))
    assert torch.isfinite(y).all() and y.abs().max() < 10
    # translation and cutout only move pixels or zero them
    moved = diff_augment(x, "translation,cutout", gen(2))
    assert moved.abs().max() <= x.abs().max()
    # saturation keeps the channel mean and contrast the image mean: only brightness moves the mean
    shift = diff_augment(x, "color", gen(3)).mean(dim=(1, 2, 3)) - x.mean(dim=(1, 2, 3))
    assert shift.min() >= -0.5 - 1e-5 and shift.max() < 0.5 + 1e-5


def test_brightness_offset_is_uniform_in_half_open_unit_interval():
    x = torch.full((4000, 3, 2, 2), 0.25)
    offset = brightness(x, gen(3)) - x
    per_sample = offset[:, 0, 0, 0]
    assert torch.allclose(offset, per_sample[:, None, None, None].expand_as(offset))
    assert per_sample.min() >= -0.5 and per_sample.max() < 0.5
    assert per_sample.min() < -0.49 and per_sample.max() > 0.49
    assert stats.kstest(per_sample.numpy() + 0.5, "uniform").pvalue > 1e-3


def test_saturation_leaves_grey_unchanged_and_scales_colour_by_zero_to_two():
    grey = images(n=16, c=1).expand(16, 3, 12, 20)
    assert torch.allclose(saturation(grey, gen(4)), grey, atol=1e-6)
    x = images(n=2000, h=2, w=2)
    y = saturation(x, gen(4))
    assert torch.allclose(y.mean(dim=1), x.mean(dim=1), atol=1e-6)
    factor = (y - y.mean(dim=1, keepdim=True)) / (x - x.mean(dim=1, keepdim=True))
    per_sample = factor[:, 0, 0, 0]
    assert torch.allclose(factor, per_sample[:, None, None, None].expand_as(factor), atol=1e-3)
    assert per_sample.min() >= 0 and per_sample.max() < 2
    assert per_sample.min() < 0.02 and per_sample.max() > 1.98


def test_contrast_scales_around_the_image_mean_by_half_to_three_halves():
    x = images(n=2000, h=2, w=2)
    y = contrast(x, gen(5))
    mean_x = x.mean(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(y.mean(dim=(1, 2, 3), keepdim=True), mean_x, atol=1e-6)
    factor = (y - mean_x) / (x - mean_x)
    per_sample = factor[:, 0, 0, 0]
    assert torch.allclose(factor, per_sample[:, None, None, None].expand_as(factor), atol=1e-3)
    assert per_sample.min() >= 0.5 - 1e-5 and per_sample.max() < 1.5 + 1e-5
    assert per_sample.min() < 0.52 and per_sample.max() > 1.48


def test_translation_shifts_by_integers_within_range_with_zero_fill():
    n, h, w = 400, 16, 24
    sy, sx = max_shift(h), max_shift(w)
    assert (sy, sx) == (2, 3)
    rows = torch.arange(1, h + 1.0)[:, None].expand(h, w)
    cols = torch.arange(1, w + 1.0)[None, :].expand(h, w)
    x = torch.stack([rows, cols]).expand(n, 2, h, w)  # each pixel names its own position
    y = translation(x, gen(6))
    shifts = set()
    for sample in y:
        inside = sample[0] != 0
        assert torch.equal(inside, sample[1] != 0)
        dy = torch.arange(h)[:, None] + 1 - sample[0]  # output (i, j) read input (i - dy, j - dx)
        dx = torch.arange(w)[None, :] + 1 - sample[1]
        dy, dx = dy[inside].unique(), dx[inside].unique()
        assert len(dy) == 1 and len(dx) == 1
        dy, dx = int(dy), int(dx)
        assert abs(dy) <= sy and abs(dx) <= sx
        # exactly the rows and columns shifted in from outside are zero
        assert int((~inside).all(dim=1).sum()) == abs(dy) and int((~inside).all(dim=0).sum()) == abs(dx)
        assert int(inside.sum()) == (h - abs(dy)) * (w - abs(dx))
        shifts.add((dy, dx))
    assert {dy for dy, _ in shifts} == set(range(-sy, sy + 1))
    assert {dx for _, dx in shifts} == set(range(-sx, sx + 1))


def test_cutout_zeroes_one_rectangle_of_half_the_side_clipped_at_borders():
    n, h, w = 400, 12, 21
    ch, cw = cutout_side(h), cutout_side(w)
    assert (ch, cw) == (6, 11)
    y = cutout(torch.full((n, 3, h, w), 0.5), gen(8))
    full = clipped = 0
    for sample in y:
        assert torch.equal(sample[0], sample[1]) and torch.equal(sample[0], sample[2])
        zero = sample[0] == 0
        assert torch.equal(sample[0][~zero], torch.full_like(sample[0][~zero], 0.5))
        rows, cols = zero.any(dim=1).nonzero().flatten(), zero.any(dim=0).nonzero().flatten()
        assert len(rows) > 0
        # one solid rectangle: contiguous rows and columns, every cell in their product zeroed
        assert torch.equal(rows, torch.arange(rows[0], rows[-1] + 1))
        assert torch.equal(cols, torch.arange(cols[0], cols[-1] + 1))
        assert int(zero.sum()) == len(rows) * len(cols)
        assert len(rows) <= ch and len(cols) <= cw
        touches = rows[0] == 0 or rows[-1] == h - 1 or cols[0] == 0 or cols[-1] == w - 1
        if (len(rows), len(cols)) == (ch, cw):
            full += 1
        else:
            assert touches
            clipped += 1
    assert full > 0 and clipped > 0


def test_diff_augment_is_deterministic_for_a_seeded_generator():
    x = images()
    policy = "color,translation,cutout"
    assert torch.equal(diff_augment(x, policy, gen(9)), diff_augment(x, policy, gen(9)))
    assert not torch.equal(diff_augment(x, policy, gen(9)), diff_augment(x, policy, gen(10)))


# --------------------------------------------------------------------------------------------
# ADA pipeline

def test_ada_at_p0_returns_the_input_unchanged():
    x = images()
    assert AdaptiveAugment("bgc", p=0.0)(x) is x
    assert make_augment("fixed", p=0.0)(x) is x


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ada_keeps_shape_and_dtype(channels, dtype):
    x = images(c=channels, dtype=dtype)
    y = AdaptiveAugment("bgc", p=1.0, generator=gen(1))(x)
    assert y.shape == x.shape and y.dtype == dtype and torch.isfinite(y).all()
    assert not torch.allclose(y, x)


@pytest.mark.parametrize("ops", [*GEOMETRIC_OPS, *COLOR_OPS, "bgc"])
def test_ada_passes_gradients_to_the_input(ops):
    x = images().requires_grad_(True)
    weights = torch.rand(x.shape, generator=gen(7))
    (AdaptiveAugment(ops, p=1.0, generator=gen(2))(x) * weights).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_ada_rejects_unknown_op_by_name_and_bad_p():
    with pytest.raises(ValueError, match="shear"):
        AdaptiveAugment("xflip,shear")
    with pytest.raises(ValueError, match="p must be"):
        AdaptiveAugment("bgc", p=1.5)


def test_ada_xflip_at_p1_gives_the_image_or_its_mirror():
    x = images(n=32)
    y = AdaptiveAugment("xflip", p=1.0, generator=gen(3))(x)
    mirrored = torch.flip(x, dims=[3])
    same = (y - x).abs().amax(dim=(1, 2, 3)) < 1e-5
    flipped = (y - mirrored).abs().amax(dim=(1, 2, 3)) < 1e-5
    assert (same | flipped).all() and same.any() and flipped.any()


def shifted_with_reflection(x: torch.Tensor, dy: int, dx: int, pad: int = 4) -> torch.Tensor:
    """x moved by (dy, dx) pixels, the uncovered border filled by reflection."""
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    h, w = x.shape[-2:]
    return padded[..., pad - dy: pad - dy + h, pad - dx: pad - dx + w]


def test_affine_warp_of_an_integer_translation_moves_pixels_exactly():
    x = images(n=2, h=10, w=14, dtype=torch.float64)
    g_inv = torch.eye(3).repeat(2, 1, 1)
    g_inv[0, :2, 2] = torch.tensor([-3.0, 2.0])  # sample 0 moves 3 right, 2 up
    g_inv[1, :2, 2] = torch.tensor([1.0, -4.0])
    y = affine_warp(x, g_inv)
    assert torch.allclose(y[0], shifted_with_reflection(x[0], dy=-2, dx=3), atol=1e-9, rtol=0)
    assert torch.allclose(y[1], shifted_with_reflection(x[1], dy=4, dx=-1), atol=1e-9, rtol=0)


def test_ada_integer_translation_draws_integers_within_range_and_moves_pixels_exactly():
    n, h, w = 64, 16, 24
    aug = AdaptiveAugment("xint", p=1.0)
    g_inv = aug.sample_geometry(n, h, w, CPU, gen(4))
    dx, dy = -g_inv[:, 0, 2], -g_inv[:, 1, 2]
    assert torch.equal(dx, dx.round()) and torch.equal(dy, dy.round())
    assert dx.abs().max() <= round(0.125 * w) and dy.abs().max() <= round(0.125 * h)
    assert dx.abs().max() == 3 and dy.abs().max() == 2
    x = images(n=n, h=h, w=w, dtype=torch.float64)
    y = aug(x, generator=gen(4))  # the same draws as sample_geometry above
    for i in range(n):
        expected = shifted_with_reflection(x[i], dy=int(dy[i]), dx=int(dx[i]))
        assert torch.allclose(y[i], expected, atol=1e-9, rtol=0)


@pytest.mark.parametrize("ops", ["rotate", "blit,geom"])
def test_ada_geometry_of_a_constant_image_stays_constant(ops):
    # Reflection padding: no black corners leak in, even where a rotation reads outside the image.
    x = torch.full((16, 3, 12, 20), 0.7)
    y = AdaptiveAugment(ops, p=1.0, generator=gen(5))(x)
    assert torch.allclose(y, x, atol=1e-5)


def test_ada_geometry_stays_within_the_input_range():
    x = images(n=16)
    y = AdaptiveAugment("blit,geom", p=1.0, generator=gen(6))(x)
    assert y.min() >= x.min() - 1e-5 and y.max() <= x.max() + 1e-5


def test_ada_is_deterministic_for_a_seeded_generator():
    x = images()
    aug = AdaptiveAugment("bgc", p=0.5)
    assert torch.equal(aug(x, generator=gen(1)), aug(x, generator=gen(1)))
    assert not torch.equal(aug(x, generator=gen(1)), aug(x, generator=gen(2)))


def test_ada_p_survives_a_state_dict_round_trip():
    buffer = io.BytesIO()
    torch.save(AdaptiveAugment("bgc", p=0.37).state_dict(), buffer)
    restored = AdaptiveAugment("bgc")
    restored.load_state_dict(torch.load(io.BytesIO(buffer.getvalue())))
    assert restored.p == 0.37


N = 20000  # samples for the statistics of the transform draws


def log2_std(v: torch.Tensor) -> float:
    return float(torch.log2(v).std())


def test_ada_geometric_strengths_match_the_paper():
    h, w = 32, 48
    g = AdaptiveAugment("scale", p=1.0).sample_geometry(N, h, w, CPU, gen(1))
    assert torch.allclose(g[:, 0, 0], g[:, 1, 1]) and log2_std(1 / g[:, 0, 0]) == pytest.approx(0.2, rel=0.05)
    g = AdaptiveAugment("aniso", p=1.0).sample_geometry(N, h, w, CPU, gen(2))
    assert torch.allclose(g[:, 0, 0] * g[:, 1, 1], torch.ones(N))
    assert log2_std(1 / g[:, 0, 0]) == pytest.approx(0.2, rel=0.05)
    g = AdaptiveAugment("xfrac", p=1.0).sample_geometry(N, h, w, CPU, gen(3))
    assert float(g[:, 0, 2].std()) / w == pytest.approx(0.125, rel=0.05)
    assert float(g[:, 1, 2].std()) / h == pytest.approx(0.125, rel=0.05)
    g = AdaptiveAugment("rotate", p=1.0).sample_geometry(N, h, w, CPU, gen(4))
    angle = torch.atan2(g[:, 1, 0], g[:, 0, 0])  # two uniform rotations in [-pi, pi) compose
    assert stats.kstest(angle.numpy() / (2 * math.pi) + 0.5, "uniform").pvalue > 1e-3


def test_ada_colour_strengths_match_the_paper():
    c = AdaptiveAugment("brightness", p=1.0).sample_color(N, CPU, gen(1))
    assert torch.equal(c[:, :3, :3], torch.eye(3).expand(N, 3, 3))
    assert float(c[:, 0, 3].std()) == pytest.approx(0.2, rel=0.05)
    c = AdaptiveAugment("contrast", p=1.0).sample_color(N, CPU, gen(2))
    assert log2_std(c[:, 0, 0]) == pytest.approx(0.5, rel=0.05)
    grey = torch.tensor([0.3, 0.3, 0.3, 1.0])
    chroma = torch.tensor([1.0, -1.0, 0.0, 0.0])  # orthogonal to the grey axis
    c = AdaptiveAugment("saturation", p=1.0).sample_color(N, CPU, gen(3))
    assert torch.allclose(c @ grey, grey.expand(N, 4), atol=1e-6)
    factor = (c @ chroma)[:, 0]
    assert torch.allclose(c @ chroma, factor[:, None] * chroma, atol=1e-5)
    assert log2_std(factor) == pytest.approx(1.0, rel=0.05)
    c = AdaptiveAugment("hue", p=1.0).sample_color(N, CPU, gen(4))
    assert torch.allclose(c @ grey, grey.expand(N, 4), atol=1e-6)
    rot = c[:, :3, :3]
    assert torch.allclose(rot @ rot.transpose(1, 2), torch.eye(3).expand(N, 3, 3), atol=1e-5)
    cos = ((rot.diagonal(dim1=1, dim2=2).sum(dim=1) - 1) / 2).clamp(-1, 1)
    assert stats.kstest(torch.acos(cos).numpy() / math.pi, "uniform").pvalue > 1e-3
    c = AdaptiveAugment("lumaflip", p=1.0).sample_color(N, CPU, gen(5))
    luma = (c @ grey)[:, 0]
    assert torch.allclose(luma.abs(), torch.full((N,), 0.3), atol=1e-6)
    assert float((luma < 0).float().mean()) == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("op", ["scale", "rotate", "aniso", "xfrac", "brightness", "contrast", "hue", "saturation"])
def test_ada_applies_each_transform_with_probability_p(op):
    aug = AdaptiveAugment(op, p=0.3)
    if op in GEOMETRIC_OPS:
        m, eye = aug.sample_geometry(N, 16, 16, CPU, gen(1)), torch.eye(3)
    else:
        m, eye = aug.sample_color(N, CPU, gen(1)), torch.eye(4)
    changed = (m - eye).abs().amax(dim=(1, 2)) > 1e-6
    assert float(changed.float().mean()) == pytest.approx(0.3, abs=0.02)


# --------------------------------------------------------------------------------------------
# AdaController

def run_interval(ctl: AdaController, sign: float, batches: int | None = None) -> float:
    p = ctl.p
    for _ in range(batches or ctl.interval):
        ctl.accumulate(torch.full((ctl.batch_size, 1), sign))
        p = ctl.step()
    return p


def test_controller_moves_p_by_one_interval_of_images_toward_the_target():
    ctl = AdaController(batch_size=16, p=0.5, target=0.6, speed_kimg=500, interval=4)
    delta = 16 * 4 / (500 * 1000)
    assert run_interval(ctl, +1.0, batches=3) == 0.5  # no adjustment inside an interval
    assert run_interval(ctl, +1.0, batches=1) == 0.5 + delta
    assert ctl.r_t == 1.0
    assert run_interval(ctl, -1.0) == 0.5 + delta - delta
    assert ctl.r_t == -1.0


def test_controller_leaves_p_when_r_t_equals_target_and_clamps_to_unit_interval():
    ctl = AdaController(batch_size=4, p=0.5, target=0.5, interval=1)
    ctl.accumulate(torch.tensor([1.0, 1.0, 1.0, -1.0]))  # mean sign 0.5
    assert ctl.step() == 0.5
    low = AdaController(batch_size=16, p=0.0001, speed_kimg=1)
    assert run_interval(low, -1.0) == 0.0
    high = AdaController(batch_size=16, p=0.9999, speed_kimg=1)
    assert run_interval(high, +1.0) == 1.0


def test_controller_state_dict_round_trip_keeps_p_and_the_interval_in_progress():
    def half_interval(ctl):  # two minibatches of confident reals
        for _ in range(2):
            ctl.accumulate(torch.ones(16))
            ctl.step()

    def second_half(ctl):  # two minibatches with mean sign 0.5
        for _ in range(2):
            ctl.accumulate(torch.tensor([1.0] * 12 + [-1.0] * 4))
            ctl.step()

    uninterrupted = AdaController(batch_size=16, p=0.2)
    half_interval(uninterrupted)
    second_half(uninterrupted)
    assert uninterrupted.r_t == 0.75 and uninterrupted.p > 0.2

    before = AdaController(batch_size=16, p=0.2)
    half_interval(before)
    buffer = io.BytesIO()
    torch.save(before.state_dict(), buffer)
    resumed = AdaController(batch_size=16)
    resumed.load_state_dict(torch.load(io.BytesIO(buffer.getvalue())))
    assert resumed.p == 0.2
    second_half(resumed)
    assert resumed.r_t == uninterrupted.r_t and resumed.p == uninterrupted.p

    # restoring p alone would restart the interval: no adjustment where the uninterrupted run made one
    forgetful = AdaController(batch_size=16, p=0.2)
    second_half(forgetful)
    assert forgetful.r_t is None and forgetful.p == 0.2


def test_controller_sync_hook_sees_the_sums_and_its_result_decides():
    seen = []

    def other_rank_disagrees(t: torch.Tensor) -> torch.Tensor:
        seen.append(t.tolist())
        return t + torch.tensor([-64.0, 64.0], dtype=t.dtype)

    ctl = AdaController(batch_size=16, p=0.5, interval=4, sync=other_rank_disagrees)
    run_interval(ctl, +1.0)
    assert seen == [[64.0, 64.0]]
    assert ctl.r_t == 0.0 and ctl.p < 0.5


def test_controller_counts_the_images_actually_seen():
    ctl = AdaController(batch_size=16, p=0.5, interval=2, speed_kimg=1)
    for n in (10, 6):
        ctl.accumulate(torch.ones(n))
        ctl.step(n)
    assert ctl.p == pytest.approx(0.5 + 16 / 1000)


# --------------------------------------------------------------------------------------------
# make_augment

def test_make_augment_builds_each_kind():
    x = images()
    assert make_augment("none", p=0.5)(x) is x
    diff = make_augment("diffaugment", policy="color,cutout", generator=gen(1))
    assert torch.equal(diff(x), diff_augment(x, "color,cutout", gen(1)))
    for kind in ("ada", "fixed"):
        aug = make_augment(kind, p=0.25)
        assert isinstance(aug, AdaptiveAugment) and aug.p == 0.25 and not torch.equal(aug(x), x)
    with pytest.raises(ValueError, match="stylegan"):
        make_augment("stylegan", p=0.0)
    with pytest.raises(ValueError, match="blur"):
        make_augment("diffaugment", policy="color,blur")
