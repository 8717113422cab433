from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lowshot.models import patch_transfer
from lowshot.models.patch_transfer import PatchTransfer, PatchTransferConfig, descriptors, from_ycc, to_ycc

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


def test_nearest_is_the_exact_search_whatever_the_chunk(monkeypatch):
    model = PatchTransfer(PatchTransferConfig(patch=8, bank_stride=2, descriptor=4), _images(3))
    queries = torch.rand(50, model.bank.shape[1])
    want = torch.cdist(queries, model.bank).argmin(1)
    monkeypatch.setattr(patch_transfer, "BANK_CHUNK", 37)  # many chunks, the last one short
    monkeypatch.setattr(patch_transfer, "QUERY_CHUNK", 16)
    assert torch.equal(model.nearest(queries), want)


def test_patches_fetches_the_window_the_index_names():
    paintings = _images(2, size=24)
    model = PatchTransfer(PatchTransferConfig(patch=8, bank_stride=4, descriptor=2), paintings)
    bank_images = to_ycc(torch.cat([paintings, paintings.flip(-1)]).float() / 255)
    windows = F.unfold(bank_images, 8, stride=4).transpose(1, 2).reshape(-1, 3, 8, 8)
    index = torch.tensor([0, 5, 24, 30, len(windows) - 1])
    assert torch.allclose(model.patches(index), windows[index])
    # ...and the descriptors describe those same windows
    assert torch.allclose(model.bank[index], F.avg_pool2d(windows[index], 4).flatten(1), atol=1e-6)


def test_a_photo_in_the_bank_comes_back_unchanged_away_from_its_border():
    """With the photo itself as the only painting and no colour change, each inner window's nearest patch
    is itself, so the overlap-added result is the photo (the border half-patch is built from reflections)."""
    photo = _images(1, size=48, seed=3)
    model = PatchTransfer(PatchTransferConfig(patch=8, bank_stride=4, descriptor=4, colour=0.0), photo)
    x = photo.float() / 127.5 - 1
    y = model(x)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    inner = (..., slice(4, -4), slice(4, -4))
    assert torch.allclose(y[inner], x[inner], atol=1e-4)
    assert (y - x).abs().max() > 0.01  # the border is rebuilt, not copied: the test can tell the two apart


def test_translation_takes_its_texture_from_the_paintings():
    """A flat grey photo, rebuilt from noise paintings, is as varied as the paintings, and its colour
    statistics move to theirs when colour is 1."""
    paintings = _images(4, size=32)
    model = PatchTransfer(PatchTransferConfig(patch=8, bank_stride=2, descriptor=4, colour=1.0), paintings)
    flat = torch.zeros(1, 3, 32, 32)
    y = model(flat + 0.01 * torch.randn_like(flat))
    assert y.std() > 0.3  # noise patches, not a flat image
    paint = paintings.float() / 127.5 - 1
    assert abs(y.mean() - paint.mean()) < 0.1


def test_any_size_is_covered_and_output_is_deterministic():
    model = PatchTransfer(PatchTransferConfig(patch=8, bank_stride=4, descriptor=4), _images(2))
    x = torch.rand(2, 3, 21, 30) * 2 - 1
    y = model(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert torch.equal(model(x), y)


def test_bad_configs_and_paintings_are_refused():
    with pytest.raises(ValueError, match="descriptor"):
        PatchTransferConfig(patch=16, descriptor=5)
    with pytest.raises(ValueError, match="even"):
        PatchTransferConfig(patch=15, descriptor=5)
    with pytest.raises(ValueError, match="colour"):
        PatchTransferConfig(colour=1.5)
    with pytest.raises(ValueError, match="uint8"):
        PatchTransfer(PatchTransferConfig(patch=8, descriptor=4), torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="smaller than a patch"):
        PatchTransfer(PatchTransferConfig(patch=16, descriptor=4), _images(1, size=8))


def test_detail_keeps_the_photos_own_colours_and_takes_only_finer_strokes():
    """colour 0: pasting whole patches (detail 0) gives a flat photo the paintings' mean; detail 3 keeps the
    photo's own level and adds the paintings' fine texture on top."""
    paintings = 160 + _images(4, size=32) % 96  # bright noise: mean ~0.62 on the [-1, 1] scale
    flat = torch.full((1, 3, 32, 32), -0.3) + 0.01 * torch.randn(1, 3, 32, 32)
    config = dict(patch=8, bank_stride=2, descriptor=4, colour=0.0)
    pasted = PatchTransfer(PatchTransferConfig(**config, detail=0.0), paintings)(flat)
    detailed = PatchTransfer(PatchTransferConfig(**config, detail=3.0), paintings)(flat)
    assert abs(detailed.mean() - (-0.3)) < 0.05 and abs(pasted.mean() - 0.62) < 0.05
    assert detailed.std() > 0.1  # the strokes are there
