"""GAN training throughput (images/s), FLOP/s and peak memory of `gan_loop`'s minibatch on this machine.

    python benchmarks/train_throughput.py [--archs lightweight,stylegan2] [--sizes 64,128]
        [--batches 16] [--precisions fp32,auto] [--steps 2] [--channels N] [--threads N]
        [--omp-wait passive] [--device cpu]

`--precisions`: each config runs once per precision (`fp32`, `auto` = what the stages choose on this
machine, `bf16` forced; lowshot/precision.py), autocast as `train_gan` applies it (regularisation
phases in fp32); the table gives each row's speed-up over the fp32 row of the same config.

The full grid of the synthesis issue is `--batches 16,24,32`. The default, batch 16 only, took 7 minutes
on 2 CPU cores shared with other jobs (load 6-7), 5 of them for stylegan2 at 128 px, and under 5 at
load 2; the full grid took 32 minutes at load 4-6.

Each (arch, px, batch) runs in its own spawned process: fresh networks from `make_recipe` with
`TrainParams` defaults (widths: `channels` null unless `--channels`), the phases of `make_phases`
with DiffAugment (`make_augment('diffaugment')`), Adam and the G EMA, run as `train_gan` runs a
minibatch (per phase: requires_grad on, zero_grad, loss, finite check, backward, step; then the EMA
update). Real images are random tensors of the right shape: data loading is not timed.

Minibatch cost, and how lazy regularisation is counted: one warm-up minibatch runs every phase
(G, [Greg], D, [Dreg]) under `FlopCounterMode`, which gives each phase's FLOPs (forward + backward,
convolutions and matmuls only; elementwise work is not counted). Then `--steps` timed minibatches
run the main phases G and D (and the EMA), each timed apart; the lazy phases Greg and Dreg are timed
in the first `--reg-runs` of them only (each costs 1-1.5x a main phase at default widths, and they
are what makes stylegan2 slow to measure). The reported minibatch is amortised as in training: sum over
phases of (mean seconds or FLOPs) / interval, so stylegan2's path length (every `pl_interval` = 4
steps) and R1 (every `r1_interval` = 16) add a quarter and a sixteenth of their cost; the per-phase
table below the main one gives them unamortised. lightweight has no lazy phases. With critic steps
(wgan-gp, resnet-wgan-gp: 5) the G phase runs every 5th minibatch and is amortised the same way, so
img/s counts real images shown to D, as kimg does. The critics' phase D takes the gradient penalty on
a leaf input of D, which FlopCounterMode's module hooks cannot follow (a PyTorch limitation): its
FLOPs, and so the step's FLOP rate, are reported as nan.

Threads: `--threads` (default: torch's, 2 here) per child; the children run with OMP_WAIT_POLICY
PASSIVE unless `--omp-wait` says otherwise. On this 2-core machine shared with other jobs, libgomp's
default spin-waiting made the same lightweight 64 px minibatch 3-4x slower (17.2 s against 4.6 s
passive and 4.4 s with 1 thread) while fp32 matmul GFLOP/s hardly moved, so the matmul baseline
does not correct for it; `--omp-wait env` measures what a stage run with the inherited
environment gets.

Relative figures, so that load from other jobs does not invalidate the comparison: each child
measures fp32 dense matmul GFLOP/s (`--matmul-n` square, `--matmul-reps` before and as many after
its timed steps, on the same threads) and reports the training step's FLOP rate as a fraction of it.
Peak memory: the child's VmHWM from /proc on CPU ("idle" = after imports, before any network), not
`ru_maxrss`, which Linux carries across execve, so a spawned child's starts at its parent's peak
(`ru_maxrss` only where there is no /proc); on CUDA `torch.cuda.max_memory_allocated` (idle 0).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import torch
from torch.utils.flop_counter import FlopCounterMode

from _measure import cpu_flags, matmul, peak_mib, sync
from lowshot.augment import make_augment
from lowshot.params import TrainParams
from lowshot.precision import resolve_precision
from lowshot.runtime import pick_device
from lowshot.train import losses
from lowshot.train.ema import ema_beta, make_ema, update_ema
from lowshot.train.gan_loop import Phase, make_phases, make_recipe



@dataclass
class Result:
    arch: str
    px: int
    batch: int
    precision: str = "fp32"
    chosen: str = ""  # what `precision` resolved to, and why
    phases: list[tuple[str, int, float, float]] = field(default_factory=list)  # name, interval, s, FLOPs
    matmul_gflops: float = 0.0
    bf16_matmul_gflops: float = 0.0
    idle_mib: float = 0.0
    peak_mib: float = 0.0
    nonfinite: int = 0

    @property
    def step_s(self) -> float:
        return sum(s / interval for _, interval, s, _ in self.phases)

    @property
    def step_flops(self) -> float:
        return sum(f / interval for _, interval, _, f in self.phases)


def run_phase(phase: Phase, batch: dict, precision=None, device=None) -> bool:
    """One phase as `train_gan` runs it (under `precision`'s autocast); returns whether its losses were finite."""
    phase.module.requires_grad_(True)
    phase.opt.zero_grad(set_to_none=True)
    with precision.autocast(device, phase.autocast) if precision is not None else contextlib.nullcontext():
        total, scalars = phase.loss(batch)
    finite = bool(torch.isfinite(torch.stack([v.detach().float() for v in (total, *scalars.values())])).all())
    total.backward()
    phase.module.requires_grad_(False)
    phase.opt.step()
    return finite


def measure(arch: str, px: int, batch: int, precision_spec: str, args: argparse.Namespace) -> Result:
    """In a child process: build, warm up (counting FLOPs), time `args.steps` minibatches."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    precision = resolve_precision(precision_spec, device)
    res = Result(arch, px, batch, precision_spec, precision.describe(),
                 idle_mib=peak_mib(device) if device.type == "cpu" else 0.0)
    mm_flops, mm_s = matmul(args.matmul_n, args.matmul_reps, device)

    torch.manual_seed(0)
    cfg = TrainParams(arch=arch, resolution=px, batch=batch, channels=args.channels)
    recipe = make_recipe(cfg, None)
    G, D = (precision.prepare(m.to(device).train().requires_grad_(False)) for m in recipe.build())
    G_ema = make_ema(G)
    augment = make_augment("diffaugment", policy=cfg.aug.policy, generator=torch.Generator().manual_seed(1))
    phases = make_phases(cfg, recipe, G, D, augment, losses.PathLengthPenalty(), torch.Generator().manual_seed(2))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def minibatch() -> dict:
        b = {"real": precision.inputs(torch.rand(batch, 3, px, px, device=device) * 2 - 1)}
        for key in ("z_g", "z_pl", "z_d"):
            b[key] = torch.randn(batch, recipe.latent_dim, device=device)
        return b

    # Warm-up minibatch, every phase, each under its own FLOP counter.
    b = minibatch()
    flops = {}
    for phase in phases:
        try:
            with FlopCounterMode(display=False) as counter:
                res.nonfinite += not run_phase(phase, b, precision, device)
            flops[phase.name] = counter.get_total_flops()
        except RuntimeError as e:  # FlopCounterMode's module hooks vs autograd.grad on a leaf input of D
            if "leaf node" not in str(e):
                raise
            res.nonfinite += not run_phase(phase, b, precision, device)
            flops[phase.name] = math.nan
    update_ema(G_ema, G, ema_beta(batch, cfg.ema_kimg, 0, cfg.ema_rampup))

    # Timed minibatches: main phases every step, lazy ones in the first `reg_runs` steps only.
    seconds = {phase.name: 0.0 for phase in phases} | {"ema": 0.0}
    runs = {phase.name: 0 for phase in phases} | {"ema": 0}
    for step in range(1, args.steps + 1):
        b = minibatch()
        sync(device)
        for phase in phases:
            if phase.interval > 1 and step > args.reg_runs:
                continue
            start = time.perf_counter()
            res.nonfinite += not run_phase(phase, b, precision, device)
            sync(device)
            seconds[phase.name] += time.perf_counter() - start
            runs[phase.name] += 1
        start = time.perf_counter()
        update_ema(G_ema, G, ema_beta(batch, cfg.ema_kimg, step * batch, cfg.ema_rampup))
        sync(device)
        seconds["ema"] += time.perf_counter() - start
        runs["ema"] += 1
    res.phases = [(p.name, p.interval, seconds[p.name] / runs[p.name], flops[p.name]) for p in phases]
    res.phases.append(("ema", 1, seconds["ema"] / runs["ema"], 0.0))
    res.peak_mib = peak_mib(device)

    del phases, G, D, G_ema, b
    f2, s2 = matmul(args.matmul_n, args.matmul_reps, device)
    res.matmul_gflops = (mm_flops + f2) / (mm_s + s2) / 1e9
    bf, bs = matmul(args.matmul_n, args.matmul_reps, device, torch.bfloat16)
    res.bf16_matmul_gflops = bf / bs / 1e9
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default="lightweight,stylegan2")
    ap.add_argument("--sizes", default="64,128")
    ap.add_argument("--batches", default="16", help="the issue's full grid: 16,24,32")
    ap.add_argument("--precisions", default="fp32,auto", help="from fp32, auto, bf16; each config runs once per entry")
    ap.add_argument("--steps", type=int, default=2, help="timed minibatches per config, after 1 warm-up")
    ap.add_argument("--reg-runs", type=int, default=1, help="timed runs of each lazy regularisation phase")
    ap.add_argument("--channels", type=int, default=None, help="train.channels (default null: 32 / 128)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per child (0: torch default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--omp-wait", default="passive", choices=["passive", "active", "env"],
                    help="OMP_WAIT_POLICY of the children (env: as inherited); see the module docstring")
    ap.add_argument("--matmul-n", type=int, default=2048)
    ap.add_argument("--matmul-reps", type=int, default=3)
    args = ap.parse_args()
    if args.omp_wait != "env":  # read by each spawned child's OpenMP runtime when it starts
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait.upper()
    pick_device(args.device)  # fail early on a missing CUDA device
    configs = [(a, int(px), int(bs), p) for a in args.archs.split(",") for px in args.sizes.split(",")
               for bs in args.batches.split(",") for p in args.precisions.split(",")]
    load_before = os.getloadavg()
    start = time.perf_counter()
    results = []
    for arch, px, bs, prec in configs:
        # A fresh spawned process per config, so its peak RSS is that config's alone.
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            r = pool.submit(measure, arch, px, bs, prec, args).result()
        results.append(r)
        print(f"  {arch} {px} px batch {bs} {prec} ({r.chosen}): {bs / r.step_s:.2f} img/s "
              f"({time.perf_counter() - start:.0f} s so far)", flush=True)

    threads = args.threads or torch.get_num_threads()
    load = " ".join(f"{x:.2f}" for x in load_before) + " -> " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    mem = "peak RSS" if args.device == "cpu" else "peak CUDA alloc"
    print(f"\nGAN training minibatch (amortised lazy reg), device {args.device}, {threads} torch threads, "
          f"OMP_WAIT_POLICY {os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
          f"{os.cpu_count()} CPUs, loadavg {load}; channels {args.channels or 'default'}, "
          f"{args.steps} timed steps; matmul fp32 and bf16 {args.matmul_n}^2 in each child; CPU flags: {cpu_flags()}; "
          f"{time.perf_counter() - start:.0f} s")
    fp32_step = {(r.arch, r.px, r.batch): r.step_s for r in results if r.precision == "fp32"}
    print(f"| arch | px | batch | precision | img/s | vs fp32 | step s | GFLOP/step | GFLOP/s | fp32 matmul GFLOP/s "
          f"| bf16 matmul GFLOP/s | % of fp32 matmul | idle RSS MiB | {mem} MiB |\n"
          f"|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        rate = r.step_flops / r.step_s / 1e9
        flag = f" ({r.nonfinite} non-finite)" if r.nonfinite else ""
        base = fp32_step.get((r.arch, r.px, r.batch))
        speedup = f"{base / r.step_s:.2f}x" if base else "-"
        chosen = r.precision if r.precision != "auto" else f"auto: {r.chosen.split(' (')[0].removeprefix('precision ')}"
        print(f"| {r.arch} | {r.px} | {r.batch} | {chosen} | {r.batch / r.step_s:.2f} | {speedup} | {r.step_s:.2f} | "
              f"{r.step_flops / 1e9:.1f} | {rate:.1f} | {r.matmul_gflops:.1f} | {r.bf16_matmul_gflops:.1f} | "
              f"{100 * rate / r.matmul_gflops:.1f} | {r.idle_mib:.0f} | {r.peak_mib:.0f}{flag} |")

    print("\nper phase, unamortised (seconds and GFLOP of one run of the phase)")
    print("| arch | px | batch | precision | phase | every | s | GFLOP | GFLOP/s | share of step |\n"
          "|---|---:|---:|---|---|---:|---:|---:|---:|---:|")
    for r in results:
        for name, interval, s, f in r.phases:
            print(f"| {r.arch} | {r.px} | {r.batch} | {r.precision} | {name} | {interval} | {s:.3f} | {f / 1e9:.2f} | "
                  f"{f / 1e9 / s:.1f} | {100 * s / interval / r.step_s:.0f}% |")


if __name__ == "__main__":
    main()
