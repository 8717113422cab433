"""Exemplar ranking: score each candidate by its nearest real examples in a feature space.

A candidate's score is the mean of its top-k cosine similarities to the exemplars (the real
Monets): plain k-nearest-neighbour similarity, with no model trained on the few exemplars.
Averaging over k > 1 rewards paintings close to several Monets over a near-copy of a single one.

Features come from `ClipScorer.encode_images` (lowshot.rank.clip) or from the FID Inception
network, which needs no CLIP weights: its pool3 features (`lowshot.metrics.inception`) or, better at
telling paintings from photos (benchmarks/rank_study.py), its style statistics
(`lowshot.rank.inception_taps.InceptionStyle`), both through `lowshot.metrics.cache.cached_features`.
"""

from __future__ import annotations

import numpy as np

CHUNK_ROWS = 4096  # corpus rows per similarity block: bounds memory at CHUNK_ROWS x n_exemplars floats


def _unit_rows(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{name} features must be a 2-D array (N, D), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} features contain NaN or infinite values")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)  # an all-zero row stays zero: similarity 0 to everything


def exemplar_scores(corpus: np.ndarray, exemplars: np.ndarray, *, top_k: int = 5, center: bool = False) -> np.ndarray:
    """For each corpus row, the mean of its `top_k` largest cosine similarities to the exemplar rows.

    `corpus` (N, D) and `exemplars` (M, D) need not be normalised. `top_k` is clipped to M.
    `center` measures the cosines around the corpus mean: features that all share one large direction
    (Inception's pool features are non-negative) otherwise look alike whatever they show; on
    monet-pool120 + 303 photos ranked against monet-train30 it lifts precision@100 from 0.76 to 0.87.
    Returns (N,) float32 in [-1, 1].
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if center and len(corpus):
        mean = np.asarray(corpus, dtype=np.float64).mean(axis=0)
        corpus, exemplars = np.asarray(corpus) - mean, np.asarray(exemplars) - mean
    corpus, exemplars = _unit_rows(corpus, "corpus"), _unit_rows(exemplars, "exemplar")
    if len(exemplars) == 0:
        raise ValueError("exemplar scoring needs at least one exemplar")
    if corpus.shape[1] != exemplars.shape[1]:
        raise ValueError(f"corpus features have {corpus.shape[1]} dimensions, exemplars {exemplars.shape[1]}")
    k = min(top_k, len(exemplars))
    out = np.empty(len(corpus), dtype=np.float32)
    for start in range(0, len(corpus), CHUNK_ROWS):
        sims = corpus[start:start + CHUNK_ROWS] @ exemplars.T
        # The k largest per row, unordered: a partition is enough for their mean.
        top = np.partition(sims, len(exemplars) - k, axis=1)[:, len(exemplars) - k:]
        out[start:start + len(sims)] = top.mean(axis=1)
    return out
