"""Stage `train`: the low-shot GAN on the ranked paintings + the real Monets -> models/gan/.

Each fingerprint (params + training data) trains in its own folder `models/gan/runs/<hash>` (persisted by DVC), so
a killed `dvc repro` resumes its run while `dvc exp run -S train.lr_d=...` starts a new one; the
other runs are deleted once the new one has finished. `models/gan/generator.pt` is always the
generator of the last finished run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from lowshot.params import Params
from lowshot.runtime import pick_device, pick_precision
from lowshot.train import checkpoint, distributed
from lowshot.train.data import sources_digest
from lowshot.train.gan_loop import run_fingerprint, train_gan
from stages.paths import FEATURE_CACHE, GAN_LIVE, GAN_MODELS, PROCESSED, RANKED

log = logging.getLogger(__name__)


@dataclass
class TrainSummary:
    stats: dict[str, float]
    run: Path

    def describe(self) -> str:
        shown = {k: v for k, v in self.stats.items() if k.startswith(("loss/", "metrics/", "aug/p"))}
        kimg = self.stats.get("progress/kimg")
        head = f"kimg {kimg:.3f}" if kimg is not None else "done"
        return f"{head}; " + ", ".join(f"{k} {v:.4g}" for k, v in shown.items()) + f"; run {self.run}"


def run(params: Params, *, progress: bool = True, max_ticks: int | None = None) -> TrainSummary:
    t = params.train
    sources = [(RANKED / "top", 1), (PROCESSED / "monet_train", t.monet_repeat)]
    fingerprint = run_fingerprint(t, params.seed, sources_digest(sources))
    run_dir = checkpoint.run_dir(GAN_MODELS, fingerprint)
    for other in checkpoint.describe_other_runs(GAN_MODELS, run_dir, fingerprint):
        log.info("%s holds another run with different params or data, kept until this one finishes: %s",
                 GAN_MODELS, other)
    device = pick_device(params.device)
    precision = pick_precision(params.precision, device, params.channels_last, stage=f"train ({t.arch})")
    stats = train_gan(t, sources=sources, out_dir=run_dir, live_dir=GAN_LIVE, device=device, seed=params.seed,
                      precision=precision, fid_reference=Path(params.evaluate.reference), metrics_cache=FEATURE_CACHE,
                      progress=progress, max_ticks=max_ticks, warn_hours=params.warn_hours)
    finished = stats.get("progress/kimg", 0.0) >= t.kimg - 1e-9 or (max_ticks is None)
    if distributed.is_main() and finished:
        for old in checkpoint.publish_run(GAN_MODELS, run_dir, checkpoint.GENERATOR_FILE):
            log.info("removed the finished-with run %s", old)
    return TrainSummary(stats, run_dir)
