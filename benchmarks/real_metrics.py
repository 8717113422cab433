"""Acceptance figures of the rank/measure issue on real images: exemplar ranking precision with Inception
features, and FID / KID / MiFID between real Monet and photo sets.

    python benchmarks/real_metrics.py [--datasets ../shared/datasets] [--cache-dir /tmp/lowshot-bench-features]
        [--limit N] [--top-k 1,5,10] [--seed 0]

(a) Ranking: exemplars = monet-train30; corpus = monet-pool120 + landscape-photos (303), scored by
`lowshot.rank.exemplar.exemplar_scores` on Inception pool features (`cached_features`). precision@K =
share of Monets among the K best scores; the baseline is chance (a random order: 120 / 423). AP =
average precision of the whole ranking. "near-dup" counts corpus images whose best cosine similarity to
an exemplar exceeds 0.99 (a Monet in both sets would make the ranking look better than it is).

(b) Distances (`lowshot.metrics.distances`): FID, KID (100 subsets of min(1000, sizes), seed 0; mean and
std) and MiFID (eps 0.1; the first set is treated as generated, the second as real; d = mean over the
first set of its minimum cosine distance to the second). The floor is monet-pool120 against itself, split
at random (seed) into two halves of 60. FID is biased upward for small sets, so compare FIDs only between
rows of equal sizes; each set is paired with a size-matched landscape row. Landscape subsets are the
first N files by name.

Features are cached in `--cache-dir` (outside the repository; safe to delete), so a rerun costs seconds;
the first run extracts 453 images (about 4-8 minutes on 2 shared CPU cores). `--limit N` takes the first
N images of every folder, for a quick check that the script runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from lowshot.images.folder import list_images
from lowshot.metrics.cache import cached_features
from lowshot.metrics.distances import fid, kid, mifid
from lowshot.metrics.inception import InceptionFeatures
from lowshot.rank.exemplar import exemplar_scores
from lowshot.runtime import pick_device

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def average_precision(labels_in_rank_order: np.ndarray) -> float:
    """Mean of precision@i over the ranks i that hold a positive."""
    hits = np.cumsum(labels_in_rank_order)
    ranks = np.flatnonzero(labels_in_rank_order) + 1
    return float((hits[ranks - 1] / ranks).mean())


def ranking_table(train: np.ndarray, pool: np.ndarray, land: np.ndarray, top_ks: list[int]) -> None:
    corpus = np.concatenate([pool, land])
    labels = np.r_[np.ones(len(pool)), np.zeros(len(land))]
    cut_a, cut_b = min(100, len(corpus)), min(len(pool), len(corpus))
    near_dup = int((exemplar_scores(corpus, train, top_k=1) > 0.99).sum())
    print(f"\n(a) exemplar ranking, Inception features: {len(train)} exemplars (monet-train30), corpus "
          f"{len(pool)} Monets (monet-pool120) + {len(land)} photos (landscape-photos); near-dup {near_dup}; "
          f"loadavg {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'scorer':<30} {f'precision@{cut_a}':>14} {f'precision@{cut_b}':>14} {'AP':>6}")
    chance = len(pool) / len(corpus)
    print(f"{'chance (random order)':<30} {chance:>14.3f} {chance:>14.3f} {chance:>6.3f}")
    for k in top_ks:
        scores = exemplar_scores(corpus, train, top_k=k)
        ranked = labels[np.argsort(-scores, kind="stable")]
        print(f"{f'exemplar_scores top_k={k}':<30} {ranked[:cut_a].mean():>14.3f} {ranked[:cut_b].mean():>14.3f} "
              f"{average_precision(ranked):>6.3f}")


def distance_table(pairs: list[tuple[str, np.ndarray, str, np.ndarray]], eps: float, seed: int) -> None:
    print(f"\n(b) FID, KID, MiFID (eps {eps}) on Inception features; KID over 100 subsets, seed {seed}; "
          f"loadavg {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'set A (generated)':<26} {'set B (real)':<24} {'n A':>4} {'n B':>4} {'FID':>8} {'KID':>8} "
          f"{'KID std':>8} {'MiFID':>8} {'d':>6}")
    for name_a, a, name_b, b in pairs:
        f = fid(a, b)
        k_mean, k_std = kid(a, b, subsets=100, subset_size=1000, seed=seed)
        m = mifid(a, b, fid_value=f, eps=eps)
        print(f"{name_a:<26} {name_b:<24} {len(a):>4} {len(b):>4} {f:>8.2f} {k_mean:>8.4f} {k_std:>8.4f} "
              f"{m['mifid']:>8.2f} {m['d']:>6.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", type=Path, default=DATASETS)
    ap.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "lowshot-bench-features")
    ap.add_argument("--limit", type=int, default=None, help="first N images of each folder (quick check)")
    ap.add_argument("--top-k", default="5,1,10", help="comma-separated top_k values of exemplar_scores")
    ap.add_argument("--eps", type=float, default=0.1, help="MiFID threshold")
    ap.add_argument("--seed", type=int, default=0, help="KID subsets and the random halves of monet-pool120")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    extractor = InceptionFeatures(pick_device(args.device))

    def features(name: str) -> np.ndarray:
        paths = list_images(args.datasets / name)[:args.limit]
        return cached_features(paths, cache_dir=args.cache_dir, extractor=extractor, batch_size=args.batch_size,
                               workers=args.workers, progress=False)

    start = time.perf_counter()
    train, pool, land = features("monet-train30"), features("monet-pool120"), features("landscape-photos")
    print(f"features of {len(train) + len(pool) + len(land)} images in {time.perf_counter() - start:.1f} s "
          f"(cache {args.cache_dir})")

    ranking_table(train, pool, land, [int(k) for k in args.top_k.split(",")])

    half = np.random.default_rng(args.seed).permutation(len(pool))
    pool_a, pool_b = pool[half[:len(pool) // 2]], pool[half[len(pool) // 2:]]
    n_train, n_pool, n_half = len(train), len(pool), len(pool_a)
    distance_table([
        ("monet-train30", train, "monet-pool120", pool),
        (f"landscape-photos[:{n_train}]", land[:n_train], "monet-pool120", pool),
        (f"landscape-photos[:{n_pool}]", land[:n_pool], "monet-pool120", pool),
        ("monet-pool120 half A", pool_a, "monet-pool120 half B", pool_b),
        (f"landscape-photos[:{n_half}]", land[:n_half], "monet-pool120 half B", pool_b),
    ], args.eps, args.seed)


if __name__ == "__main__":
    main()
