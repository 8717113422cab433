"""Stage `translate`: every photo (or `translate.count`) -> a 256 px Monet-style JPEG in
data/translated/, and Kaggle's submission/images.zip."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from lowshot.images.folder import list_images
from lowshot.params import Params
from lowshot.runtime import pick_device, pick_precision
from lowshot.train.checkpoint import PHOTO2MONET_FILE, load_photo2monet
from lowshot.translate import translate_photos, write_submission
from stages.paths import CYCLEGAN_MODELS, PROCESSED, SUBMISSION, TRANSLATED

log = logging.getLogger(__name__)


@dataclass
class TranslateSummary:
    translated: int
    zipped: int

    def describe(self) -> str:
        return f"translated {self.translated} photos into {TRANSLATED}; {self.zipped} JPEGs in {SUBMISSION}"


def run(params: Params, *, progress: bool = True) -> TranslateSummary:
    p = params.translate
    model = CYCLEGAN_MODELS / PHOTO2MONET_FILE
    if not model.is_file():
        raise FileNotFoundError(f"no trained translator at {model}: run `lowshot cyclegan` (or `dvc repro cyclegan`) first")
    photos = list_images(PROCESSED / "photos")
    if p.count is not None:
        if p.count > len(photos):
            log.warning("translate.count = %d but there are %d photos: translating them all", p.count, len(photos))
        photos = photos[:p.count]
    device = pick_device(params.device)
    precision = pick_precision(params.precision, device, params.channels_last, stage="translate")
    G = precision.prepare(load_photo2monet(model, device))
    images = translate_photos(G, model, photos, TRANSLATED, batch_size=p.batch_size, quality=p.quality,
                              precision=precision, progress=progress)
    return TranslateSummary(len(images), write_submission(images, SUBMISSION))
