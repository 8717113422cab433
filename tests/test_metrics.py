"""Golden and cross-checks of FID, KID and MiFID on fixed random features (no network)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torchmetrics.image.fid import _compute_fid
from torchmetrics.image.kid import poly_mmd
from torchmetrics.image.mifid import _compute_cosine_distance

from lowshot.metrics.distances import (
    fid,
    frechet_distance,
    gaussian_stats,
    kid,
    mifid,
    min_cosine_distances,
)


def _feats(seed: int, n: int, d: int, shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(shift, scale, size=(n, d))


@pytest.fixture
def two_sets() -> tuple[np.ndarray, np.ndarray]:
    return _feats(0, 40, 16), _feats(1, 45, 16, shift=0.3, scale=1.5)


# --- FID ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_a, n_b, dim", [(40, 45, 16), (10, 12, 32), (10, 60, 32)])
def test_fid_equals_torchmetrics_and_the_sqrtm_reference(n_a, n_b, dim):
    # (40, 45, 16): both sets larger than D; (10, 12, 32): singular covariances; (10, 60, 32): mixed
    a, b = _feats(0, n_a, dim), _feats(1, n_b, dim, shift=0.3, scale=1.5)
    stats = (*gaussian_stats(a), *gaussian_stats(b))
    expected = _compute_fid(*[torch.from_numpy(x) for x in stats]).item()
    assert expected > 1.0  # the sets really differ, so the match is not 0 == 0
    assert fid(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(*stats) == pytest.approx(expected, rel=1e-6)


def test_fid_of_a_set_with_itself_is_zero_and_fid_is_symmetric(two_sets):
    a, b = two_sets
    assert abs(fid(a, a)) < 1e-6
    assert fid(a, b) == pytest.approx(fid(b, a), rel=1e-9)
    # fewer images than dimensions: singular covariances, still close to 0
    small = _feats(2, 10, 32)
    assert abs(fid(small, small)) < 1e-4


def test_fid_needs_two_images_per_set(two_sets):
    a, _ = two_sets
    with pytest.raises(ValueError, match="at least 2 images"):
        fid(a, a[:1])


def test_frechet_distance_rejects_a_large_imaginary_component():
    # sigma1 is not a covariance (negative eigenvalue): sqrt of the product is imaginary
    with pytest.raises(ValueError, match="imaginary"):
        frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))


# --- KID ---------------------------------------------------------------------------------------


def test_kid_equals_torchmetrics_on_full_sets():
    a, b = _feats(3, 30, 16), _feats(4, 30, 16, shift=0.5)
    expected = poly_mmd(torch.from_numpy(a), torch.from_numpy(b)).item()
    mean, std = kid(a, b, subsets=1, subset_size=30)
    assert mean == pytest.approx(expected, rel=1e-6)
    assert std == 0.0
    assert expected > 0.01


def test_kid_with_sets_smaller_than_the_subset_size():
    # default subset_size 1000 > 12 images: every subset is the whole set, so KID is exact
    a, b = _feats(5, 12, 8), _feats(6, 12, 8, shift=0.5)
    expected = poly_mmd(torch.from_numpy(a), torch.from_numpy(b)).item()
    mean, std = kid(a, b, subsets=5)
    assert mean == pytest.approx(expected, rel=1e-6)
    assert std < 1e-9 * abs(expected)


def test_kid_is_unbiased_and_seeded_on_unequal_small_sets():
    same_a, same_b = _feats(7, 20, 8), _feats(8, 30, 8)  # same distribution, different sizes
    shifted = _feats(9, 30, 8, shift=1.0)
    null_mean, null_std = kid(same_a, same_b, subsets=200, seed=0)
    alt_mean, _ = kid(same_a, shifted, subsets=200, seed=0)
    assert null_std > 0  # 20 of 30 drawn each time: subsets differ
    assert abs(null_mean) < 0.1 * alt_mean  # unbiased: ~0 for equal distributions
    assert kid(same_a, same_b, subsets=20, seed=3) == kid(same_a, same_b, subsets=20, seed=3)
    assert kid(same_a, same_b, subsets=20, seed=3) != kid(same_a, same_b, subsets=20, seed=4)


# --- MiFID -------------------------------------------------------------------------------------


def _brute_force_d(gen: np.ndarray, real: np.ndarray) -> float:
    mins = []
    for g in gen:
        best = math.inf
        for r in real:
            cos = sum(x * y for x, y in zip(g, r)) / (math.sqrt(sum(x * x for x in g)) * math.sqrt(sum(y * y for y in r)))
            best = min(best, 1.0 - abs(cos))
        mins.append(best)
    return sum(mins) / len(mins)


def test_mifid_equals_a_brute_force_double_loop():
    gen, real = _feats(10, 7, 6), _feats(11, 5, 6, shift=0.2)
    out = mifid(gen, real, eps=0.9)
    d = _brute_force_d(gen, real)
    assert out["d"] == pytest.approx(d, rel=1e-12)
    assert out["d_thr"] == out["d"]  # d < eps
    assert out["fid"] == pytest.approx(fid(gen, real), rel=1e-12)
    assert out["mifid"] == pytest.approx(out["fid"] / d, rel=1e-12)
    # chunking does not change the result
    np.testing.assert_allclose(min_cosine_distances(gen, real, chunk=2), min_cosine_distances(gen, real), rtol=0, atol=1e-15)


def test_mifid_above_the_threshold_is_fid():
    gen, real = _feats(12, 20, 6), _feats(13, 20, 6)
    out = mifid(gen, real, eps=1e-6, fid_value=42.0)
    assert out["d"] > 1e-6 and out["d_thr"] == 1.0
    assert out["mifid"] == pytest.approx(42.0)


def test_mifid_punishes_a_memorised_set():
    real = np.abs(_feats(14, 50, 32))
    noise = 1e-4 * _feats(15, 50, 32)
    gen = np.concatenate([real[:25], real[:25]]) + noise  # copies of half the real set
    out = mifid(gen, real)
    assert out["d"] < 1e-3 < 0.1
    assert out["fid"] > 0.5
    assert out["mifid"] > 100 * out["fid"]


def test_mifid_follows_kaggle_direction_not_torchmetrics():
    # Every generated image copies one of two real images; eight real images are far from all of
    # them. Kaggle (min over real, per generated): d ~ 0, memorisation caught. torchmetrics
    # (min over generated, per real): the uncovered real images make d large, nothing caught.
    rng = np.random.default_rng(16)
    real = np.abs(rng.normal(size=(10, 16)))
    gen = real[[0, 1, 0, 1, 0, 1]] + 1e-6 * np.abs(rng.normal(size=(6, 16)))
    ours = mifid(gen, real, eps=0.1)
    d_kaggle = _brute_force_d(gen, real)
    d_other_way = _brute_force_d(real, gen)
    assert ours["d"] == pytest.approx(d_kaggle, rel=1e-9)
    assert ours["d"] < 1e-6 and ours["d_thr"] == ours["d"]
    tm_real, tm_gen = torch.from_numpy(real), torch.from_numpy(gen)
    # torchmetrics' MiFID metric calls _compute_cosine_distance(real_features, fake_features, eps)
    tm_d = _compute_cosine_distance(tm_real, tm_gen, 0.1).item()
    assert tm_d == 1.0  # its d (unthresholded d_other_way >= eps) would not penalise at all
    assert d_other_way > 0.1
    assert _compute_cosine_distance(tm_gen, tm_real, 1.0).item() == pytest.approx(ours["d"], abs=1e-12)


def test_mifid_drops_all_zero_feature_rows_like_kaggle():
    gen, real = _feats(17, 6, 5), _feats(18, 4, 5)
    with_zeros = np.concatenate([gen, np.zeros((2, 5))])
    assert mifid(with_zeros, real, fid_value=1.0)["d"] == pytest.approx(mifid(gen, real, fid_value=1.0)["d"])


@pytest.mark.parametrize("n_gen, n_real", list(itertools.product([1, 3], [1, 3])))
def test_metrics_reject_sets_below_two_images(n_gen, n_real):
    gen, real = _feats(19, n_gen, 4), _feats(20, n_real, 4)
    if n_gen >= 2 and n_real >= 2:
        assert np.isfinite(mifid(gen, real)["mifid"])
    else:
        with pytest.raises(ValueError, match="at least 2 images"):
            mifid(gen, real)
