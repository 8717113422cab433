"""Photos -> Monet-style JPEGs with a trained photo2monet generator, and the Kaggle submission zip.

Kaggle's "I'm Something of a Painter Myself" takes `images.zip` holding 7,000 to 10,000
256x256 RGB JPEGs at the top level. Translation is resumable: each JPEG is written atomically,
and a rerun with the same generator (its file hash, kept in `GENERATOR_MARK`) translates only
the photos still missing; a different generator starts the folder afresh.
"""

from __future__ import annotations

import io
import logging
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from torch import nn
from tqdm import tqdm

from lowshot.fsutil import atomic_path, atomic_write_bytes, atomic_write_text, remove_stale_temps, sha256_file
from lowshot.precision import FP32, Precision

log = logging.getLogger(__name__)

KAGGLE_SIZE = 256
KAGGLE_MIN, KAGGLE_MAX = 7_000, 10_000
GENERATOR_MARK = ".generator-sha256"


class SubmissionError(ValueError):
    """A file that would make the submission zip invalid."""


def _photo_tensor(path: Path) -> torch.Tensor:
    """A photo as (3, 256, 256) in [-1, 1]; resized (bicubic) only when not already 256x256."""
    with PIL.Image.open(path) as im:
        rgb = im.convert("RGB")
    if rgb.size != (KAGGLE_SIZE, KAGGLE_SIZE):
        rgb = rgb.resize((KAGGLE_SIZE, KAGGLE_SIZE), PIL.Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(rgb).transpose(2, 0, 1).copy()).float() / 127.5 - 1


def _jpeg(image: torch.Tensor, quality: int) -> bytes:
    pixels = ((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    PIL.Image.fromarray(pixels, "RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def translate_photos(generator: nn.Module, generator_file: str | os.PathLike, photos: Sequence[Path],
                     out_dir: str | os.PathLike, *, batch_size: int = 16, quality: int = 95,
                     precision: Precision = FP32, progress: bool = True) -> list[Path]:
    """Translate `photos` to `out_dir/<photo stem>.jpg` (256x256), `batch_size` at a time.

    JPEGs already in `out_dir` from the same `generator_file` are kept; other files there are
    removed (a different generator, or a photo no longer asked for). Returns the JPEGs, in the
    order of `photos`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out_dir)
    mark = sha256_file(generator_file)
    same_generator = (out_dir / GENERATOR_MARK).is_file() and (out_dir / GENERATOR_MARK).read_text().strip() == mark
    targets = [out_dir / f"{Path(p).stem}.jpg" for p in photos]
    if len(set(targets)) != len(targets):
        raise ValueError(f"photos share file stems, so their translations would overwrite each other in {out_dir}")
    wanted = set(targets)
    for old in out_dir.glob("*.jpg"):
        if not same_generator or old not in wanted:
            old.unlink()
    atomic_write_text(out_dir / GENERATOR_MARK, mark + "\n")
    todo = [(p, t) for p, t in zip(photos, targets) if not t.is_file()]
    if len(todo) < len(targets):
        log.info("%d of %d photos already translated by this generator", len(targets) - len(todo), len(targets))
    device = next(generator.parameters()).device
    with tqdm(total=len(targets), initial=len(targets) - len(todo), unit="img", desc="translate",
              disable=not progress) as bar, torch.inference_mode():
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            x = precision.inputs(torch.stack([_photo_tensor(Path(p)) for p, _ in chunk]).to(device))
            with precision.autocast(device):
                y = generator(x).float().cpu()
            for image, (_, target) in zip(y, chunk):
                atomic_write_bytes(target, _jpeg(image, quality), durable=False)
            bar.update(len(chunk))
    return targets


def check_submission_image(name: str, data: bytes) -> None:
    """Raise SubmissionError unless `data` is a 256x256 RGB JPEG."""
    try:
        with PIL.Image.open(io.BytesIO(data)) as im:
            fmt, mode, size = im.format, im.mode, im.size
    except (OSError, ValueError) as e:
        raise SubmissionError(f"{name} is not an image: {e}") from None
    if (fmt, mode, size) != ("JPEG", "RGB", (KAGGLE_SIZE, KAGGLE_SIZE)):
        raise SubmissionError(f"{name} is a {size[0]}x{size[1]} {mode} {fmt}; Kaggle needs 256x256 RGB JPEG")


def write_submission(images: Sequence[Path], zip_path: str | os.PathLike) -> int:
    """Write Kaggle's `images.zip`: the JPEGs `images` at the zip's top level, each checked first.

    Fewer than 7,000 images: a warning (Kaggle will refuse it) and all are written; more than
    10,000: the first 10,000 are written. Returns the number of images in the zip.
    """
    if not images:
        raise SubmissionError("no translated images to put in the submission")
    if len(images) < KAGGLE_MIN:
        log.warning("only %d translated images: Kaggle wants %d to %d, so this zip will be refused there "
                    "(translate more photos: translate.count, or a bigger photo set in fetch.photos)",
                    len(images), KAGGLE_MIN, KAGGLE_MAX)
    if len(images) > KAGGLE_MAX:
        log.warning("%d translated images: the zip holds the first %d (Kaggle's limit)", len(images), KAGGLE_MAX)
        images = images[:KAGGLE_MAX]
    names = [Path(p).name for p in images]
    if len(set(names)) != len(names):
        raise SubmissionError("two translated images share a file name")
    with atomic_path(zip_path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        for path, name in zip(images, names):
            data = Path(path).read_bytes()
            check_submission_image(name, data)
            zf.writestr(name, data)
    return len(images)
