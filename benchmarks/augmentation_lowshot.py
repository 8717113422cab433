"""Acceptance of the synthesis issue: does augmenting D's inputs help in the 30-painting case?

Trains the GAN on monet-train30 alone (../shared/datasets) at 64 px with `train.aug.kind` none,
diffaugment and ada for the same budget, each in its own process (run side by side, one thread
each), and prints FID and KID against monet-pool120 over kimg as measured by the training loop
(dvclive histories in OUT/<kind>/live). The baseline is `none`: the augmented runs should beat it.
Sample grids: OUT/<kind>/live/plots/images/samples/<tick>.png.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
KINDS = ("none", "diffaugment", "ada")


def train_one(kind: str, args: argparse.Namespace) -> None:
    import torch

    from lowshot.params import TrainParams
    from lowshot.train.gan_loop import train_gan

    torch.set_num_threads(args.threads)
    cfg = TrainParams(arch=args.arch, resolution=64, batch=args.batch, kimg=args.kimg, channels=args.channels,
                      tick_kimg=args.every, snapshot_kimg=args.every, keep_snapshots=1,
                      fid_every_kimg=args.every, fid_images=args.fid_images, grid_size=16, workers=1,
                      aug={"kind": kind, "p": 0.0, "speed_kimg": args.ada_speed_kimg})
    out = Path(args.out) / kind
    train_gan(cfg, sources=[(DATASETS / "monet-train30", 1)], out_dir=out / "run", live_dir=out / "live",
              device="cpu", seed=args.seed, fid_reference=DATASETS / "monet-pool120",
              metrics_cache=Path(args.out) / "feature-cache", progress=False)


def history(out: Path, kind: str, name: str) -> dict[float, float]:
    """{kimg: value} of a dvclive metric, joined to progress/kimg by step."""
    from _measure import live_metric

    base = out / kind / "live" / "plots" / "metrics"
    kimg = live_metric(base / "progress" / "kimg.tsv")
    return {kimg[s]: v for s, v in live_metric(base / "metrics" / f"{name}.tsv").items() if s in kimg}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/lowshot-augmentation")
    ap.add_argument("--arch", default="lightweight", choices=["lightweight", "stylegan2"])
    ap.add_argument("--kimg", type=float, default=10.0)
    ap.add_argument("--every", type=float, default=2.0, help="kimg between FID/KID measurements")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--channels", type=int, default=16, help="train.channels (network width)")
    ap.add_argument("--fid-images", type=int, default=300)
    ap.add_argument("--ada-speed-kimg", type=float, default=5.0, help="short runs need a faster p than 500")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--only", choices=KINDS, help=argparse.SUPPRESS)  # a child process: train one kind
    ap.add_argument("--report", action="store_true", help="only print the table of a finished run")
    args = ap.parse_args()
    if args.only:
        train_one(args.only, args)
        return
    kinds = args.kinds.split(",")
    out = Path(args.out)
    if not args.report:
        if not (DATASETS / "monet-train30").is_dir():
            sys.exit(f"skipped: {DATASETS} is absent")
        start = time.time()
        children = [subprocess.Popen([sys.executable, __file__, *sys.argv[1:], "--only", k],
                                     env={**os.environ, "OMP_NUM_THREADS": str(args.threads)}) for k in kinds]
        codes = [c.wait() for c in children]
        print(f"trained {kinds} in {time.time() - start:.0f} s; exit codes {codes}")
    fids = {k: history(out, k, "fid") for k in kinds}
    kids = {k: history(out, k, "kid") for k in kinds}
    print(f"\n{args.arch} 64 px, monet-train30 only, batch {args.batch}, channels {args.channels}; "
          f"FID / KID x1000 of {args.fid_images} samples vs monet-pool120")
    print("kimg  " + "  ".join(f"{k:>20}" for k in kinds))
    for kimg in sorted({x for h in fids.values() for x in h}):
        cells = [f"{fids[k].get(kimg, float('nan')):8.1f} / {1000 * kids[k].get(kimg, float('nan')):7.1f}"
                 for k in kinds]
        print(f"{kimg:6.2f}" + "  ".join(f"{c:>20}" for c in cells))


if __name__ == "__main__":
    main()
