"""Stage `evaluate`: FID, KID and MiFID of every image set against the held-out Monets -> metrics/evaluate.json."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from lowshot.fsutil import atomic_write_text
from lowshot.metrics.evaluate import evaluate_sets
from lowshot.params import Params
from lowshot.runtime import pick_device
from stages.paths import FEATURE_CACHE, METRICS, PROCESSED, RANKED, SYNTHETIC, TRANSLATED

log = logging.getLogger(__name__)

# every set evaluate knows, and where an earlier stage writes it; monet_train is the floor to beat
SETS = {"monet_train": PROCESSED / "monet_train", "ranked": RANKED / "top", "synthetic": SYNTHETIC,
        "translated": TRANSLATED}


@dataclass
class EvaluateSummary:
    metrics: dict[str, float]

    def describe(self) -> str:
        return ", ".join(f"{k} {v:.4g}" for k, v in self.metrics.items()) or "no image set to evaluate"


def run(params: Params, *, progress: bool = True) -> EvaluateSummary:
    p = params.evaluate
    metrics = evaluate_sets(SETS, Path(p.reference), cache_dir=FEATURE_CACHE, device=pick_device(params.device),
                            mifid_eps=p.mifid_eps, kid_subsets=p.kid_subsets, kid_subset_size=p.kid_subset_size,
                            batch_size=p.batch_size, workers=p.workers, seed=params.seed, progress=progress)
    missing = [name for name in SETS if f"{name}.fid" not in metrics]
    if missing:
        log.info("not evaluated (not produced yet, or fewer than 2 images): %s", ", ".join(missing))
    atomic_write_text(METRICS / "evaluate.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return EvaluateSummary(metrics)
