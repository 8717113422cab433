"""Photos -> Monet-style images with a trained photo2monet generator, and the Kaggle submission zip.

Two uses share one engine (`translate_files`):
- the pipeline's `translate` stage (`translate_photos`): every processed photo as a 256x256 JPEG, the
  format of Kaggle's "I'm Something of a Painter Myself" (`images.zip`: 7,000 to 10,000 256x256 RGB
  JPEGs at the top level). Resumable: each JPEG is written atomically, and a rerun with the same
  generator (its file hash, kept in `GENERATOR_MARK`) translates only the photos still missing;
- `lowshot translate --input PATH --output DIR` (`translate_paths`): any photo or folder of photos, at
  256 px (long side), another long side, or the photo's own size. The generator is fully convolutional:
  a photo is reflect-padded to a multiple of 4 and cropped back; one larger than `tile` pixels on a
  side is translated in overlapping tiles blended with feathered (linear-ramp) seams, so memory stays
  bounded. EXIF orientation is applied; an unreadable file is reported and skipped, the rest go on.

The engine keeps the network busy: DataLoader worker processes decode and resize the next photos while
the network runs, same-sized photos are batched, and a writer thread encodes and writes the previous
outputs (benchmarks/translate_throughput.py measures it against the generator's forward alone).
"""

from __future__ import annotations

import io
import itertools
import logging
import os
import zipfile
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from lowshot.fsutil import atomic_path, atomic_write_bytes, atomic_write_text, remove_stale_temps, sha256_file
from lowshot.images.folder import list_images
from lowshot.images.io import ImageRejected, load_rgb
from lowshot.precision import FP32, Precision

log = logging.getLogger(__name__)

KAGGLE_SIZE = 256
KAGGLE_MIN, KAGGLE_MAX = 7_000, 10_000
GENERATOR_MARK = ".generator-sha256"
MULTIPLE = 4  # the generator's two stride-2 levels need sides divisible by 4
MAX_PIXELS = 180_000_000  # larger files are refused as decompression bombs
OUTPUT_FORMATS = {"jpg": "JPEG", "png": "PNG"}


class SubmissionError(ValueError):
    """A file that would make the submission zip invalid."""


@dataclass(frozen=True)
class Sizing:
    """How a photo is sized before translation: `square` (resized to size x size, as the Kaggle set),
    `long_side` (aspect kept, the longer side `size`) or `keep` (its own size)."""

    mode: Literal["square", "long_side", "keep"]
    size: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("square", "long_side", "keep"):
            raise ValueError(f"sizing mode must be square, long_side or keep, got {self.mode!r}")
        if self.mode != "keep" and (self.size is None or self.size < MULTIPLE):
            raise ValueError(f"sizing {self.mode} needs a size >= {MULTIPLE}, got {self.size!r}")

    def apply(self, im: PIL.Image.Image) -> PIL.Image.Image:
        w, h = im.size
        if self.mode == "keep":
            target = (w, h)
        elif self.mode == "square":
            target = (self.size, self.size)
        else:
            scale = self.size / max(w, h)
            target = (max(1, round(w * scale)), max(1, round(h * scale)))
        return im if target == (w, h) else im.resize(target, PIL.Image.Resampling.BICUBIC, reducing_gap=3.0)


@dataclass
class TranslateReport:
    """What `translate_files` did: the images written, in job order, and the photos that failed, with why."""

    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


class _Photos(Dataset):
    """Item i: (i, uint8 (3, H, W) photo as sized, "") or (i, empty tensor, why it could not be read)."""

    def __init__(self, paths: Sequence[Path], sizing: Sizing) -> None:
        self.paths, self.sizing = list(paths), sizing

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, str]:
        draft = self.sizing.size if self.sizing.mode == "long_side" else None
        try:
            im = self.sizing.apply(load_rgb(self.paths[i], min_side=1, max_pixels=MAX_PIXELS, draft_to=draft))
        except ImageRejected as e:
            return i, torch.empty(0, dtype=torch.uint8), str(e)
        return i, torch.from_numpy(np.asarray(im).transpose(2, 0, 1).copy()), ""


def _encode(image: torch.Tensor, fmt: str, quality: int) -> bytes:
    """(3, H, W) float in [-1, 1] -> JPEG or PNG bytes."""
    pixels = ((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    options = {"quality": quality} if fmt == "JPEG" else {"compress_level": 6}
    PIL.Image.fromarray(pixels, "RGB").save(buf, format=fmt, **options)
    return buf.getvalue()


def _feather(length: int, overlap: int, first: bool, last: bool) -> torch.Tensor:
    """Blending weights along one axis of a tile: linear ramps over the overlaps with its neighbours."""
    w = torch.ones(length)
    ramp = torch.arange(1, overlap + 1, dtype=torch.float32) / (overlap + 1)
    if not first:
        w[:overlap] = ramp
    if not last:
        w[length - overlap:] = torch.minimum(w[length - overlap:], ramp.flip(0))
    return w


def _tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, tile - overlap))
    return starts + [length - tile]


def translate_tiled(generator: nn.Module, x: torch.Tensor, *, tile: int, overlap: int) -> torch.Tensor:
    """G(x) for one (1, 3, H, W) image (H, W multiples of 4), in overlapping tiles of at most `tile` pixels a
    side blended with linear ramps over `overlap` pixels; the same as G(x) when x fits in one tile."""
    if tile % MULTIPLE or overlap % MULTIPLE or not 0 <= overlap < tile:
        raise ValueError(f"tile ({tile}) and overlap ({overlap}) must be multiples of {MULTIPLE}, overlap < tile")
    _, _, h, w = x.shape
    if h <= tile and w <= tile:
        return generator(x).float()
    out = torch.zeros(1, 3, h, w)
    weight = torch.zeros(1, 1, h, w)
    ys, xs = _tile_starts(h, tile, overlap), _tile_starts(w, tile, overlap)
    for y0 in ys:
        for x0 in xs:
            th, tw = min(tile, h), min(tile, w)
            y = generator(x[..., y0:y0 + th, x0:x0 + tw]).float().cpu()
            wgt = torch.outer(_feather(th, overlap, y0 == ys[0], y0 == ys[-1]),
                              _feather(tw, overlap, x0 == xs[0], x0 == xs[-1]))[None, None]
            out[..., y0:y0 + th, x0:x0 + tw] += y * wgt
            weight[..., y0:y0 + th, x0:x0 + tw] += wgt
    return out / weight


def _pad(x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """x reflect-padded on the bottom and right to sides divisible by MULTIPLE, and its own sides."""
    h, w = x.shape[-2:]
    ph, pw = -h % MULTIPLE, -w % MULTIPLE
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > MULTIPLE else "replicate")
    return x, h, w


def _batches(loader: DataLoader, batch_size: int) -> Iterator[list[tuple[int, torch.Tensor, str]]]:
    """Consecutive items grouped into batches of one shape (a failed item travels alone)."""
    group: list[tuple[int, torch.Tensor, str]] = []
    for item in loader:
        if group and (item[2] or group[0][2] or item[1].shape != group[0][1].shape or len(group) == batch_size):
            yield group
            group = []
        group.append(item)
    if group:
        yield group


def module_device(module: nn.Module) -> torch.device:
    """Where `module` lives: its first parameter's device, or its first buffer's (the `patches` translator has
    no parameters)."""
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        return tensor.device
    raise ValueError(f"{type(module).__name__} has neither parameters nor buffers: no device to run on")


def translate_files(generator: nn.Module, jobs: Sequence[tuple[Path, Path]], *, sizing: Sizing,
                    precision: Precision = FP32, batch_size: int = 16, quality: int = 95, workers: int = 1,
                    tile: int = 1024, overlap: int = 64, progress: bool = True) -> TranslateReport:
    """Translate each (photo, target) job: the photo sized by `sizing`, the result written atomically to
    target (JPEG or PNG by its suffix, at its sized resolution). Photos that cannot be read are reported
    in `failed` and skipped. `workers` decoding processes (0: in this process); photos larger than
    `tile` pixels on a side are tiled (see `translate_tiled`)."""
    report = TranslateReport()
    if not jobs:
        return report
    fmts = [OUTPUT_FORMATS.get(t.suffix.lower().lstrip(".").replace("jpeg", "jpg")) for _, t in jobs]
    if None in fmts:
        bad = jobs[fmts.index(None)][1]
        raise ValueError(f"cannot write {bad}: output formats are {', '.join('.' + f for f in OUTPUT_FORMATS)}")
    device = module_device(generator)
    loader = DataLoader(_Photos([p for p, _ in jobs], sizing), batch_size=None, num_workers=workers,
                        prefetch_factor=2 * batch_size if workers else None)
    done = [False] * len(jobs)
    pending: list[Future] = []

    def write(image: torch.Tensor, i: int) -> None:
        atomic_write_bytes(jobs[i][1], _encode(image, fmts[i], quality), durable=False)
        done[i] = True

    with ThreadPoolExecutor(1) as writer, torch.inference_mode(), \
            tqdm(total=len(jobs), unit="img", desc="translate", disable=not progress) as bar:
        for group in _batches(loader, batch_size):
            if group[0][2]:
                i, _, why = group[0]
                log.warning("cannot translate %s: %s", jobs[i][0], why)
                report.failed.append((jobs[i][0], why))
                bar.update(1)
                continue
            x, h, w = _pad(torch.stack([t for _, t, _ in group]).to(device).float() / 127.5 - 1.0)
            with precision.autocast(device):
                if len(group) == 1:
                    y = translate_tiled(generator, precision.inputs(x), tile=tile, overlap=overlap)
                else:
                    y = generator(precision.inputs(x)).float()
            y = y[..., :h, :w].cpu()
            pending = [f for f in pending if not f.done()]
            while len(pending) > 2 * batch_size:  # bound the images waiting to be written
                pending.pop(0).result()
            pending += [writer.submit(write, image, i) for image, (i, _, _) in zip(y, group)]
            bar.update(len(group))
        for f in pending:
            f.result()
    report.written = [t for (_, t), ok in zip(jobs, done) if ok]
    return report


def translate_photos(generator: nn.Module, generator_file: str | os.PathLike, photos: Sequence[Path],
                     out_dir: str | os.PathLike, *, batch_size: int = 16, quality: int = 95,
                     precision: Precision = FP32, workers: int = 1, progress: bool = True) -> list[Path]:
    """Translate `photos` to `out_dir/<photo stem>.jpg` (256x256, Kaggle's format), `batch_size` at a time.

    JPEGs already in `out_dir` from the same `generator_file` are kept; other files there are
    removed (a different generator, or a photo no longer asked for). Returns the JPEGs, in the
    order of `photos`; a photo that cannot be read raises ValueError naming it (the others are written).
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
    todo = [(Path(p), t) for p, t in zip(photos, targets) if not t.is_file()]
    if len(todo) < len(targets):
        log.info("%d of %d photos already translated by this generator", len(targets) - len(todo), len(targets))
    report = translate_files(generator, todo, sizing=Sizing("square", KAGGLE_SIZE), precision=precision,
                             batch_size=batch_size, quality=quality, workers=workers, progress=progress)
    if report.failed:
        raise ValueError(f"{len(report.failed)} photo(s) could not be translated: "
                         + "; ".join(f"{p} ({why})" for p, why in report.failed[:5]))
    return targets


def output_jobs(source: str | os.PathLike, out_dir: str | os.PathLike, fmt: str = "jpg") -> list[tuple[Path, Path]]:
    """(photo, target) pairs for a photo or a folder of photos: `out_dir/<stem>.<fmt>`; two photos of one
    stem (a.jpg, a.png) keep their extension in the name (a_jpg.png). Raises FileNotFoundError when
    `source` does not exist and ValueError for an unknown format or a folder without images."""
    source, out_dir = Path(source), Path(out_dir)
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"output format must be one of {', '.join(OUTPUT_FORMATS)}, got {fmt!r}")
    if source.is_dir():
        photos = list_images(source)
        if not photos:
            raise ValueError(f"{source} holds no images ({', '.join(sorted({'.jpg', '.png', '.webp', '.tif'}))} ...)")
    elif source.is_file():
        photos = [source]
    else:
        raise FileNotFoundError(f"--input {source} does not exist")
    stems = [p.stem for p in photos]
    repeated = {s for s in stems if stems.count(s) > 1}
    return [(p, out_dir / f"{p.stem}_{p.suffix.lstrip('.').lower()}.{fmt}" if p.stem in repeated
             else out_dir / f"{p.stem}.{fmt}") for p in photos]


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
