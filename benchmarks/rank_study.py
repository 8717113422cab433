"""Which offline ranker finds Monets it never saw among photos? Cross-validated R-precision.

    python benchmarks/rank_study.py [--datasets ../shared/datasets] [--cache-dir /tmp/lowshot-rank-study]
        [--folds 4] [--repeats 5] [--extra-photos 57] [--seed 0] [--only NAME,...] [--slow]

Setup (issue 10): exemplars = monet-train30 (the pipeline's monet_train); unseen Monets = monet-pool120;
photos = landscape-photos (303) + `--extra-photos` drawn (seed) from photos/, about 3x the Monets. Both are
split (seed) into `--folds` folds; fold f's corpus is its Monets mixed with its photos (30 + 90 with the
defaults). A ranker scores a corpus from the exemplars alone (labels are never seen); R-precision = share
of Monets among the R best scores, R = the Monets in the corpus (precision = recall at that cut).

No tuning on the Monets being scored: each method's hyperparameters are chosen, for fold f, as the grid
point with the best mean R-precision over the other folds, then scored on fold f (nested cross-validation).
The table prints, per method, the held-out R-precision of each fold of the first split, the mean (± its
standard error) and the worst over every fold of every split, and the grid points chosen. The baseline
is the pipeline's ranker before this study, `exemplar_scores(top_k=5, center=True)` on pool3; "now" is
what `rank.features: inception_style` runs with the default `top_k` 5 (both fixed: nothing chosen per
fold). Chance is 0.25.

Features: `lowshot.rank.inception_taps.InceptionTaps` of the FID Inception network (channel means = pool3
for mixed_7c, channel stds and Gram matrices of earlier blocks), cached on disk by file content in
`--cache-dir`: the first run extracts ~510 images (about 3 minutes on one core), later runs take seconds.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
import torch.nn.functional as F

from lowshot.images.folder import list_images
from lowshot.metrics.cache import cached_features
from lowshot.rank.exemplar import exemplar_scores
from lowshot.rank.inception_taps import STYLE_TAPS, InceptionTaps, unit_blocks
from lowshot.runtime import pick_device

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
TAPS = ("mixed_7c:mean", "mixed_7c:std", "mixed_6e:mean", "mixed_6e:std", "mixed_6b:mean", "mixed_6b:std",
        "mixed_5d:mean", "mixed_5d:std", "mixed_5d:gram", "conv_4a:mean", "conv_4a:std", "conv_4a:gram")

Taps = dict[str, np.ndarray]  # tap -> (N, D) descriptors
MIRROR = "mirror:"  # exemplar taps of the mirrored exemplars are keyed MIRROR + tap


# --------------------------------------------------------------------------- data


@dataclass
class Study:
    exemplars: Taps
    monets: Taps
    photos: Taps
    splits: list[list[tuple[np.ndarray, np.ndarray]]]  # per split, per fold: (monet rows, photo rows)

    def corpus(self, split: int, fold: int) -> tuple[Taps, np.ndarray]:
        """The corpus of one fold of one split (Monets then photos) and its labels (1 = Monet)."""
        m, p = self.splits[split][fold]
        taps = {t: np.concatenate([self.monets[t][m], self.photos[t][p]]) for t in self.monets}
        return taps, np.r_[np.ones(len(m)), np.zeros(len(p))]


def load_study(args: argparse.Namespace) -> Study:
    extractor = InceptionTaps(TAPS, pick_device(args.device))

    def taps_of(paths: list[Path]) -> Taps:
        feats = cached_features(paths, cache_dir=args.cache_dir, extractor=extractor, batch_size=32,
                                workers=args.workers, progress=True)
        return {t: feats[:, s] for t, s in extractor.slices.items()}

    rng = np.random.default_rng(args.seed)
    extra = list_images(args.datasets / "photos")
    extra = [extra[i] for i in sorted(rng.choice(len(extra), args.extra_photos, replace=False))]
    start = time.perf_counter()
    exemplars = taps_of(list_images(args.datasets / "monet-train30"))
    exemplars.update({MIRROR + t: f for t, f in taps_of(mirrored(list_images(args.datasets / "monet-train30"),
                                                                  args.cache_dir / "mirrored-exemplars")).items()})
    monets = taps_of(list_images(args.datasets / "monet-pool120"))
    land, other = taps_of(list_images(args.datasets / "landscape-photos")), taps_of(extra)
    photos = {t: np.concatenate([land[t], other[t]]) for t in land}
    n = 2 * len(exemplars[TAPS[0]]) + len(monets[TAPS[0]]) + len(photos[TAPS[0]])
    print(f"features of {n} images (the exemplars also mirrored) in {time.perf_counter() - start:.1f} s (cache {args.cache_dir})")
    splits = []
    for _ in range(args.repeats):
        monet_folds = np.array_split(rng.permutation(len(monets[TAPS[0]])), args.folds)
        photo_folds = np.array_split(rng.permutation(len(photos[TAPS[0]])), args.folds)
        splits.append(list(zip(monet_folds, photo_folds)))
    return Study(exemplars, monets, photos, splits)


def mirrored(paths: list[Path], folder: Path) -> list[Path]:
    """Left-right mirrored copies of `paths` as PNGs in `folder` (written once)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for p in paths:
        copy = folder / f"{p.stem}.png"
        if not copy.is_file():
            with PIL.Image.open(p) as im:
                PIL.ImageOps.mirror(im.convert("RGB")).save(copy)
        out.append(copy)
    return out


def exemplar_set(taps: Taps, mirror: bool) -> Taps:
    """The exemplars' taps, with their mirror images as more exemplars when `mirror`."""
    plain = {t: f for t, f in taps.items() if not t.startswith(MIRROR)}
    return {t: np.concatenate([f, taps[MIRROR + t]]) for t, f in plain.items()} if mirror else plain


# --------------------------------------------------------------------------- features and scorers


def view(taps: Taps, names: tuple[str, ...], alpha: float) -> np.ndarray:
    """The taps `names` side by side, each signed-power-normalised (alpha) to a unit block, equal weights
    (`unit_blocks`, as the rank stage's `inception_style` features are made)."""
    widths = np.cumsum([0] + [taps[n].shape[1] for n in names])
    blocks = [slice(a, b) for a, b in zip(widths[:-1], widths[1:])]
    return unit_blocks(np.concatenate([taps[n] for n in names], axis=1), blocks, alpha)


def knn(corpus: np.ndarray, exemplars: np.ndarray, k: int) -> np.ndarray:
    return exemplar_scores(corpus, exemplars, top_k=k, center=True)


def whiten(corpus: np.ndarray, exemplars: np.ndarray, shrink: float) -> tuple[np.ndarray, np.ndarray]:
    """Both sets centred on the corpus mean and whitened by the corpus covariance shrunk toward
    `shrink` x its mean eigenvalue (any dimension: through the corpus SVD)."""
    mean = corpus.mean(axis=0)
    xc, ec = corpus - mean, exemplars - mean
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    eig = s ** 2 / len(xc)
    lam = shrink * eig.sum() / xc.shape[1] + 1e-12
    scale = 1 / np.sqrt(eig + lam) - 1 / np.sqrt(lam)

    def w(x: np.ndarray) -> np.ndarray:
        return (x @ vt.T * scale) @ vt + x / np.sqrt(lam)

    return w(xc), w(ec)


def logistic(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression, classes weighted to equal total weight; (w, b)."""
    xt, yt = torch.from_numpy(x.astype(np.float64)), torch.from_numpy(np.where(y > 0, 1.0, -1.0))
    weight = torch.where(yt > 0, 0.5 / (y > 0).sum(), 0.5 / (y <= 0).sum())
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=300, tolerance_grad=1e-9, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (weight * F.softplus(-yt * (xt @ w + b))).sum() + 0.5 * l2 * (w @ w)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy(), float(b.detach())


def pu_logistic(corpus: np.ndarray, exemplars: np.ndarray, l2: float, parts: int) -> np.ndarray:
    """Positive-unlabelled: exemplars (positive) against the corpus (unlabelled, taken as negative).
    With parts > 1, cross-fitted: each part of the corpus is scored by a model that never saw it."""
    mean = corpus.mean(axis=0)
    xc, ec = corpus - mean, exemplars - mean
    scores = np.empty(len(corpus))
    chunks = np.array_split(np.random.default_rng(0).permutation(len(corpus)), parts)
    for chunk in chunks:
        rest = np.setdiff1d(np.arange(len(corpus)), chunk) if parts > 1 else np.arange(len(corpus))
        w, b = logistic(np.concatenate([ec, xc[rest]]), np.r_[np.ones(len(ec)), np.zeros(len(rest))], l2)
        scores[chunk] = xc[chunk] @ w + b
    return scores


def rank_average(*scores: np.ndarray) -> np.ndarray:
    """Fusion: the mean of each scorer's rank (ties broken by order), so scales never matter."""
    return np.mean([np.argsort(np.argsort(s, kind="stable"), kind="stable") for s in scores], axis=0)


# --------------------------------------------------------------------------- methods


@dataclass
class Method:
    name: str
    score: Callable[..., np.ndarray]  # (corpus taps, exemplar taps, **grid point) -> scores
    grid: list[dict]


def grid(**axes) -> list[dict]:
    keys = list(axes)
    return [dict(zip(keys, values)) for values in itertools.product(*axes.values())]


POOL3 = ("mixed_7c:mean",)
VIEWS = {
    "pool3": POOL3,
    "7c std": ("mixed_7c:std",),
    "6e mean": ("mixed_6e:mean",),
    "6e std": ("mixed_6e:std",),
    "6e mean+std": ("mixed_6e:mean", "mixed_6e:std"),
    "6b mean+std": ("mixed_6b:mean", "mixed_6b:std"),
    "5d mean+std": ("mixed_5d:mean", "mixed_5d:std"),
    "5d gram": ("mixed_5d:gram",),
    "4a gram": ("conv_4a:gram",),
    "pool3+6e mean+std": ("mixed_7c:mean", "mixed_6e:mean", "mixed_6e:std"),
    "pool3+6e std": ("mixed_7c:mean", "mixed_6e:std"),
    "pool3+5d gram": ("mixed_7c:mean", "mixed_5d:gram"),
    "6e+6b+5d mean+std": STYLE_TAPS,  # the rank stage's inception_style
}


def knn_method(label: str, names: tuple[str, ...], alphas=(1.0, 0.5, 0.25), ks=(1, 5, 10, 30),
               mirror=(False,)) -> Method:
    def score(c, e, alpha, k, mirror):
        e = exemplar_set(e, mirror)
        return knn(view(c, names, alpha), view(e, names, alpha), k * (2 if mirror else 1))
    return Method(f"knn {label}" + (" ±mirrored" if True in mirror else ""), score,
                  grid(alpha=alphas, k=ks, mirror=mirror))


def whiten_method(label: str, names: tuple[str, ...]) -> Method:
    def score(c, e, alpha, shrink, k):
        wc, we = whiten(view(c, names, alpha), view(e, names, alpha), shrink)
        return exemplar_scores(wc, we, top_k=k, center=False)
    return Method(f"whitened knn {label}", score, grid(alpha=(1.0, 0.5), shrink=(0.1, 1.0, 10.0), k=(5, 30)))


def pu_method(label: str, names: tuple[str, ...], parts=(1, 5), mirror=(False,)) -> Method:
    def score(c, e, alpha, l2, parts, mirror):
        e = exemplar_set(e, mirror)
        return pu_logistic(view(c, names, alpha), view(e, names, alpha), l2, parts)
    return Method(f"PU logistic {label}" + (" ±mirrored" if True in mirror else ""), score,
                  grid(alpha=(1.0, 0.5), l2=(1e-5, 1e-4, 1e-3, 1e-2), parts=parts, mirror=mirror))


def fusion_methods() -> list[Method]:
    """Rank averages: content (pool3) with style (mixed_6e statistics); kNN with the PU model."""
    content, style = VIEWS["pool3"], VIEWS["6e mean+std"]

    def content_style(c, e, alpha, k):
        return rank_average(knn(view(c, content, alpha), view(e, content, alpha), k),
                            knn(view(c, style, alpha), view(e, style, alpha), k))

    def knn_pu(c, e, alpha, k, l2):
        x, ex = view(c, style, alpha), view(e, style, alpha)
        return rank_average(knn(x, ex, k), pu_logistic(x, ex, l2, 1))

    return [Method("rank average knn pool3 & knn 6e mean+std", content_style, grid(alpha=(1.0, 0.5), k=(5, 10, 30))),
            Method("rank average knn & PU, 6e mean+std", knn_pu, grid(alpha=(1.0, 0.5), k=(5, 30), l2=(1e-4, 1e-3)))]


def methods(only: set[str] | None, slow: bool) -> list[Method]:
    style = "6e+6b+5d mean+std"
    found = [Method("baseline: knn pool3 k=5 (before)", lambda c, e: knn(c[POOL3[0]], e[POOL3[0]], 5), [{}]),
             Method("now: knn inception_style k=5 (fixed)",
                    lambda c, e: knn(view(c, STYLE_TAPS, 1.0), view(e, STYLE_TAPS, 1.0), 5), [{}])]
    found += [Method(f"now, other top_k: k={k} (fixed)",
                     lambda c, e, k=k: knn(view(c, STYLE_TAPS, 1.0), view(e, STYLE_TAPS, 1.0), k), [{}])
              for k in (1, 3, 10, 30)]
    found += [knn_method(label, names) for label, names in VIEWS.items()]
    found += [knn_method(style, VIEWS[style], mirror=(False, True))]
    found += [whiten_method(label, VIEWS[label]) for label in ("pool3", "pool3+6e mean+std")]
    found += [pu_method(label, VIEWS[label]) for label in ("pool3", "6e mean+std", "pool3+6e mean+std", style)]
    found += [pu_method("6e mean+std", VIEWS["6e mean+std"], mirror=(False, True))]
    if slow:  # a logistic regression on 41,616 Gram dimensions: minutes per row
        found += [pu_method(label, VIEWS[label]) for label in ("5d gram", "pool3+5d gram")]
    found += fusion_methods()
    return [m for m in found if only is None or any(o in m.name for o in only)]


# --------------------------------------------------------------------------- evaluation


def r_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    r = int(labels.sum())
    return float(labels[np.argsort(-scores, kind="stable")[:r]].mean())


def cross_validate(study: Study, method: Method) -> tuple[np.ndarray, list[dict]]:
    """Held-out R-precision (splits, folds), each at the grid point with the best mean over the other folds
    of its split (the first of ties), and the points chosen."""
    n_splits, n_folds = len(study.splits), len(study.splits[0])
    table = np.empty((n_splits, n_folds, len(method.grid)))
    for s, f in itertools.product(range(n_splits), range(n_folds)):
        corpus, labels = study.corpus(s, f)
        for g, point in enumerate(method.grid):
            table[s, f, g] = r_precision(method.score(corpus, study.exemplars, **point), labels)
    held, chosen = np.empty((n_splits, n_folds)), []
    for s, f in itertools.product(range(n_splits), range(n_folds)):
        g = int(np.argmax(np.delete(table[s], f, axis=0).mean(axis=0)))
        held[s, f] = table[s, f, g]
        chosen.append(method.grid[g])
    return held, chosen


def short(point: dict, grid_points: list[dict]) -> str:
    """A grid point, naming only the axes that take more than one value."""
    varying = [k for k in point if len({str(p[k]) for p in grid_points}) > 1]
    return " ".join(f"{k}={point[k]:g}" for k in varying) or "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", type=Path, default=DATASETS)
    ap.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "lowshot-rank-study")
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--extra-photos", type=int, default=57, help="photos/ drawn beside the 303 landscape photos")
    ap.add_argument("--repeats", type=int, default=5, help="random fold splits (each a full cross-validation)")
    ap.add_argument("--seed", type=int, default=0, help="photo draw and fold splits")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--only", default="", help="comma-separated substrings of the method names to run")
    ap.add_argument("--slow", action="store_true", help="also the PU logistic rows on Gram matrices (minutes each)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if not (args.datasets / "monet-pool120").is_dir():
        raise SystemExit(f"{args.datasets} holds no monet-pool120: this benchmark needs the shared real images")
    study = load_study(args)
    sizes = [(len(m), len(p)) for m, p in study.splits[0]]
    n_folds = len(sizes)
    print(f"{n_folds} folds of (Monets, photos) {sizes}, {len(study.splits)} random splits; exemplars "
          f"{len(study.exemplars[POOL3[0]])}; R-precision held out (grid point chosen on the other folds of the "
          f"split); chance {sizes[0][0] / sum(sizes[0]):.2f}")
    print(f"CPU flags: {cpu_flags()}; loadavg {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    head = " ".join(f"{f'fold {f + 1}':>6}" for f in range(n_folds))
    print(f"{'':<40} {'split 1':^{7 * n_folds - 1}} {'all splits':^18}")
    print(f"{'method':<40} {head} {'mean':>6} {'± se':>5} {'worst':>5}  grid points chosen (most often first)")
    only = set(args.only.split(",")) if args.only else None
    for method in methods(only, args.slow):
        start = time.perf_counter()
        held, chosen = cross_validate(study, method)
        counts = collections.Counter(short(p, method.grid) for p in chosen)
        points = "; ".join(f"{p} x{c}" for p, c in counts.most_common(3))
        se = held.std(ddof=1) / np.sqrt(held.size) if held.size > 1 else 0.0
        folds = " ".join(f"{h:>6.3f}" for h in held[0])
        print(f"{method.name:<40} {folds} {held.mean():>6.3f} {se:>5.3f} {held.min():>5.3f}  {points} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    flags = sorted({w for w in text.split() if w.startswith(("avx512", "amx"))})
    return " ".join(flags) or "no avx512/amx"


if __name__ == "__main__":
    main()
