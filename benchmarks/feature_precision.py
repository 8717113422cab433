"""May the FID / KID / MiFID feature pass run in bf16? Only if the metrics do not move.

    python benchmarks/feature_precision.py [--a monet-pool120] [--b landscape-photos] [--count 120]

Extracts the Inception pool features of two fixed real image sets (../shared/datasets/A and B, the first
`--count` of each) in fp32 (the baseline: what every metric uses) and under bf16 autocast, and prints FID,
KID and MiFID of A against B from each, their relative change, the largest feature difference, and the
time of each pass. The rule (issue 8): bf16 is allowed for the metrics only if FID moves less than 0.5%.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch

from _measure import cpu_flags
from lowshot.images.folder import list_images
from lowshot.metrics.distances import fid, kid, mifid
from lowshot.metrics.inception import InceptionFeatures

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"


class Bf16Features(InceptionFeatures):
    """The same network and preprocessing, the forward pass under bf16 autocast."""

    def features(self, images: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            return super().features(images)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", default="monet-pool120")
    ap.add_argument("--b", default="landscape-photos")
    ap.add_argument("--count", type=int, default=120)
    args = ap.parse_args()
    if not (DATASETS / args.a).is_dir() or not (DATASETS / args.b).is_dir():
        sys.exit(f"skipped: {DATASETS} is absent")
    sets = [list_images(DATASETS / name)[:args.count] for name in (args.a, args.b)]
    rows = {}
    for name, extractor in (("fp32", InceptionFeatures("cpu")), ("bf16 autocast", Bf16Features("cpu"))):
        start = time.perf_counter()
        feats = [extractor.extract(paths, workers=1, progress=False) for paths in sets]
        seconds = time.perf_counter() - start
        value = fid(feats[0], feats[1])
        rows[name] = (feats, value, kid(feats[0], feats[1], seed=0)[0], mifid(feats[0], feats[1], fid_value=value)["mifid"],
                      sum(map(len, sets)) / seconds)
    base = rows["fp32"]
    print(f"{args.a}[:{args.count}] vs {args.b}[:{args.count}], {torch.get_num_threads()} threads; CPU flags: {cpu_flags()}")
    print(f"| features | FID | FID change | KID | MiFID | max abs feature diff | images/s |\n|---|---:|---:|---:|---:|---:|---:|")
    for name, (feats, f, k, m, rate) in rows.items():
        diff = max(float(np.abs(a - b).max()) for a, b in zip(feats, base[0]))
        print(f"| {name} | {f:.3f} | {100 * (f - base[1]) / base[1]:+.3f}% | {k:.5f} | {m:.3f} | {diff:.4f} | {rate:.2f} |")


if __name__ == "__main__":
    main()
