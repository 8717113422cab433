"""Synthetic Monet-like paintings the way the pipeline makes them: `lowshot train` + `lowshot generate` on the
30 real Monets alone, in a scratch project, for `benchmarks/quality.py --sources real,synthetic=DIR`.

    python benchmarks/synthetic_set.py [--out /tmp/lowshot-synthetic] [--arch lightweight] [--resolution 128]
        [--kimg 12] [--channels N] [--count 1000] [--keep 300] [--set train.KEY=VALUE ...]

The scratch project holds data/processed/monet_train (links to ../shared/datasets/monet-train30) and an
empty ranked set (no WikiArt offline: the real-only path), so `train` learns from the 30 Monets
(`monet_repeat` times per epoch), and `generate` draws `--count` paintings and keeps the `--keep` most
Monet-like by the exemplar Inception scorer (offline). It prints the training time and writes
OUT/data/synthetic/ (the kept paintings) and OUT/reports/synthetic_sheet.png.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import yaml

from _measure import cpu_flags

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/lowshot-synthetic")
    ap.add_argument("--arch", default="lightweight")
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--kimg", type=float, default=12.0)
    ap.add_argument("--channels", type=int)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--keep", type=int, default=300)
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = ap.parse_args()
    if not (DATASETS / "monet-train30").is_dir():
        sys.exit(f"skipped: {DATASETS} is absent")
    out = Path(args.out).resolve()
    monets = out / "data/processed/monet_train"
    monets.mkdir(parents=True, exist_ok=True)
    (out / "data/ranked/top").mkdir(parents=True, exist_ok=True)
    for src in sorted((DATASETS / "monet-train30").iterdir()):
        if not (monets / src.name).exists():
            (monets / src.name).symlink_to(src)
    data = {"device": "cpu",
            "train": {"arch": args.arch, "resolution": args.resolution, "kimg": args.kimg, "fid_every_kimg": None,
                      "snapshot_kimg": 1.0, **({"channels": args.channels} if args.channels else {})},
            "generate": {"count": args.count, "keep": args.keep},
            "rank": {"method": "exemplar", "features": "inception"}}
    for pair in args.set:
        key, _, value = pair.partition("=")
        section, _, name = key.partition(".")
        data.setdefault(section, {})[name] = yaml.safe_load(value)
    os.chdir(out)
    import logging

    from lowshot.params import parse_params
    from stages import generate, train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    params = parse_params(data)
    start = time.time()
    summary = train.run(params, progress=False)
    train_s = time.time() - start
    print(f"train: {summary.describe()} in {train_s / 60:.1f} min ({params.train.kimg * 1000 / train_s:.2f} img/s)")
    print(f"generate: {generate.run(params, progress=False).describe()}")
    print(f"{args.arch} {args.resolution} px, {args.kimg:g} kimg on monet-train30; CPU flags: {cpu_flags()}; "
          f"synthetic paintings in {out / 'data/synthetic'}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
