"""Stage `translate`: every photo (or `translate.count`) -> a 256 px Monet-style JPEG in
data/translated/, and Kaggle's submission/images.zip. Outside the pipeline (`run_paths`, i.e.
`lowshot translate --input PATH --output DIR`): any photo or folder of photos, at any size."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from lowshot.images.folder import list_images
from lowshot.params import Params
from lowshot.runtime import pick_device, pick_precision
from lowshot.train.checkpoint import PHOTO2MONET_FILE, load_photo2monet
from lowshot import translate
from lowshot.precision import Precision
from lowshot.translate import TranslateReport
from stages.paths import CYCLEGAN_MODELS, PROCESSED, SUBMISSION, TRANSLATED

log = logging.getLogger(__name__)


@dataclass
class TranslateSummary:
    translated: int
    zipped: int

    def describe(self) -> str:
        return f"translated {self.translated} photos into {TRANSLATED}; {self.zipped} JPEGs in {SUBMISSION}"


@dataclass
class PathsSummary:
    report: TranslateReport
    output: Path

    def describe(self) -> str:
        text = f"translated {len(self.report.written)} photo(s) into {self.output}"
        if self.report.failed:
            text += f"; {len(self.report.failed)} could not be read: " + "; ".join(
                f"{p} ({why})" for p, why in self.report.failed)
        return text

    @property
    def failed(self) -> bool:
        return bool(self.report.failed)


def _generator(params: Params, model: Path) -> tuple[torch.nn.Module, Precision]:
    if not model.is_file():
        raise FileNotFoundError(f"no trained translator at {model}: run `lowshot cyclegan` (or `dvc repro cyclegan`) first")
    device = pick_device(params.device)
    precision = pick_precision(params.precision, device, params.channels_last, stage="translate")
    return precision.prepare(load_photo2monet(model, device)), precision


def run_paths(params: Params, *, source: Path, output: Path, size: int | None, fmt: str = "jpg",
              model: Path | None = None, progress: bool = True) -> PathsSummary:
    """Translate a photo or a folder of photos into `output` at long side `size` (None: their own size)."""
    p = params.translate
    jobs = translate.output_jobs(source, output, fmt)
    G, precision = _generator(params, model or CYCLEGAN_MODELS / PHOTO2MONET_FILE)
    output.mkdir(parents=True, exist_ok=True)
    sizing = translate.Sizing("keep") if size is None else translate.Sizing("long_side", size)
    report = translate.translate_files(G, jobs, sizing=sizing, precision=precision, batch_size=p.batch_size,
                                       quality=p.quality, workers=p.workers, tile=p.tile, overlap=p.tile_overlap,
                                       progress=progress)
    return PathsSummary(report, output)


def run(params: Params, *, progress: bool = True) -> TranslateSummary:
    p = params.translate
    model = CYCLEGAN_MODELS / PHOTO2MONET_FILE
    photos = list_images(PROCESSED / "photos")
    if p.count is not None:
        if p.count > len(photos):
            log.warning("translate.count = %d but there are %d photos: translating them all", p.count, len(photos))
        photos = photos[:p.count]
    G, precision = _generator(params, model)
    images = translate.translate_photos(G, model, photos, TRANSLATED, batch_size=p.batch_size, quality=p.quality,
                                        precision=precision, workers=p.workers, progress=progress)
    return TranslateSummary(len(images), translate.write_submission(images, SUBMISSION))
