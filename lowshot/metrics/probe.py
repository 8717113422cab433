"""FID, KID and MiFID of images a training loop generates, against a fixed reference folder.

Generated images are written as PNGs to a temporary folder, so they go through the same decoding
and resizing as every image set the evaluate stage scores. The reference features are extracted
once (cached on disk when a cache folder is given) and the Inception network is loaded once.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from lowshot.images.grid import to_pil_images
from lowshot.metrics.cache import cached_features
from lowshot.metrics.distances import fid, kid, mifid
from lowshot.metrics.inception import InceptionFeatures


class MetricProbe:
    """Call with batches of images in [-1, 1] -> {"metrics/fid", "metrics/kid", "metrics/mifid"}."""

    def __init__(self, reference: list[Path], *, seed: int, device: torch.device, cache: Path | None,
                 workers: int, scratch: Path) -> None:
        self.reference, self.seed, self.cache, self.workers, self.scratch = reference, seed, cache, workers, scratch
        self.extractor = InceptionFeatures(device)
        self.ref_feats: np.ndarray | None = None

    def _reference(self) -> np.ndarray:
        if self.ref_feats is None:
            if self.cache is not None:
                self.ref_feats = cached_features(self.reference, cache_dir=self.cache, extractor=self.extractor,
                                                 workers=self.workers, progress=False)
            else:
                self.ref_feats = self.extractor.extract(self.reference, workers=self.workers, progress=False)
        return self.ref_feats

    def __call__(self, batches: Iterable[torch.Tensor]) -> dict[str, float]:
        ref = self._reference()
        with tempfile.TemporaryDirectory(prefix=".tmp-metrics-", dir=self.scratch) as tmp:
            paths: list[Path] = []
            for batch in batches:
                for im in to_pil_images(batch):
                    paths.append(Path(tmp) / f"{len(paths):06d}.png")
                    im.save(paths[-1], compress_level=1)
            feats = self.extractor.extract(paths, workers=self.workers, progress=False)
        fid_value = fid(feats, ref)
        kid_mean, _ = kid(feats, ref, seed=self.seed)
        return {"metrics/fid": fid_value, "metrics/kid": kid_mean,
                "metrics/mifid": mifid(feats, ref, fid_value=fid_value)["mifid"]}
