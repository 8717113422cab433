"""Score folders of images against a reference folder: FID, KID and MiFID.

The reference features are extracted once and cached (`cache.py`), as edm's `fid.py` computes
reference statistics once and reuses them. FID is biased high for small sets, so compare FIDs
only between sets of equal size; KID is the honest small-set metric.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from lowshot.images.folder import list_images
from lowshot.metrics.cache import cached_features
from lowshot.metrics.distances import fid, kid, mifid
from lowshot.metrics.inception import InceptionFeatures

log = logging.getLogger(__name__)


def _images_if_any(folder: str | os.PathLike) -> list[Path]:
    """The images of `folder`, or none when an earlier stage has not produced it."""
    return list_images(folder) if Path(folder).is_dir() else []


def evaluate_sets(
    sets: Mapping[str, str | os.PathLike],
    reference: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike,
    device: str | torch.device,
    mifid_eps: float = 0.1,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    batch_size: int = 64,
    workers: int = 2,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, float]:
    """FID, KID and MiFID of each image folder in `sets` against the `reference` folder.

    Returns `<set>.fid`, `<set>.kid`, `<set>.kid_std` and `<set>.mifid` for every set that has at
    least 2 images. A set whose folder is missing, empty or holds a single image is logged as a
    warning and its keys are left out of the result (not an error: an optional stage may not
    have run). A reference with fewer than 2 images raises ValueError naming the folder.
    `seed` fixes the KID subsets. MiFID treats the set as generated and the reference as real.
    """
    extractor = InceptionFeatures(device)

    def features(paths: list[Path]) -> np.ndarray:
        return cached_features(paths, cache_dir=cache_dir, extractor=extractor,
                               batch_size=batch_size, workers=workers, progress=progress)

    ref_paths = list_images(reference)  # a missing reference is an error
    if len(ref_paths) < 2:
        raise ValueError(f"reference folder {reference} holds {len(ref_paths)} images; FID needs at least 2")
    ref = features(ref_paths)

    results: dict[str, float] = {}
    for name, folder in sets.items():
        paths = _images_if_any(folder)
        if len(paths) < 2:
            state = "missing" if not Path(folder).is_dir() else f"holds {len(paths)} image(s)"
            log.warning("image set %r: folder %s %s; not scored", name, folder, state)
            continue
        feats = features(paths)
        fid_value = fid(feats, ref)
        kid_mean, kid_std = kid(feats, ref, subsets=kid_subsets, subset_size=kid_subset_size, seed=seed)
        memo = mifid(feats, ref, fid_value=fid_value, eps=mifid_eps)
        log.info("%s (%d images vs %d): FID %.2f, KID %.4f +- %.4f, MiFID %.2f (d %.4f)",
                 name, len(paths), len(ref_paths), fid_value, kid_mean, kid_std, memo["mifid"], memo["d"])
        results.update({
            f"{name}.fid": fid_value,
            f"{name}.kid": kid_mean,
            f"{name}.kid_std": kid_std,
            f"{name}.mifid": memo["mifid"],
        })
    return results
