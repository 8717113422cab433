"""Stage `rank`: score every processed painting by how Monet-like it is; keep the best `rank.top_n`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lowshot.fsutil import atomic_path
from lowshot.images.folder import list_images
from lowshot.params import Params
from lowshot.rank.exemplar import exemplar_scores
from lowshot.rank.ranking import rank_sheet, rank_table, write_top
from lowshot.runtime import pick_device, pick_precision
from stages.paths import FEATURE_CACHE, PROCESSED, RANKED, REPORTS

log = logging.getLogger(__name__)


@dataclass
class RankSummary:
    scored: int
    kept: int
    method: str

    def describe(self) -> str:
        return f"scored {self.scored} paintings ({self.method}), kept the best {self.kept} in {RANKED / 'top'}"


def run(params: Params, *, progress: bool = True) -> RankSummary:
    p = params.rank
    device = pick_device(params.device)
    paintings = list_images(PROCESSED / "paintings")
    if not paintings:
        # the real-Monets-only path (scrape.max_paintings: 0, or nothing usable scraped): empty, valid outputs
        log.warning("no paintings in %s: the ranked set is empty (later stages use the real Monets alone)",
                    PROCESSED / "paintings")
        scores = np.zeros(0)
    else:
        scores = score_images(params, paintings, device, progress=progress)
    table = rank_table(paintings, scores)
    with atomic_path(RANKED / "scores.csv") as tmp:
        table.to_csv(tmp, index=False)
    kept = write_top(table, p.top_n, RANKED / "top")
    rank_sheet(table, REPORTS / "rank_sheet.png", empty_note=f"nothing to rank: no paintings in {PROCESSED / 'paintings'}")
    method = p.method if p.method == "clip" else f"exemplar/{p.features}"
    return RankSummary(len(paintings), len(kept), method)


def score_images(params: Params, paths: list[Path], device: torch.device, *, progress: bool = True) -> np.ndarray:
    """How Monet-like each image is, by `rank.method` (higher is better); also used by `generate`."""
    p = params.rank
    if p.method == "exemplar":
        return _exemplar(params, paths, device, progress)
    return _clip(params, device).score(paths, p.prompts, p.negative_prompts, progress=progress)


def _clip(params: Params, device):
    from lowshot.rank.clip import ClipScorer  # open_clip is imported only when CLIP is used

    p = params.rank
    precision = pick_precision(params.precision, device, stage="CLIP scoring")
    return ClipScorer(p.model, p.pretrained, device=device, batch_size=p.batch_size, workers=p.workers,
                      precision=precision)


def _exemplar(params: Params, paintings, device, progress: bool) -> np.ndarray:
    p = params.rank
    exemplars = list_images(PROCESSED / "monet_train")
    if not exemplars:
        raise ValueError(f"rank.method exemplar needs the real Monets in {PROCESSED / 'monet_train'}, found none")
    if p.features in ("inception", "inception_style"):
        from lowshot.metrics.cache import cached_features
        from lowshot.metrics.inception import InceptionFeatures
        from lowshot.rank.inception_taps import InceptionStyle

        extractor = InceptionFeatures(device) if p.features == "inception" else InceptionStyle(device)
        kw = dict(cache_dir=FEATURE_CACHE, extractor=extractor, batch_size=p.batch_size, workers=p.workers,
                  progress=progress)
        corpus, refs = cached_features(paintings, **kw), cached_features(exemplars, **kw)
    else:
        scorer = _clip(params, device)
        corpus = scorer.encode_images(paintings, progress=progress)
        refs = scorer.encode_images(exemplars, progress=progress)
    return exemplar_scores(corpus, refs, top_k=p.top_k, center=p.center)
