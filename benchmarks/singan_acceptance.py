"""Acceptance of the ConSinGAN issue on real paintings: are the variations Monet-like, and are they
variations rather than copies?

    python benchmarks/singan_acceptance.py [--project /tmp/singan_acceptance] [--paintings 5] [--samples 20]
        [--set iterations=150 --set max_size=128 ...] [--seed 0] [--device cpu]

The `singan` stage itself runs in `--project` (outside the repository): its monet_train is a link to
../shared/datasets/monet-train30, so it picks `--paintings` of those 30 by seed, trains one model
per painting with the `singan` params' defaults (changed with `--set key=value`), and writes
`--samples` variations of each at 256x256 into `<project>/data/singan/` and the contact sheet
`<project>/reports/singan_sheet.png`. Training resumes when the script is run again. Then, for
comparison, the same seeds drawn at each model's own training size and resized to 256 (bicubic),
and each model's reconstruction (its fixed-noise output, the model's nearest thing to a copy).

(a) Monet-likeness: FID and KID (100 subsets of min(1000, sizes), seed 0) of every set against
monet-pool120, the reference no model saw. Baselines: the 30 originals of monet-train30 and the
source paintings themselves. FID is biased upward for small sets: compare FIDs only between rows of
equal size; KID is the fair small-set figure.

(b) Memorisation (MiFID's d: 1 - |cosine| between Inception features, Kaggle's "I'm Something of a
Painter Myself" scorer): for each image, its distance to its own source painting, and its minimum
distance to all 30 training paintings (MiFID's d against the training set). Kaggle counts a set
as memorised when the mean is below 0.1. Baselines: reconstructions (near-copies) and, for the
originals, the distance from each to the nearest *other* training painting (how far apart two
different Monets are).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the `lowshot` command (see stages/cli.py)

import argparse
import logging
import subprocess
from pathlib import Path

import numpy as np
import torch

from lowshot.images.folder import list_images
from lowshot.metrics.cache import cached_features
from lowshot.metrics.distances import fid, kid, min_cosine_distances
from lowshot.metrics.inception import InceptionFeatures
from lowshot.params import parse_params
from lowshot.runtime import pick_device
from lowshot.train.samples import write_images
from lowshot.train.singan_loop import MODEL_FILE, image_pyramid, load_model
from stages import singan as singan_stage

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
MEMORISED = 0.1  # Kaggle's MiFID threshold on the mean distance


def parse_set(items: list[str]) -> dict[str, object]:
    """['iterations=150', ...] -> {'iterations': 150, ...} (values parsed as YAML scalars)."""
    import yaml

    out = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key] = yaml.safe_load(value)
    return out


def cpu_flags() -> str:
    found = subprocess.run("grep -o 'avx512[a-z_0-9]*\\|amx[a-z_0-9]*' /proc/cpuinfo | sort -u", shell=True,
                           capture_output=True, text=True).stdout.split()
    return " ".join(found) or "none"


def resized_variations(params, runs: dict[Path, Path], folder: Path, device: torch.device) -> dict[Path, list[Path]]:
    """The stage's seeds drawn at each model's own size, resized to `singan.size`; and reconstructions."""
    s = params.singan
    out: dict[Path, list[Path]] = {}
    for painting, run_dir in runs.items():
        model = load_model(run_dir / MODEL_FILE, device)
        (images,) = image_pyramid(model.draw(singan_stage.variation_seeds(params.seed, painting, s.samples)),
                                  [(s.size, s.size)])
        (recon,) = image_pyramid(model.reconstruct(), [(s.size, s.size)])
        (folder / "resized").mkdir(parents=True, exist_ok=True)
        (folder / "recon").mkdir(parents=True, exist_ok=True)
        out[painting] = write_images(images, [f"{painting.stem}-{i:03d}.png" for i in range(len(images))],
                                     folder / "resized")
        write_images(recon, [f"{painting.stem}.png"], folder / "recon")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, default=Path("/tmp/singan_acceptance"))
    parser.add_argument("--paintings", type=int, default=5)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="other singan params")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    if not (DATASETS / "monet-train30").is_dir() or not (DATASETS / "monet-pool120").is_dir():
        raise SystemExit(f"needs {DATASETS}/monet-train30 and monet-pool120")
    params = parse_params({"seed": args.seed, "device": args.device, "singan": {
        "paintings": args.paintings, "samples": args.samples, **parse_set(args.set)}})
    project = args.project.resolve()
    train_dir = project / "data/processed/monet_train"
    train_dir.parent.mkdir(parents=True, exist_ok=True)
    if not train_dir.exists():
        train_dir.symlink_to(DATASETS / "monet-train30", target_is_directory=True)

    # --- the stage: train (or resume), draw, sheet
    os.chdir(project)
    summary = singan_stage.run(params, progress=False)
    print(f"\nsingan stage: {summary.describe()}; sheet {project / 'reports/singan_sheet.png'}")
    s = params.singan
    paintings = singan_stage.select_paintings(s.paintings, train_dir, params.seed)
    runs = {p: next((project / "models/singan/runs").glob(f"{p.stem}-*")) for p in paintings}
    device = pick_device(params.device)
    resized = resized_variations(params, runs, project / "data/singan_compare", device)
    seconds = {p: load_model(r / MODEL_FILE).seconds for p, r in runs.items()}
    sizes = {p: load_model(r / MODEL_FILE).sizes for p, r in runs.items()}

    # --- features
    extractor = InceptionFeatures(device)
    cache = project / "data/cache/features"

    def feats(paths: list[Path]) -> np.ndarray:
        return cached_features(paths, cache_dir=cache, extractor=extractor, workers=2, progress=False)

    originals = list_images(train_dir)
    pool = feats(list_images(DATASETS / "monet-pool120"))
    train = feats(originals)
    index = {p.name: i for i, p in enumerate(originals)}
    sources = train[[index[p.name] for p in paintings]]
    noise_paths = {p: sorted((project / "data/singan").glob(f"{p.stem}-*.png")) for p in paintings}
    sets = {
        "monet-train30 originals": (train, None),
        f"the {len(paintings)} source paintings": (sources, None),
        f"variations, scaled noise maps ({s.size} px, the stage's output)":
            (feats([q for p in paintings for q in noise_paths[p]]), [p for p in paintings for _ in noise_paths[p]]),
        f"variations, drawn at training size, resized to {s.size}":
            (feats([q for p in paintings for q in resized[p]]), [p for p in paintings for _ in resized[p]]),
        "reconstructions (near-copies), resized":
            (feats(sorted((project / "data/singan_compare/recon").glob("*.png"))), sorted(paintings)),
    }

    print(f"\nCPU flags: {cpu_flags()}; {torch.get_num_threads()} threads; loadavg "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(f"params: singan {s.model_dump(exclude={'paintings'})}")
    print("\nTraining time per painting (singan_loop's own clock, summed over resumes)")
    print("| painting | pyramid | minutes |")
    print("|---|---|---|")
    for p in paintings:
        print(f"| {p.name} | {' '.join(f'{h}' for h, _ in sizes[p])} px | {seconds[p] / 60:.1f} |")
    print(f"| mean | | {np.mean(list(seconds.values())) / 60:.1f} |")

    print("\n(a) Against monet-pool120 (120 Monets no model saw)")
    print("| set | n | KID x1000 (mean +- std over subsets) | FID |")
    print("|---|---|---|---|")
    for name, (f, _) in sets.items():
        k, k_std = kid(f, pool, seed=0)
        print(f"| {name} | {len(f)} | {k * 1000:.2f} +- {k_std * 1000:.2f} | {fid(f, pool):.1f} |")

    print(f"\n(b) Memorisation: 1 - |cos| of Inception features (MiFID's d; memorised below {MEMORISED})")
    print("| set | n | to own source: mean (min) | share < 0.1 | to nearest of monet-train30: mean (MiFID's d) |")
    print("|---|---|---|---|---|")
    unit = train / np.linalg.norm(train, axis=1, keepdims=True)
    for name, (f, owners) in sets.items():
        nearest = min_cosine_distances(f, train)
        if owners is None:  # real paintings: distance to the nearest *other* training painting
            g = f / np.linalg.norm(f, axis=1, keepdims=True)
            cos = np.abs(g @ unit.T)
            cos[cos > 1 - 1e-6] = -np.inf  # itself
            nearest = 1 - cos.max(axis=1)
            print(f"| {name} | {len(f)} | - | - | {nearest.mean():.3f} (to the nearest other) |")
            continue
        own = np.array([min_cosine_distances(row[None], train[[index[o.name]]])[0] for row, o in zip(f, owners)])
        print(f"| {name} | {len(f)} | {own.mean():.3f} ({own.min():.3f}) | {(own < MEMORISED).mean():.0%} | "
              f"{nearest.mean():.3f} |")
    print(f"\nvariations: {project / 'data/singan'}; sheet: {project / 'reports/singan_sheet.png'}")


if __name__ == "__main__":
    main()
