"""CLIP scoring throughput (images/s) of `lowshot.rank.clip.ClipScorer`, against a plain baseline.

Two models with random weights (no download): the tiny test config and ViT-B-32. For each, the
scorer as the rank stage runs it (batches, decoding in DataLoader workers) and a baseline that
scores one image at a time in the main process, on the same files in the same run.

    python benchmarks/clip_throughput.py [--device cpu] [--tiny-images 200] [--vit-images 64]
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from lowshot.images.folder import list_images
from lowshot.rank.clip import ClipScorer, register_tiny_config
from lowshot.runtime import pick_device

PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "photos"
PROMPTS = ["monet painting"]


def timed(scorer: ClipScorer, paths: list[Path], one_at_a_time: bool) -> float:
    """Seconds to score `paths` (batched, or one image per call)."""
    if scorer.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    if one_at_a_time:
        feats = [scorer.encode_images([p], progress=False) for p in paths]
        scorer.score_features(np.concatenate(feats), PROMPTS)
    else:
        scorer.score(paths, PROMPTS, progress=False)
    if scorer.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--photos", type=Path, default=PHOTOS)
    ap.add_argument("--tiny-images", type=int, default=200)
    ap.add_argument("--vit-images", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if not args.photos.is_dir():
        sys.exit(f"{args.photos} not present: nothing to benchmark")
    device = pick_device(args.device)
    photos = list_images(args.photos)

    rows = []
    for model, n in [(register_tiny_config(), args.tiny_images), ("ViT-B-32", args.vit_images)]:
        torch.manual_seed(0)
        scorer = ClipScorer(model, None, device=device, batch_size=args.batch_size, workers=args.workers)
        baseline = copy.copy(scorer)
        baseline.batch_size, baseline.workers = 1, 0
        paths = photos[:n]
        timed(scorer, photos[n:n + 8], one_at_a_time=False)  # warm-up: allocations, kernels, file cache
        base_s = timed(baseline, paths, one_at_a_time=True)
        fast_s = timed(scorer, paths, one_at_a_time=False)
        rows.append((model, n, "one at a time, no workers", base_s, n / base_s, 1.0))
        rows.append((model, n, f"batch {args.batch_size}, {args.workers} workers", fast_s, n / fast_s, base_s / fast_s))

    print(f"device: {device}, torch threads: {torch.get_num_threads()}")
    print(f"{'model':<18} {'images':>6}  {'mode':<28} {'seconds':>8} {'images/s':>9} {'speed-up':>8}")
    for model, n, mode, s, ips, up in rows:
        print(f"{model:<18} {n:>6}  {mode:<28} {s:>8.2f} {ips:>9.1f} {up:>7.1f}x")


if __name__ == "__main__":
    main()
