"""Stage `preprocess`: scraped paintings, photos and real Monets -> 256 px squares in data/processed/."""

from __future__ import annotations

from lowshot.images.folder import list_images
from lowshot.images.preprocess import PreprocessSummary, preprocess_all
from lowshot.params import Params
from stages.paths import EXTERNAL, PROCESSED, SCRAPED


def run(params: Params, *, progress: bool = True) -> PreprocessSummary:
    p = params.preprocess
    inputs = {
        "paintings": list_images(SCRAPED / "images"),
        "photos": list_images(EXTERNAL / "photos"),
        "monet": list_images(EXTERNAL / "monet"),
    }
    return preprocess_all(
        inputs,
        PROCESSED,
        size=p.size,
        modes={"paintings": p.mode, "photos": p.photos_mode, "monet": p.monet_mode},
        min_side=p.min_side,
        max_pixels=int(p.max_megapixels * 1e6),
        dedupe_distance=p.dedupe_distance,
        monet_train_count=p.monet_train_count,
        seed=params.seed,
        workers=p.workers,
    )
