"""Stage `generate`: draw `generate.count` paintings from the trained GAN, keep the `generate.keep`
most Monet-like by the rank stage's scorer -> data/synthetic/ (+ scores.csv), reports/synthetic_sheet.png."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from lowshot.fsutil import atomic_path
from lowshot.images.grid import save_grid
from lowshot.params import Params
from lowshot.precision import Precision
from lowshot.rank.ranking import rank_sheet, rank_table, write_top
from lowshot.runtime import pick_device, pick_precision
from lowshot.train.checkpoint import GENERATOR_FILE, load_generator
from lowshot.train.samples import interpolate, latent_dim, seed_latents, synthesize, write_images
from stages.paths import GAN_MODELS, REPORTS, SYNTHETIC
from stages.rank import score_images

log = logging.getLogger(__name__)

INTERPOLATION_ROWS = 4
SEED_STRIDE = 1_000_000  # image i of a run with seed s is drawn from seed s * SEED_STRIDE + i


@dataclass
class GenerateSummary:
    drawn: int
    kept: int
    best: float | None
    written: Path

    def describe(self) -> str:
        if self.best is None:
            return f"wrote {self.written}"
        return f"drew {self.drawn} paintings, kept the best {self.kept} (top score {self.best:.4g}) in {self.written}"


def image_seeds(seed: int, count: int) -> list[int]:
    return [seed * SEED_STRIDE + i for i in range(count)]


def _load(params: Params, device: torch.device) -> torch.nn.Module:
    path = GAN_MODELS / GENERATOR_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no trained generator at {path}: run `lowshot train` (or `dvc repro train`) first")
    return load_generator(path, device)


def run(params: Params, *, progress: bool = True, interpolate_steps: int | None = None) -> GenerateSummary:
    g = params.generate
    device = pick_device(params.device)
    G = _load(params, device)
    precision = pick_precision(params.precision, device, stage="generate")
    if interpolate_steps:
        return _interpolation(params, G, interpolate_steps, precision)
    seeds = image_seeds(params.seed, g.count)
    z = seed_latents(seeds, latent_dim(G))
    SYNTHETIC.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tmp-generate-", dir=SYNTHETIC.parent) as tmp:
        names = [f"seed{s:09d}.png" for s in seeds]
        paths = []
        with tqdm(total=len(seeds), unit="img", desc="generate", disable=not progress) as bar:
            for images in synthesize(G, z, psi=g.truncation, batch_size=g.batch_size, precision=precision):
                paths += write_images(images, names[len(paths):len(paths) + len(images)], tmp)
                bar.update(len(images))
        table = rank_table(paths, score_images(params, paths, device, progress=progress))
        rank_sheet(table, REPORTS / "synthetic_sheet.png")
        kept = write_top(table, g.keep, SYNTHETIC)
    table["seed"] = [int(Path(p).stem.removeprefix("seed")) for p in table["path"]]
    table["kept"] = table["rank"] <= len(kept)
    table["path"] = [(SYNTHETIC / Path(p).name).as_posix() if k else "" for p, k in zip(table["path"], table["kept"])]
    with atomic_path(SYNTHETIC / "scores.csv") as out:
        table.to_csv(out, index=False)
    log.info("generator %s (kimg %.3f), truncation %s", GAN_MODELS / GENERATOR_FILE, G.kimg, g.truncation)
    return GenerateSummary(len(seeds), len(kept), float(table["score"].iloc[0]), SYNTHETIC)


def _interpolation(params: Params, G: torch.nn.Module, steps: int, precision: Precision) -> GenerateSummary:
    """reports/interpolation.png: INTERPOLATION_ROWS strips of `steps` images between seed pairs."""
    seeds = image_seeds(params.seed, 2 * INTERPOLATION_ROWS)
    z = seed_latents(seeds, latent_dim(G))
    rows = [interpolate(G, z[2 * r], z[2 * r + 1], steps, psi=params.generate.truncation, precision=precision)
            for r in range(INTERPOLATION_ROWS)]
    out = REPORTS / "interpolation.png"
    save_grid(torch.cat(rows), out, ncols=steps)
    return GenerateSummary(0, 0, None, out)
