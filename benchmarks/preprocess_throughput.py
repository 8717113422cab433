"""Throughput of `preprocess_images` against a plain one-process Pillow loop.

    python benchmarks/preprocess_throughput.py [--photos ../shared/datasets/photos] [--count 500] [--large 40]

Two corpora: (a) `--count` real 256 px photo JPEGs, (b) `--large` synthetic 3000x2000 JPEG originals
generated into a temp dir. The baseline opens, converts to RGB, resizes to 256 (Lanczos) and saves a PNG
(Pillow defaults), with no checks, hashing or dedupe. preprocess_images additionally sha256-hashes and
pHashes every file and writes atomically; its rerun row is the incremental case (all outputs current).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from lowshot.images.folder import list_images
from lowshot.images.preprocess import preprocess_images

SIZE = 256
REPO = Path(__file__).resolve().parents[1]


def baseline(files: list[Path], out_dir: Path) -> None:
    out_dir.mkdir(parents=True)
    for f in files:
        with Image.open(f) as im:
            im.convert("RGB").resize((SIZE, SIZE), Image.Resampling.LANCZOS).save(out_dir / f"{f.stem}.png")


def make_large(out_dir: Path, count: int, seed: int = 0) -> list[Path]:
    """Painting-like 3000x2000 JPEGs: smooth random colour fields plus brush-scale noise."""
    rng = np.random.default_rng(seed)
    files = []
    for i in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, (8, 12, 3), dtype=np.uint8))
        base = coarse.resize((3000, 2000), Image.Resampling.BICUBIC)
        noise = rng.integers(-12, 13, (2000, 3000, 1), dtype=np.int16)
        arr = np.clip(np.asarray(base, np.int16) + noise, 0, 255).astype(np.uint8)
        files.append(out_dir / f"large{i:03d}.jpg")
        Image.fromarray(arr).save(files[-1], quality=90)
    return files


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(name: str, files: list[Path], mode: str, workers: int, tmp: Path) -> list[tuple]:
    rows = [(name, "plain PIL loop, 1 process", len(files), timed(lambda: baseline(files, tmp / f"{name}-base")))]
    out = tmp / f"{name}-ours" / "set"
    kw = {"size": SIZE, "mode": mode, "min_side": 128, "max_pixels": 180_000_000, "dedupe_distance": 4}
    result = {}

    def ours(workers: int, previous=None) -> None:
        result["manifest"], result["rejects"] = preprocess_images(files, out, workers=workers, previous=previous, **kw)

    rows.append((name, f"preprocess_images ({mode}), workers=1", len(files), timed(lambda: ours(1))))
    rows.append((name, f"preprocess_images ({mode}), workers={workers}", len(files), timed(lambda: ours(workers))))
    previous = result["manifest"]
    rows.append((name, f"  rerun, all outputs current, workers={workers}", len(files),
                 timed(lambda: ours(workers, previous))))
    sizes = [p.stat().st_size for p in out.glob("*.png")]
    base_sizes = [p.stat().st_size for p in (tmp / f"{name}-base").glob("*.png")]
    logging.info("%s: %d rejects; mean PNG %.0f KiB (baseline %.0f KiB)", name, len(result["rejects"]),
                 np.mean(sizes) / 1024, np.mean(base_sizes) / 1024)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "datasets" / "photos")
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--large", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("lowshot").setLevel(logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        photos = list_images(args.photos)[: args.count]
        rows += run(f"{len(photos)} photos 256px", photos, "center_crop", args.workers, tmp)
        (tmp / "large").mkdir()
        gen = time.perf_counter()
        large = make_large(tmp / "large", args.large)
        logging.info("generated %d large JPEGs in %.1f s", len(large), time.perf_counter() - gen)
        rows += run(f"{len(large)} JPEGs 3000x2000", large, "hybrid", args.workers, tmp)
    print("\n| corpus | method | images | seconds | images/s |\n|---|---|---:|---:|---:|")
    for corpus, method, n, seconds in rows:
        print(f"| {corpus} | {method} | {n} | {seconds:.1f} | {n / seconds:.1f} |")


if __name__ == "__main__":
    main()
