"""ConSinGAN training time per painting on this machine, by maximum image size.

    python benchmarks/singan_speed.py [--sizes 128,256] [--iters 3] [--painting FILE] [--device cpu]

For each maximum size, the pyramid of a 256x256 Monet (`pyramid_sizes` with the `singan` params'
min_size and stages) is trained stage by stage exactly as `train_singan` trains it (`start_stage`,
then `train_iteration`: 3 critic steps with the gradient penalty, one generator backward, 3 Adam
steps), but only `--iters` timed iterations per stage after one untimed warm-up. Each stage's
seconds per iteration, times its iteration count, gives a painting's training time: the table shows
it for the CPU default (`singan.iterations`), for `--iterations` (a list per stage, or one count)
and for the paper's 2,000 per stage.

Baselines, in the same run: the paper's setting (250 px, 2,000 iterations per stage) beside the CPU
default, and fp32 dense matmul GFLOP/s on the same threads before and after the timing, which
says whether the machine was busy (two figures far apart, or far below this machine's usual).
"""

from __future__ import annotations

import os

# As the `lowshot` command: idle OpenMP threads sleep instead of spinning (see stages/cli.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import time
from pathlib import Path

import torch

from _measure import matmul, sync
from lowshot.models.consingan import Discriminator, Generator
from lowshot.params import SinGANParams
from lowshot.runtime import pick_device
from lowshot.train.singan_loop import (
    image_pyramid,
    load_painting,
    model_config,
    pyramid_sizes,
    stage_iterations,
    stage_optimizers,
    start_stage,
    train_iteration,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
PAPER_ITERATIONS = 2000


def time_stages(cfg: SinGANParams, painting: Path, iters: int, device: torch.device) -> list[tuple]:
    """(stage, (h, w), seconds per iteration) of every stage."""
    image = load_painting(painting)
    sizes = pyramid_sizes(image.shape[2], image.shape[3], min_size=cfg.min_size, max_size=cfg.max_size,
                          stages=cfg.stages)
    reals = [r.to(device) for r in image_pyramid(image, sizes)]
    config = model_config(cfg)
    torch.manual_seed(0)
    G, D = Generator(config).to(device), Discriminator(config).to(device)
    gens = {k: torch.Generator().manual_seed(i) for i, k in enumerate(("noise", "fixed", "gp"))}
    fixed, amps, rows = [], [], []
    for stage in range(cfg.stages):
        if stage:
            G.grow()
            G.to(device)
        fixed, amps = start_stage(G, reals, sizes, fixed, amps, stage, cfg, gens["fixed"], device)
        opt_g, opt_d = stage_optimizers(G, D, cfg)

        def step() -> None:
            train_iteration(G, D, opt_g, opt_d, reals[stage], sizes[:stage + 1], fixed, amps, cfg, gens, device,
                            out_dir=Path("."), where="benchmark")

        step()  # warm-up: first-call allocations and kernel choices for this stage's shapes
        sync(device)
        start = time.perf_counter()
        for _ in range(iters):
            step()
        sync(device)
        rows.append((stage, sizes[stage], (time.perf_counter() - start) / iters))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="128,256", help="maximum sizes (singan.max_size) to time")
    parser.add_argument("--iters", type=int, default=3, help="timed iterations per stage")
    parser.add_argument("--painting", type=Path, default=None, help="default: the first of monet-train30")
    parser.add_argument("--iterations", default=None, help="another schedule to price: one count, or one per stage (600,400,...)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    painting = args.painting or (sorted((SHARED / "monet-train30").iterdir())[0]
                                 if (SHARED / "monet-train30").is_dir() else None)
    if painting is None:
        raise SystemExit(f"no painting: pass --painting or provide {SHARED / 'monet-train30'}")
    device = pick_device(args.device)
    default = SinGANParams()
    before = matmul(1024, 8, device)
    print(f"device {device}, {torch.get_num_threads()} threads; painting {painting.name}")
    summary = []
    for max_size in (int(s) for s in args.sizes.split(",")):
        cfg = default.model_copy(update={"max_size": max_size})
        rows = time_stages(cfg, painting, args.iters, device)
        print(f"\nmax_size {max_size}: {cfg.stages} stages, {cfg.channels} channels, "
              f"{cfg.d_steps} D + {cfg.g_steps} G steps per iteration")
        print("| stage | level px | s / iteration |")
        print("|---|---|---|")
        for stage, (h, w), s in rows:
            print(f"| {stage} | {h}x{w} | {s:.3f} |")
        summary.append((max_size, [s for _, _, s in rows]))
    after = matmul(1024, 8, device)
    print(f"\nmatmul baseline: {before[0] / before[1] / 1e9:.0f} GFLOP/s before, {after[0] / after[1] / 1e9:.0f} after")

    schedules = {f"{default.iterations} (CPU default)": stage_iterations(default)}
    if args.iterations:
        counts = [int(v) for v in args.iterations.split(",")]
        schedules[args.iterations] = counts * default.stages if len(counts) == 1 else counts
    schedules[f"{PAPER_ITERATIONS} (paper)"] = [PAPER_ITERATIONS] * default.stages
    print("\nTraining time per painting, minutes (sum over stages of s/iteration x that stage's iterations)")
    print("| max_size | " + " | ".join(f"iterations {name}" for name in schedules) + " |")
    print("|---|" + "---|" * len(schedules))
    for max_size, per_stage in summary:
        print(f"| {max_size} | " + " | ".join(f"{sum(s * n for s, n in zip(per_stage, its)) / 60:.1f}"
                                             for its in schedules.values()) + " |")


if __name__ == "__main__":
    main()
