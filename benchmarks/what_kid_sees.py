"""What separates photos from Monets in the yardstick's KID: palette, softness or texture?

    python benchmarks/what_kid_sees.py [--translated DIR] [--out /tmp/lowshot-kid-probe]

Scores training-free edits of the yardstick's 500 held-out photos (the last of photos/) against
monet-pool120, as `benchmarks/quality.py` scores translations: the photos with Monet's palette (each
photo's per-channel mean and standard deviation matched to those of monet-train30's pixels), blurred
(Gaussian, radius 1 and 2), both; and, when `--translated` names a folder of translations (e.g. a
quality run's OUT/NAME/translated), those translations median-filtered (3x3: removes isolated speckle)
and blurred. Beside them: the photos themselves, and monet-train30 (real Monets: the floor). An edit that
lowers KID names what the translator must change; one that raises it names what it must keep. No
training; the features are cached in OUT/feature-cache.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageFilter

from _measure import cpu_flags

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
Edit = Callable[[PIL.Image.Image], PIL.Image.Image]


def rgb_stats(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    from lowshot.train.data import load_image

    px = np.concatenate([load_image(p, 256).reshape(3, -1).T / 255.0 for p in paths])
    return px.mean(0), px.std(0)


def palette_transfer(mean: np.ndarray, std: np.ndarray) -> Edit:
    """Match an image's per-channel mean and std to (mean, std)."""
    def edit(im: PIL.Image.Image) -> PIL.Image.Image:
        a = np.asarray(im) / 255.0
        m, s = a.reshape(-1, 3).mean(0), a.reshape(-1, 3).std(0) + 1e-6
        return PIL.Image.fromarray((np.clip((a - m) / s * std + mean, 0, 1) * 255).round().astype(np.uint8))
    return edit


def blur(radius: float) -> Edit:
    return lambda im: im.filter(PIL.ImageFilter.GaussianBlur(radius))


def write(folder: Path, paths: list[Path], edit: Edit, photos: bool) -> Path:
    """The edited images as PNGs in `folder` (photos are first loaded at 256 px, as the yardstick does)."""
    from lowshot.train.data import load_image

    folder.mkdir(parents=True, exist_ok=True)
    for p in paths:
        im = PIL.Image.fromarray(load_image(p, 256).transpose(1, 2, 0)) if photos else PIL.Image.open(p).convert("RGB")
        edit(im).save(folder / f"{p.stem}.png")
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--translated", type=Path, help="a folder of translations of the same held-out photos")
    ap.add_argument("--eval-photos", type=int, default=500)
    ap.add_argument("--out", type=Path, default=Path("/tmp/lowshot-kid-probe"))
    args = ap.parse_args()
    if not (DATASETS / "photos").is_dir() or not (DATASETS / "monet-pool120").is_dir():
        sys.exit(f"skipped: {DATASETS} is absent")
    from lowshot.images.folder import list_images
    from lowshot.metrics.evaluate import evaluate_sets

    photos = list_images(DATASETS / "photos")[-args.eval_photos:]
    to_monet = palette_transfer(*rgb_stats(list_images(DATASETS / "monet-train30")))
    edits: dict[str, tuple[list[Path], Edit, bool]] = {
        "photos, Monet's palette": (photos, to_monet, True),
        "photos, blurred (radius 1)": (photos, blur(1), True),
        "photos, blurred (radius 2)": (photos, blur(2), True),
        "photos, Monet's palette, blurred (1)": (photos, lambda im: blur(1)(to_monet(im)), True),
    }
    if args.translated:
        stems = {p.stem for p in photos}
        translated = [p for p in list_images(args.translated) if p.stem in stems]  # the same photos' translations
        if len(translated) != len(photos):
            sys.exit(f"--translated: {args.translated} holds {len(translated)} of the {len(photos)} held-out photos")
        edits["translations, median 3x3 (speckle removed)"] = (translated, lambda im: im.filter(
            PIL.ImageFilter.MedianFilter(3)), False)
        edits["translations, blurred (radius 1)"] = (translated, blur(1), False)
    sets: dict[str, Path] = {"photos": write(args.out / "photos", photos, lambda im: im, True)}
    for i, (name, (paths, edit, are_photos)) in enumerate(edits.items()):
        sets[name] = write(args.out / f"edit{i}", paths, edit, are_photos)
    if args.translated:
        sets["translations"] = write(args.out / "translations", translated, lambda im: im, False)
    sets["monet-train30 (real Monets)"] = DATASETS / "monet-train30"
    keys = {name: f"set{i}" for i, name in enumerate(sets)}
    r = evaluate_sets({keys[n]: folder for n, folder in sets.items()}, DATASETS / "monet-pool120",
                      cache_dir=args.out / "feature-cache", device="cpu", workers=1, progress=False)
    print(f"\nKID x1000 / FID against monet-pool120 (120 Monets); CPU flags: {cpu_flags()}")
    print("| set | images | KID x1000 | FID |\n|---|---:|---:|---:|")
    for name, folder in sets.items():
        k = keys[name]
        print(f"| {name} | {len(list_images(folder))} | {1000 * r[k + '.kid']:.1f} ± {1000 * r[k + '.kid_std']:.1f} "
              f"| {r[k + '.fid']:.1f} |")


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
