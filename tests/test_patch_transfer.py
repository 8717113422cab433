from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lowshot.models import patch_transfer
from lowshot.models.patch_transfer import (QUANTILES, PatchTransfer, PatchTransferConfig, blend_textures,
                                           channel_quantiles, descriptors, from_ycc, gaussian_blur, hann_window,
                                           to_ycc)

pytestmark = pytest.mark.usefixtures("one_thread")


def _images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


def test_ycc_round_trip():
    x = torch.rand(2, 3, 5, 7)
    assert torch.allclose(from_ycc(to_ycc(x)), x, atol=1e-5)


def test_descriptors_are_block_averages_of_each_window():
    x = torch.rand(2, 3, 20, 24)
    got = descriptors(x, patch=8, descriptor=4, stride=4)
    windows = F.unfold(x, 8, stride=4).transpose(1, 2).reshape(-1, 3, 8, 8)  # brute force: cut, then average
    want = F.avg_pool2d(windows, 2).flatten(1)
    assert got.shape == want.shape and torch.allclose(got, want, atol=1e-6)


def _smooth(n: int, size: int = 48, seed: int = 0) -> torch.Tensor:
    """Paintings with structure at several pixels, as real ones have (noise is unlike itself 1 px away)."""
    noise = _images(n, size=size // 4, seed=seed).float()
    return F.interpolate(noise, size=(size, size), mode="bicubic").clamp(0, 255).to(torch.uint8)


def _bank(model: PatchTransfer, stride: int | None = None) -> torch.Tensor:
    """Every bank patch's whole descriptor (or every patch at `stride`), in the bank's index order (brute force)."""
    ycc = to_ycc(torch.cat([model.paintings, model.paintings.flip(-1)]).float() / 255)
    return descriptors(ycc, model.config.patch, model.config.descriptor, stride or model.config.bank_stride)


@pytest.mark.parametrize("k", [1, 3])
def test_without_a_coarse_level_the_search_is_exact_whatever_the_chunk(monkeypatch, k):
    monkeypatch.setattr(patch_transfer, "COARSE_STRIDE", 1)  # the bank is scanned at its own stride
    model = PatchTransfer(PatchTransferConfig(patch=8, bank_stride=2, descriptor=4), _images(3))
    queries = torch.rand(50, 3 * 16)
    want = torch.cdist(queries, _bank(model)).topk(k, dim=1, largest=False).indices
    monkeypatch.setattr(patch_transfer, "BANK_CHUNK", 37)  # many chunks, the last one short
    monkeypatch.setattr(patch_transfer, "QUERY_CHUNK", 16)
    assert torch.equal(model.nearest(queries, k), want)


def _coarse(model: PatchTransfer) -> torch.Tensor:
    """Every coarse-grid patch's whole descriptor, in the coarse scan's order (brute force)."""
    return _bank(model, model.config.bank_stride * model.ratio)


def _noisy_bank_patches(bank: torch.Tensor, n: int = 300) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return bank[torch.randperm(len(bank), generator=g)[:n]] + 0.02 * torch.randn(n, bank.shape[1], generator=g)


@pytest.mark.parametrize("stride", [1, 2, 4])
def test_coarse_to_fine_search_is_never_worse_than_the_coarse_scan_and_finds_its_own_patches(monkeypatch, stride):
    """Scanning whole descriptors, each window's nearest is at least as near as the best coarse-grid patch (each
    coarse patch lies in its own cell), usually nearer; a query that is a coarse-grid patch finds itself; the
    choices are distinct."""
    monkeypatch.setattr(patch_transfer, "REFINE_CHUNK", 7)
    monkeypatch.setattr(patch_transfer, "COARSE_DIMS", 3 * 8 * 8)
    model = PatchTransfer(PatchTransferConfig(patch=16, bank_stride=stride, descriptor=8), _smooth(2, size=64))
    assert model.ratio == 8 // stride and model.bank_size == 4 * (48 // stride + 1) ** 2
    bank, coarse = _bank(model), _coarse(model)
    queries = _noisy_bank_patches(bank)
    found = model.nearest(queries, 3)
    assert all(len(set(row.tolist())) == 3 for row in found)
    nearest = (bank[found[:, 0]] - queries).square().sum(1)
    coarse_best = (queries[:, None] - coarse[None]).square().sum(-1).min(1).values
    assert (nearest <= coarse_best * (1 + 1e-5)).all() and (nearest < coarse_best * (1 - 1e-5)).float().mean() > 0.3
    on_grid = torch.tensor([0, 7, len(coarse) - 1])
    got = model.nearest(coarse[on_grid], 1)[:, 0]
    assert torch.allclose(bank[got], coarse[on_grid], atol=1e-6)


def test_the_scan_on_principal_axes_finds_what_the_scan_on_whole_descriptors_finds(monkeypatch):
    """The coarse scan on 48 of the descriptors' 192 axes (the default takes more) picks the candidates that
    whole descriptors pick, so the search ends as near as before, and a coarse-grid patch still finds itself."""
    paintings = _smooth(3, size=64)
    config = PatchTransferConfig(patch=16, bank_stride=4, descriptor=8)
    monkeypatch.setattr(patch_transfer, "COARSE_DIMS", 48)
    model = PatchTransfer(config, paintings)
    assert model.coarse_basis.shape == (3 * 8 * 8, 48) and model.coarse_bank.shape[1] == 48
    monkeypatch.setattr(patch_transfer, "COARSE_DIMS", 3 * 8 * 8)
    whole = PatchTransfer(config, paintings)
    assert whole.coarse_basis is None
    bank, coarse = _bank(model), _coarse(model)
    queries = _noisy_bank_patches(bank)
    cells, want = model._scan(model.project(queries), 16), whole._scan(queries, 16)
    shared = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(cells, want)) / want.numel()
    assert shared > 0.95
    found, before = model.nearest(queries, 1)[:, 0], whole.nearest(queries, 1)[:, 0]
    dist = {name: (bank[at] - queries).square().sum(1).mean() for name, at in (("found", found), ("before", before))}
    assert dist["found"] <= dist["before"] * 1.02 and (found == before).float().mean() > 0.9
    on_grid = torch.tensor([0, 11, len(coarse) - 1])
    assert torch.allclose(bank[model.nearest(coarse[on_grid], 1)[:, 0]], coarse[on_grid], atol=1e-5)


def test_blend_keeps_the_contrast_of_unrelated_textures_wherever_the_windows_fall():
    """Unit-variance noise textures overlap-added: the variance-preserving blend keeps ~1 at a window's
    centre and where four windows overlap alike; a plain Hann average would drop to ~1/4 at the overlaps."""
    n, p, side = 2000, 8, 24
    windows_per_image = ((side - p) // (p // 2) + 1) ** 2
    g = torch.Generator().manual_seed(0)
    out = blend_textures(torch.randn(n * windows_per_image, 1, p, p, generator=g), n, (side, side))
    var = out[..., p // 2:-p // 2, p // 2:-p // 2].var(0)[0]  # per pixel, over the images; borders aside
    assert var.min() > 0.85 and var.max() < 1.15
    window = hann_window(p)
    assert window[0, 0] < 0.01 < window[p // 4, p // 4] < window[p // 2, p // 2]  # the weights do vary


def test_translation_keeps_the_photos_blur_and_takes_the_paintings_strokes():
    """colour 0: a flat photo keeps its level and gets the paintings' texture on top, `texture` times as
    strong; texture 0 gives the photo's blur plus `photo_detail` of its own finer detail."""
    paintings = 160 + _images(4, size=32) % 96  # bright noise: mean ~0.62 on the [-1, 1] scale
    flat = torch.full((1, 3, 32, 32), -0.3) + 0.01 * torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    config = dict(patch=8, bank_stride=2, descriptor=4, colour=0.0, detail=2.0, photo_detail=0.0)
    out = {t: PatchTransfer(PatchTransferConfig(**config, texture=t), paintings)(flat) for t in (0.0, 1.0, 2.0)}
    blurred = from_ycc(gaussian_blur(to_ycc((flat + 1) / 2), 2.0)) * 2 - 1
    assert torch.allclose(out[0.0], blurred, atol=1e-5)
    assert abs(out[1.0].mean() - (-0.3)) < 0.05  # the photo's level, not the paintings' 0.62
    strokes = {t: (out[t] - blurred).std() for t in (1.0, 2.0)}
    assert strokes[1.0] > 0.05 and 1.8 < strokes[2.0] / strokes[1.0] < 2.05  # clamping aside, twice as strong
    kept = {k: PatchTransfer(PatchTransferConfig(**config | {"photo_detail": k}, texture=0.0), paintings)(flat)
            for k in (0.5, 1.0)}
    assert torch.allclose(kept[1.0], flat, atol=1e-5)  # all its own detail back: the photo itself
    assert torch.allclose(kept[0.5], (flat + blurred) / 2, atol=1e-5)


def test_colour_moves_each_channels_histogram_and_flat_areas_stay_flat():
    """colour 1 gives a photo the paintings' value distribution in each YCbCr channel whatever its own,
    colour 0 keeps it, and a flat area (tied values) maps to one value, not a ramp across it."""
    paintings = _images(4, size=32)
    photo = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2)) ** 3  # dark, skewed
    config = dict(patch=8, bank_stride=2, descriptor=4)
    model = PatchTransfer(PatchTransferConfig(**config, colour=1.0), paintings)
    matched, paint = model.colour_match(to_ycc(photo)), to_ycc(paintings.float() / 255)
    at = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9])
    for c in range(3):
        assert torch.allclose(matched[0, c].flatten().quantile(at), paint[:, c].flatten().quantile(at), atol=0.02)
    photo[..., :8, :] = 0.9  # a flat band
    band = model.colour_match(to_ycc(photo))[..., :8, :]
    assert torch.allclose(band, band[..., :1, :1].expand_as(band))
    ycc = to_ycc(photo)
    kept = PatchTransfer(PatchTransferConfig(**config, colour=0.0), paintings).colour_match(ycc)
    assert torch.allclose(kept, ycc)


def test_choices_break_the_grid_a_flat_sky_would_repeat():
    """A flat photo matches one patch everywhere: with one choice every window gets the same texture (a
    pattern repeating every half patch); with four, neighbouring windows differ."""
    paintings = _images(3, size=32)
    flat = torch.zeros(1, 3, 48, 48)
    config = dict(patch=8, bank_stride=2, descriptor=4, colour=0.0)
    for choices, repeats in ((1, True), (4, False)):
        y = PatchTransfer(PatchTransferConfig(**config, choices=choices), paintings)(flat)[..., 8:40, 8:40]
        shifted = torch.allclose(y[..., :-4], y[..., 4:], atol=1e-4)
        assert shifted == repeats


def test_translation_takes_its_texture_from_the_paintings():
    """A flat grey photo given noise paintings' texture is varied, and its colour statistics move to
    theirs when colour is 1."""
    paintings = _images(4, size=32)
    model = PatchTransfer(PatchTransferConfig(patch=8, bank_stride=2, descriptor=4, colour=1.0), paintings)
    flat = torch.zeros(1, 3, 32, 32)
    y = model(flat + 0.01 * torch.randn_like(flat))
    assert y.std() > 0.2  # noise strokes, not a flat image
    paint = paintings.float() / 127.5 - 1
    assert abs(y.mean() - paint.mean()) < 0.1


def test_the_paintings_quantiles_run_from_their_minimum_to_their_maximum_however_many_values():
    """Past 2^24 values a float32 rank would round past the last one (331 paintings at 256 px did)."""
    values = torch.arange(4096 * 4100, dtype=torch.float32).flip(0).view(1, 1, 4096, 4100)
    table = channel_quantiles(values)
    assert table.shape == (1, QUANTILES) and table[0, 0] == 0 and table[0, -1] == values.max()
    assert (table.diff(dim=1) > 0).all()


def test_any_size_is_covered_and_a_photo_translates_alike_alone_or_in_a_batch():
    model = PatchTransfer(PatchTransferConfig(patch=8, bank_stride=4, descriptor=4), _images(2))
    x = torch.rand(3, 3, 21, 30) * 2 - 1
    y = model(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert torch.equal(model(x), y)
    assert torch.allclose(model(x[1:2]), y[1:2], atol=1e-6)


def test_bad_configs_and_paintings_are_refused():
    with pytest.raises(ValueError, match="descriptor"):
        PatchTransferConfig(patch=16, descriptor=5)
    with pytest.raises(ValueError, match="even"):
        PatchTransferConfig(patch=15, descriptor=5)
    with pytest.raises(ValueError, match="colour"):
        PatchTransferConfig(colour=1.5)
    with pytest.raises(ValueError, match="detail"):
        PatchTransferConfig(detail=0.0)
    with pytest.raises(ValueError, match="texture"):
        PatchTransferConfig(texture=-1.0)
    with pytest.raises(ValueError, match="choices"):
        PatchTransferConfig(choices=0)
    with pytest.raises(ValueError, match="photo_detail"):
        PatchTransferConfig(photo_detail=1.5)
    with pytest.raises(ValueError, match="fewer than choices"):
        PatchTransfer(PatchTransferConfig(patch=8, descriptor=4, choices=5), _images(1, size=8))
    with pytest.raises(ValueError, match="uint8"):
        PatchTransfer(PatchTransferConfig(patch=8, descriptor=4), torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="smaller than a patch"):
        PatchTransfer(PatchTransferConfig(patch=16, descriptor=4), _images(1, size=8))
