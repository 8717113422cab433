"""Stage `cyclegan`: the photo -> Monet translator (`cyclegan.model`: CycleGAN, CUT or FastCUT) on the
photos and a weighted mix of Monet sources.

Like `train`, each fingerprint (params + training data) trains in its own `models/cyclegan/runs/<hash>` (persisted),
so a killed run resumes and an experiment with other params starts afresh; when a run finishes,
its generator becomes `models/cyclegan/photo2monet.pt` and the other runs are deleted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from lowshot.params import Params
from lowshot.runtime import pick_device, pick_precision
from lowshot.train import checkpoint, distributed
from lowshot.train.translator_loop import PHOTO2MONET_FILE, data_digest, run_fingerprint, train_translator
from stages.paths import CYCLEGAN_LIVE, CYCLEGAN_MODELS, FEATURE_CACHE, PROCESSED, RANKED, SINGAN, SYNTHETIC

log = logging.getLogger(__name__)

MONET_SOURCES = {"real": PROCESSED / "monet_train", "ranked": RANKED / "top", "synthetic": SYNTHETIC,
                 "singan": SINGAN}


@dataclass
class CycleGANSummary:
    stats: dict[str, float]
    run: Path

    def describe(self) -> str:
        shown = {k: v for k, v in self.stats.items() if k.startswith(("metrics/", "loss/G", "loss/D"))}
        return ", ".join(f"{k} {v:.4g}" for k, v in shown.items()) + f"; run {self.run}"


def run(params: Params, *, progress: bool = True, max_steps: int | None = None) -> CycleGANSummary:
    c = params.cyclegan
    monet = [(MONET_SOURCES[name], weight) for name, weight in c.monet_sources.items() if weight > 0]
    fingerprint = run_fingerprint(c, params.seed, data_digest(PROCESSED / "photos", monet))
    run_dir = checkpoint.run_dir(CYCLEGAN_MODELS, fingerprint)
    for other in checkpoint.describe_other_runs(CYCLEGAN_MODELS, run_dir, fingerprint):
        log.info("%s holds another run with different params or data, kept until this one finishes: %s",
                 CYCLEGAN_MODELS, other)
    device = pick_device(params.device)
    precision = pick_precision(params.precision, device, params.channels_last, stage=f"cyclegan ({c.model})")
    stats = train_translator(c, photos=PROCESSED / "photos", monet=monet, out_dir=run_dir, live_dir=CYCLEGAN_LIVE,
                             device=device, seed=params.seed, precision=precision,
                             eval_reference=Path(params.evaluate.reference), metrics_cache=FEATURE_CACHE,
                             progress=progress, max_steps=max_steps, warn_hours=params.warn_hours)
    if distributed.is_main() and max_steps is None:
        for old in checkpoint.publish_run(CYCLEGAN_MODELS, run_dir, PHOTO2MONET_FILE):
            log.info("removed the finished-with run %s", old)
    return CycleGANSummary(stats, run_dir)
