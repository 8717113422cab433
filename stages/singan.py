"""Stage `singan`: ConSinGAN on single paintings of monet_train -> models/singan/, data/singan/,
reports/singan_sheet.png.

Each painting trains in its own folder `models/singan/runs/<stem>-<fingerprint>` (persisted by DVC;
the fingerprint covers the training params, the seed and the painting's content): a killed stage
keeps the finished paintings and resumes the one it was on, and a changed param retrains only
the paintings whose fingerprint it changes (`samples` and `size` retrain none, a larger
`paintings` count trains only the new ones). Folders of paintings no longer asked for are deleted
once every asked-for painting is trained. Variation i of a painting is drawn from its own seed,
so any one can be redrawn alone.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from lowshot.fsutil import atomic_dir
from lowshot.images.folder import list_images
from lowshot.images.grid import save_grid
from lowshot.params import Params
from lowshot.runtime import pick_device
from lowshot.train import checkpoint
from lowshot.train.gan_loop import derive_seed
from lowshot.train.samples import write_images
from lowshot.train.singan_loop import (
    MODEL_FILE,
    image_pyramid,
    load_model,
    load_painting,
    run_fingerprint,
    train_singan,
)
from stages.paths import PROCESSED, REPORTS, SINGAN, SINGAN_LIVE, SINGAN_MODELS

log = logging.getLogger(__name__)

SHEET_VARIATIONS = 7  # variations shown beside each painting on the sheet


@dataclass
class SinGANSummary:
    trained: list[str]  # paintings trained (or resumed) by this call
    ready: list[str]  # paintings with a finished model
    written: Path | None  # the folder of variations, None when stopped early
    variations: int

    def describe(self) -> str:
        head = f"{len(self.ready)} painting(s) trained ({len(self.trained)} by this run)"
        if self.written is None:
            return head + "; stopped before drawing"
        return head + f"; {self.variations} variations in {self.written}"


def select_paintings(choice: int | list[str], folder: Path, seed: int) -> list[Path]:
    """The paintings of `folder` to learn: `choice` names them, or is a count drawn by seed (the
    first n of one seeded permutation, so a larger count keeps the paintings a smaller one chose)."""
    files = list_images(folder)
    if isinstance(choice, list):
        by_name = {p.name: p for p in files}
        missing = [name for name in choice if name not in by_name]
        if missing:
            raise FileNotFoundError(f"singan.paintings names {missing}, not in {folder}")
        return [by_name[name] for name in choice]
    if choice > len(files):
        raise ValueError(f"singan.paintings asks for {choice} paintings but {folder} holds {len(files)}")
    order = np.random.default_rng(derive_seed(seed, "singan", "paintings")).permutation(len(files))
    return [files[i] for i in order[:choice]]


def variation_seeds(seed: int, painting: Path, count: int) -> list[int]:
    """Seed of each variation of `painting`: variation i can be redrawn alone."""
    return [derive_seed(seed, "singan", "variation", painting.name, i) for i in range(count)]


def run(params: Params, *, progress: bool = True, size: tuple[int, int] | None = None,
        max_iters: int | None = None) -> SinGANSummary:
    """Train every asked-for painting, then draw `singan.samples` variations of each at
    `singan.size` px square (from the training size as `singan.upscale` says) into data/singan/,
    or, with `size` = (width, height), at that size by scaled noise maps into
    data/singan_<W>x<H>/; with a contact sheet."""
    s = params.singan
    device = pick_device(params.device)
    paintings = select_paintings(s.paintings, PROCESSED / "monet_train", params.seed)
    runs = {p: SINGAN_MODELS / checkpoint.RUNS_DIR /
            f"{p.stem}-{checkpoint.params_hash(run_fingerprint(s, params.seed, p))[:12]}" for p in paintings}
    trained = []
    budget = max_iters  # iterations this call may still run (None: no limit)
    for painting, run_dir in runs.items():
        if (run_dir / MODEL_FILE).is_file():
            continue
        if budget == 0:
            break
        trained.append(painting.name)
        stats = train_singan(s, painting=painting, out_dir=run_dir, live_dir=SINGAN_LIVE / painting.stem,
                             device=device, seed=params.seed, progress=progress, max_iters=budget)
        budget = None if budget is None else budget - int(stats["progress/ran"])
    ready = [p.name for p, r in runs.items() if (r / MODEL_FILE).is_file()]
    if len(ready) < len(runs):  # stopped by max_iters
        log.info("stopped with %d of %d paintings trained", len(ready), len(runs))
        return SinGANSummary(trained, ready, None, 0)
    _prune(set(runs.values()))

    width, height = size or (s.size, s.size)
    out = SINGAN if size is None else SINGAN.with_name(f"{SINGAN.name}_{width}x{height}")
    sheet = REPORTS / ("singan_sheet.png" if size is None else f"singan_sheet_{width}x{height}.png")
    cells, labels = [], []
    with atomic_dir(out) as tmp:
        for painting, run_dir in tqdm(runs.items(), desc="singan draw", unit="painting", disable=not progress):
            model = load_model(run_dir / MODEL_FILE, device)
            seeds = variation_seeds(params.seed, painting, s.samples)
            if size is None and s.upscale == "resize":
                (images,) = image_pyramid(model.draw(seeds), [(height, width)])
            else:
                images = model.draw(seeds, (height, width))
            write_images(images, [f"{painting.stem}-{i:03d}.png" for i in range(len(images))], tmp)
            (original,) = image_pyramid(load_painting(painting), [(height, width)])
            shown = images[:SHEET_VARIATIONS]
            cells.append(torch.cat([original, shown]))
            labels += [painting.name] + [f"#{i}" for i in range(len(shown))]
    save_grid(torch.cat(cells), sheet, ncols=1 + min(SHEET_VARIATIONS, s.samples), labels=labels)
    log.info("wrote %d variations of %d paintings to %s, sheet %s", s.samples * len(runs), len(runs), out, sheet)
    return SinGANSummary(trained, [p.name for p in runs], out, s.samples * len(runs))


def _prune(keep: set[Path]) -> None:
    """Delete run folders of paintings (or params) no longer asked for."""
    for other in (SINGAN_MODELS / checkpoint.RUNS_DIR).glob("*"):
        if other.is_dir() and other not in keep:
            shutil.rmtree(other)
            log.info("removed %s (a painting or params no longer asked for)", other)
