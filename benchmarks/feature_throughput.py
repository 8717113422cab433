"""Inception feature throughput (images/s) of `InceptionFeatures.extract` against a plain loop, and the
time the feature cache saves.

    python benchmarks/feature_throughput.py [--photos ../shared/datasets/photos] [--count 100]
        [--workers 0,2] [--batch-size 64] [--cache-count 50] [--device cpu]

Baseline, on the same `--count` photos in the same run: one process, one image at a time, opened with
PIL and resized to 299 the documented way (clean-fid "clean": float32 PIL bicubic per channel, clipped,
no quantisation), then `x / 128 - 1` through the same TorchScript network under `torch.no_grad()`.
Ours: `extract` with batches of `--batch-size`, decoding in `--workers` DataLoader processes (one row per
value) and `torch.inference_mode()`. The features of both must agree (max abs difference printed).

Cache rows (temp cache dir): `cached_features` on the first `--cache-count` photos, cold (hash, extract,
write the pack) and again unchanged (hash, one pack read); then `evaluate_sets` of monet-train30 against
a reference folder of those photos (links in a temp dir, never copies), twice: the first call extracts
only the 30 Monets (the reference is already cached by the rows above), the second reads everything
from the cache.

The plain loop runs on its own copy of the network, warmed by single-image calls until three in a row
take under half the first one's time: on CPU the TorchScript profiling executor runs a call several
times slower (a fixed few seconds a call) until it has optimised the graph for that input shape, which
took 2 to 7 calls here; its row also gives the median seconds per image. Each of our rows starts from a freshly loaded network, as a pipeline stage does, and
pays its own first calls (the comparison favours the baseline). On 2 CPU cores shared with GAN training,
Inception runs at 1-2 images/s, so the defaults (100, 50) take ~5 minutes; `--count 1000` would take
over half an hour there.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from lowshot.images.folder import list_images
from lowshot.metrics.cache import cached_features
from lowshot.metrics.evaluate import evaluate_sets
from lowshot.metrics.inception import INPUT_SIZE, InceptionFeatures, load_inception
from lowshot.runtime import pick_device

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def plain_features(net: torch.jit.ScriptModule, paths: list[Path], device: torch.device,
                   seconds: list[float] | None = None) -> np.ndarray:
    """The loop a reader would write: one image at a time, the same resize and network, no_grad.
    Appends each image's seconds to `seconds` when given."""
    rows = []
    with torch.no_grad():
        for p in paths:
            start = time.perf_counter()
            with PIL.Image.open(p) as im:
                rgb = np.asarray(im.convert("RGB"), dtype=np.float32)
            chans = [np.asarray(PIL.Image.fromarray(np.ascontiguousarray(rgb[..., c]))
                                .resize((INPUT_SIZE, INPUT_SIZE), PIL.Image.Resampling.BICUBIC)) for c in range(3)]
            x = torch.from_numpy(np.clip(np.stack(chans), 0, 255))[None].to(device) / 128.0 - 1.0
            rows.append(net(x).float().cpu().numpy()[0])
            if seconds is not None:
                seconds.append(time.perf_counter() - start)
    return np.stack(rows)


def warm_up(net: torch.jit.ScriptModule, paths: list[Path], device: torch.device) -> list[float]:
    """Single-image calls until three in a row take under half the first's time; their seconds."""
    seconds: list[float] = []
    for p in paths:
        plain_features(net, [p], device, seconds)
        if len(seconds) >= 4 and max(seconds[-3:]) < 0.5 * seconds[0]:
            break
    return seconds


def timed(fn):
    """(result, seconds) of fn(), with CUDA work finished inside the timing."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=Path, default=DATASETS / "photos")
    ap.add_argument("--monet", type=Path, default=DATASETS / "monet-train30", help="the set evaluate_sets scores")
    ap.add_argument("--count", type=int, default=100, help="photos for the throughput rows")
    ap.add_argument("--cache-count", type=int, default=50, help="photos for the cache and evaluate_sets rows")
    ap.add_argument("--workers", default="0,2", help="comma-separated DataLoader worker counts, one row each")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if not args.photos.is_dir():
        sys.exit(f"{args.photos} not present: nothing to benchmark")
    device = pick_device(args.device)
    photos = list_images(args.photos)
    paths, warm = photos[:args.count], photos[-15:]
    # Each side gets its own network: the TorchScript profiling executor re-profiles (seconds a call on
    # CPU) whenever a network sees a new input shape, so sharing one would charge one side for the other.
    plain_net = load_inception().to(device)
    warm_s = warm_up(plain_net, warm, device)

    rows = []
    per_image: list[float] = []
    base, base_s = timed(lambda: plain_features(plain_net, paths, device, per_image))
    rows.append(("plain loop: 1 image, 1 process, no_grad", len(paths), base_s, base_s,
                 f"median {np.median(per_image):.2f} s/image, slowest {max(per_image):.2f}"))
    for w in [int(x) for x in args.workers.split(",")]:
        extractor = InceptionFeatures(device)
        _ = extractor.network  # loading is not what is measured (the file's hash is checked once per process)
        ours, s = timed(partial(extractor.extract, paths, batch_size=args.batch_size, workers=w, progress=False))
        rows.append((f"extract: batch {args.batch_size}, {w} workers, inference_mode", len(paths), s, base_s,
                     f"{np.abs(ours - base).max():.2e}"))
    scale = float(np.abs(base).max())

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        cache, ref = tmp / "cache", tmp / "reference"
        ref.mkdir()
        subset = photos[:args.cache_count]
        for p in subset:
            (ref / p.name).symlink_to(p)
        w = int(args.workers.split(",")[-1])
        extractor = InceptionFeatures(device)
        _ = extractor.network

        def cached():
            return cached_features(subset, cache_dir=cache, extractor=extractor, batch_size=args.batch_size,
                                   workers=w, progress=False)

        cold, cold_s = timed(cached)
        rows.append((f"cached_features, first time (cold cache), {w} workers", len(subset), cold_s, cold_s, ""))
        hit, hit_s = timed(cached)
        rows.append(("cached_features, unchanged set (cache hit)", len(subset), hit_s, cold_s,
                     f"{np.abs(hit - cold).max():.2e}"))

        def evaluate():
            return evaluate_sets({"monet30": args.monet}, ref, cache_dir=cache, device=device,
                                 batch_size=args.batch_size, workers=w, progress=False)

        n_eval = len(subset) + len(list_images(args.monet))
        first, first_s = timed(evaluate)
        rows.append(("evaluate_sets, first (reference cached, set new)", n_eval, first_s, first_s, ""))
        second, second_s = timed(evaluate)
        same = "same metrics" if second == first else "METRICS DIFFER"
        rows.append(("evaluate_sets, second, unchanged (all cached)", n_eval, second_s, first_s, same))

    print(f"\nloadavg {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs, device {device}, "
          f"torch threads {torch.get_num_threads()}; features up to {scale:.2f}; "
          "vs = speed-up over the section's first row")
    print(f"plain loop warm-up, seconds a call: {' '.join(f'{x:.2f}' for x in warm_s)}")
    print(f"{'method':<52} {'images':>6} {'seconds':>8} {'images/s':>9} {'vs':>8}  agreement / note")
    for name, n, s, ref_s, note in rows:
        print(f"{name:<52} {n:>6} {s:>8.2f} {n / s:>9.1f} {ref_s / s:>7.1f}x  {note}")


if __name__ == "__main__":
    main()
