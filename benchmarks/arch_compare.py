"""Every GAN architecture on the 30 real Monets at equal CPU time: the table of the Places study.

    python benchmarks/arch_compare.py [--archs a,b,...] [--cpu-minutes 10] [--jobs 2]
    python benchmarks/arch_compare.py --report       # the table of the runs in --out again
    python benchmarks/arch_compare.py --resume       # finish the interrupted runs in --out

Each architecture trains in its own child process (one torch thread; `--jobs` of them side by side, so
that every run shares the core's two hyperthreads with another run, as the others do)
with `train_gan` on ../shared/datasets/monet-train30 at 64 px, batch 16, with DiffAugment and its
reference optimiser settings (train.lr_g etc. null), for `--cpu-minutes` of the child's CPU time
(`time.process_time`): the run is driven in chunks of at most
`--chunk-s` CPU seconds (each `train_gan` call resumes the last one's state exactly, so the chunks are one
run), and each chunk is sized from the speed measured so far to end on the next measuring point. Points:
1/3, 2/3 and 3/3 of the budget; at each, `--fid-images` images from G_ema (seeds 0..N-1, no truncation,
the `generate` stage's code) are scored against monet-pool120 with FID and KID, and 16 of them are saved
as OUT/<run>/grid-<point>.png. The CPU time counts everything in `train_gan` (setup and state saving
per chunk included), not the measuring. Widths: `--channels` (train.channels per arch).

Baselines in the same table: the default architecture (lightweight), and the floor of the metric, the 30
real training Monets themselves against monet-pool120.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
ARCHS = ("lightweight", "stylegan2", "dcgan", "wgan-gp", "resnet-wgan-gp")
# train.channels per arch: the DCGAN-shaped pairs at their reference width 64, the others narrowed, so that
# every arch trains at 17-32 img/s on one thread (benchmarks/train_throughput.py) and reaches 10-20 kimg.
CHANNELS = "lightweight=16,stylegan2=32,dcgan=64,wgan-gp=64,resnet-wgan-gp=16"
RESULTS = "results.jsonl"
PROGRESS = "cpu.json"  # per run: CPU s and kimg after its last finished chunk


def train_params(arch: str, channels: int, args: argparse.Namespace, kimg: float):
    from lowshot.params import TrainParams

    return TrainParams(arch=arch, resolution=64, batch=args.batch, kimg=kimg, channels=channels,
                       tick_kimg=args.batch / 1000, snapshot_kimg=1000.0, keep_snapshots=1, fid_every_kimg=None,
                       workers=1, aug={"kind": "diffaugment"})


def measure(run_dir: Path, args: argparse.Namespace, cache: Path) -> tuple[dict[str, float], object]:
    """FID/KID of --fid-images images of run_dir/generator.pt against monet-pool120; the images' first 16."""
    import torch

    from lowshot.images.folder import list_images
    from lowshot.metrics.probe import MetricProbe
    from lowshot.train.checkpoint import load_generator
    from lowshot.train.samples import latent_dim, seed_latents, synthesize

    G = load_generator(run_dir / "generator.pt")
    images = list(synthesize(G, seed_latents(range(args.fid_images), latent_dim(G)), batch_size=50))
    probe = MetricProbe(list_images(DATASETS / "monet-pool120"), seed=0, device=torch.device("cpu"), cache=cache,
                        workers=1, scratch=run_dir)
    return probe(images), torch.cat(images)[:16]


def read_rows(out: Path) -> list[dict]:
    path = out / RESULTS
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def resume_point(run: str, run_dir: Path, out: Path) -> tuple[float, float, int]:
    """(CPU s spent, kimg reached, last point measured) of an interrupted run; zeros for a new one.

    Every chunk records its CPU time and kimg in run_dir/PROGRESS after train_gan has saved its state, so a
    killed run resumes from its last finished chunk (train_gan resumes the state exactly). A run from
    before PROGRESS existed has only its state: its CPU time is estimated at its last measured rate."""
    from lowshot.train import checkpoint

    measured = [r for r in read_rows(out) if r["run"] == run]
    done = max((r["point"] for r in measured), default=0)
    progress = run_dir / PROGRESS
    if progress.is_file():
        saved = json.loads(progress.read_text())
        return saved["cpu_s"], saved["kimg"], done
    state = checkpoint.latest_state(run_dir) if run_dir.is_dir() else None
    if state is None:
        return 0.0, 0.0, 0
    last = max(measured, key=lambda r: r["point"], default=None)
    if last is None:
        sys.exit(f"{run_dir} holds a state but {out / RESULTS} no point of {run}: delete {run_dir.parent} to start over")
    kimg = round(checkpoint.load_state(state)["progress"]["nimg"] / 1000, 6)
    cpu = last["cpu_s"] / last["kimg"] * kimg
    print(f"{run}: resuming at {kimg} kimg; CPU time estimated at the rate of point {last['point']}: {cpu:.0f} s",
          flush=True)
    return cpu, kimg, done


def train_one(run: str, channels: dict[str, int], args: argparse.Namespace) -> None:
    """Train `run` (arch or arch:seed) for the CPU budget, measuring at its thirds; append rows to
    OUT/results.jsonl."""
    import torch

    from lowshot.images.grid import save_grid
    from lowshot.train import checkpoint
    from lowshot.train.gan_loop import train_gan
    from lowshot.train.recipes import make_recipe

    torch.set_num_threads(1)
    arch, _, seed = run.partition(":")
    seed, channels = int(seed or args.seed), channels[arch]
    out = Path(args.out)
    run_dir = out / run / "run"
    budget = args.cpu_minutes * 60
    points = [budget * k / 3 for k in (1, 2, 3)]
    step_kimg = args.batch / 1000
    cpu, kimg, done = resume_point(run, run_dir, out)
    rate = cpu / kimg if kimg else None  # CPU s per kimg
    recipe = make_recipe(train_params(arch, channels, args, 1.0), None)
    G, D = recipe.build()
    sizes = [sum(p.numel() for p in m.parameters()) for m in (G, D)]
    for point, target in enumerate(points, 1):
        if point <= done:
            continue
        while cpu < target - 0.5 * (rate or 0) * step_kimg:
            want = min(args.chunk_s, target - cpu)
            steps = 2 if rate is None else max(1, round(want / (rate * step_kimg)))
            kimg = round(kimg + steps * step_kimg, 6)
            start = time.process_time()
            train_gan(train_params(arch, channels, args, kimg), sources=[(DATASETS / "monet-train30", 1)],
                      out_dir=run_dir, live_dir=None, device="cpu", seed=seed, progress=False)
            cpu += time.process_time() - start
            rate = cpu / kimg
            (run_dir / PROGRESS).write_text(json.dumps({"cpu_s": cpu, "kimg": kimg}))
        start = time.time()
        metrics, grid = measure(run_dir, args, out / "feature-cache")
        save_grid(grid, out / run / f"grid-{point}.png", ncols=4)
        nimg = checkpoint.load_state(checkpoint.latest_state(run_dir))["progress"]["nimg"]
        row = {"run": run, "arch": arch, "seed": seed, "channels": channels, "params_G": sizes[0], "params_D": sizes[1], "point": point,
               "cpu_s": cpu, "kimg": nimg / 1000, "g_steps": nimg // args.batch // recipe.optim.critic_steps,
               "fid": metrics["metrics/fid"], "kid": metrics["metrics/kid"], "measure_s": time.time() - start}
        with open(out / RESULTS, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


def real_floor(args: argparse.Namespace) -> dict[str, float]:
    """FID / KID of the 30 training Monets themselves against monet-pool120."""
    import torch

    from lowshot.images.folder import list_images
    from lowshot.metrics.cache import cached_features
    from lowshot.metrics.distances import fid, kid
    from lowshot.metrics.inception import InceptionFeatures

    extractor = InceptionFeatures(torch.device("cpu"))
    cache = Path(args.out) / "feature-cache"
    a, b = (cached_features(list_images(DATASETS / name), cache_dir=cache, extractor=extractor, workers=1,
                            progress=False) for name in ("monet-train30", "monet-pool120"))
    return {"fid": fid(a, b), "kid": kid(a, b, seed=0)[0]}


def report(args: argparse.Namespace) -> None:
    rows = read_rows(Path(args.out))
    floor = real_floor(args)
    cpuinfo = Path("/proc/cpuinfo")
    flags = sorted({f for f in cpuinfo.read_text().split() if f.startswith(("avx512", "amx"))}) if cpuinfo.is_file() \
        else ["unknown"]
    print(f"\n64 px, monet-train30 only, batch {args.batch}, DiffAugment, each arch's reference optimiser "
          f"settings; {args.cpu_minutes:g} CPU-minutes per arch at 1 thread; FID / KID x1000 of "
          f"{args.fid_images} samples vs monet-pool120 (120). CPU flags: {' '.join(flags)}")
    print("| arch | seed | width | params G / D | point | CPU s | kimg | G steps | FID | KID x1000 |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    order = {a: i for i, a in enumerate(ARCHS)}
    for r in sorted(rows, key=lambda r: (order.get(r["arch"], 99), r["seed"], r["point"])):
        print(f"| {r['arch']} | {r['seed']} | {r['channels']} | {r['params_G'] / 1e6:.2f}M / {r['params_D'] / 1e6:.2f}M | "
              f"{r['point']}/3 | {r['cpu_s']:.0f} | {r['kimg']:.2f} | {r['g_steps']} | {r['fid']:.1f} | "
              f"{1000 * r['kid']:.1f} |")
    print(f"| real Monets (monet-train30, the floor) | | | | | | | | {floor['fid']:.1f} | {1000 * floor['kid']:.1f} |")


def run_children(args: argparse.Namespace) -> None:
    """Train every run in --archs, --jobs child processes at a time (one thread each)."""
    pending, running = [a for a in args.archs.split(",") if a], []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.time()
    while pending or running:
        while pending and len(running) < args.jobs:
            arch = pending.pop(0)
            running.append((arch, subprocess.Popen([sys.executable, __file__, *sys.argv[1:], "--only", arch], env=env)))
        time.sleep(1)
        for arch, child in list(running):
            if child.poll() is not None:
                running.remove((arch, child))
                print(f"{arch}: exit code {child.returncode} ({time.time() - start:.0f} s so far)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/lowshot-arch-compare")
    ap.add_argument("--archs", default=",".join(ARCHS) + ",lightweight:1",
                    help="runs, arch or arch:seed (default: every arch, and the baseline again with seed 1, which "
                         "measures the seed-to-seed spread and makes the runs an even number for --jobs 2)")
    ap.add_argument("--channels", default=CHANNELS, help="arch=train.channels,... (the networks' widths)")
    ap.add_argument("--cpu-minutes", type=float, default=10.0, help="CPU time per architecture")
    ap.add_argument("--chunk-s", type=float, default=60.0, help="longest train_gan call, CPU seconds")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--fid-images", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2, help="architectures trained side by side")
    ap.add_argument("--report", action="store_true", help="only print the table of the runs in --out")
    ap.add_argument("--resume", action="store_true",
                    help="finish the runs in --out that were interrupted (measured points are kept)")
    ap.add_argument("--only", help=argparse.SUPPRESS)  # a child process: train this run
    args = ap.parse_args()
    if not (DATASETS / "monet-train30").is_dir():
        sys.exit(f"skipped: {DATASETS} is absent")
    if args.only:
        channels = {k: int(v) for k, v in (item.split("=") for item in args.channels.split(","))}
        train_one(args.only, channels, args)
        return
    if not args.report:
        taken = [a for a in args.archs.split(",") if (Path(args.out) / a).exists()]
        if taken and not args.resume:
            sys.exit(f"{args.out} already holds {taken}: --resume to finish them, or pick another --out")
        finished = {r["run"] for r in read_rows(Path(args.out)) if r["point"] == 3}
        args.archs = ",".join(a for a in args.archs.split(",") if a not in finished)
        run_children(args)
    report(args)


if __name__ == "__main__":
    main()
