"""CycleGAN training step time and peak memory on this machine: fp32 against channels_last and bf16.

    python benchmarks/cyclegan_step.py [--sizes 128,256] [--modes fp32,channels_last] [--steps 1]
        [--g-blocks 9] [--ngf 64] [--translate-batch 8] [--threads N] [--omp-wait passive] [--device cpu]

Each (size, mode) runs in its own spawned process: the four networks of `train_cyclegan` at the
`CycleGANParams` widths (g_blocks 9, ngf 64, ndf 64 unless given), the G and D phases of
`cyclegan_loop.make_phases` (Adam, DiffAugment, image pools of 50), batch 1, run as the loop runs a
step (per phase: requires_grad on, zero_grad, loss under autocast, finite check, backward, step).
Photos and paintings are random tensors of the right shape: data loading is not timed. One warm-up
step, counted by `FlopCounterMode` (convolutions and matmuls, forward + backward), then `--steps`
timed steps.

Modes: fp32 (contiguous NCHW: the baseline row of each size), channels_last (networks and inputs
in torch.channels_last; fp32), bf16 (`cyclegan.bf16`: forward passes under bf16 autocast; the
weights, Adam and the L1 cycle losses stay fp32). Every mode starts from the same weights and
inputs, so "loss/G" of the first step shows what bf16 changes; "finite" says whether every loss of
every step was finite. Translation: `G_AB` alone in eval mode under `inference_mode`, as
`translate` runs it, `--translate-batch` photos of `--translate-size` px, one warm-up batch then
`--translate-batches` timed.

Threads: `--threads` (default: torch's, 2 here) per child; the children run with OMP_WAIT_POLICY
PASSIVE unless `--omp-wait` says otherwise. On this 2-core machine shared with other jobs, libgomp's
default spin-waiting made a narrow CycleGAN step (64 px, ngf 16, 6 blocks) take about 20 s
against 0.3 s passive or with 1 thread, and bf16 look 2x faster than fp32 (it is 8x slower), while
fp32 matmul GFLOP/s hardly moved, so the matmul baseline does not correct for it; `--omp-wait env` measures what a stage run with the inherited
environment gets.

bf16 is left out of the default modes: this CPU (AVX2, no AVX512-BF16/AMX) has no fast bf16 path
(a 1024^2 bf16 matmul ran at ~1 GFLOP/s against ~70 fp32) and a 128 px bf16 step took 249 s against
7.4 s fp32, so `--modes fp32,channels_last,bf16` at 128 and 256 px would take well over half an hour
(every row is a warm-up step plus the timed ones). `--sizes 128 --modes bf16` measures it at 128 px.

Relative figures, so that load from other jobs does not invalidate the comparison: speed-ups are
against the fp32 row of the same size, measured in the same run; each child also measures fp32
dense matmul GFLOP/s (2048^2, 3 reps before its timed work and 3 after) and reports the step's FLOP
rate as a fraction of it. Peak memory: the child's VmHWM from /proc on CPU, not `ru_maxrss`, which
Linux carries across execve, so a spawned child's starts at its parent's peak (`ru_maxrss` only where
there is no /proc); on CUDA `torch.cuda.max_memory_allocated`.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from _measure import matmul, peak_mib, sync
from lowshot.augment import make_augment
from lowshot.models.cyclegan import PatchDiscriminator, ResnetGenerator
from lowshot.params import CycleGANParams
from lowshot.runtime import pick_device
from lowshot.train.cyclegan_loop import make_phases, model_config
from lowshot.train.image_pool import ImagePool

MODES = ("fp32", "channels_last", "bf16")
MATMUL_N, MATMUL_REPS = 2048, 3


@dataclass
class Result:
    kind: str  # "train" or "translate"
    size: int
    mode: str
    seconds: float = 0.0  # per step (train) or per batch (translate)
    flops: float = 0.0  # per step / batch
    matmul_gflops: float = 0.0
    first_loss: float = float("nan")
    finite: bool = True
    idle_mib: float = 0.0
    peak_mib: float = 0.0


def prepare(mode: str, device: torch.device):
    """(module -> module, tensor -> tensor, autocast context factory) for `mode`."""
    fmt = torch.channels_last if mode == "channels_last" else torch.contiguous_format
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if mode == "bf16" else nullcontext
    return (lambda m: m.to(device, memory_format=fmt)), (lambda x: x.to(device).contiguous(memory_format=fmt)), autocast


def measure_train(size: int, mode: str, args: argparse.Namespace) -> Result:
    """In a child process: build the four networks, one FLOP-counted warm-up step, `args.steps` timed."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    res = Result("train", size, mode, idle_mib=peak_mib(device) if device.type == "cpu" else 0.0)
    mm = matmul(MATMUL_N, MATMUL_REPS, device)
    net_to, tensor_to, autocast = prepare(mode, device)

    cfg = CycleGANParams(size=size, g_blocks=args.g_blocks, ngf=args.ngf, ndf=args.ndf)
    config = model_config(cfg)
    torch.manual_seed(0)
    nets = nn.ModuleDict({"G_AB": ResnetGenerator.from_config(config), "G_BA": ResnetGenerator.from_config(config),
                          "D_A": PatchDiscriminator.from_config(config), "D_B": PatchDiscriminator.from_config(config)})
    net_to(nets).train().requires_grad_(False)
    augment = make_augment("diffaugment", policy=cfg.diffaugment, generator=torch.Generator().manual_seed(1))
    pools = {d: ImagePool(cfg.pool_size, rng=torch.Generator().manual_seed(2 + i)) for i, d in enumerate("AB")}
    phases = make_phases(cfg, nets, augment, pools)
    data = torch.Generator().manual_seed(3)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> float:
        """One minibatch as `train_cyclegan` runs it; returns loss/G."""
        batch = {d: tensor_to(torch.rand(cfg.batch, 3, size, size, generator=data) * 2 - 1) for d in "AB"}
        loss_g = float("nan")
        for phase in phases:
            phase.module.requires_grad_(True)
            phase.opt.zero_grad(set_to_none=True)
            with autocast():
                total, scalars = phase.loss(batch)
            values = torch.stack([v.detach().float() for v in (total, *scalars.values())])
            res.finite &= bool(torch.isfinite(values).all())
            total.backward()
            phase.module.requires_grad_(False)
            phase.opt.step()
            loss_g = float(scalars["loss/G"].detach()) if "loss/G" in scalars else loss_g
        return loss_g

    with FlopCounterMode(display=False) as counter:
        res.first_loss = step()
    res.flops = counter.get_total_flops()
    sync(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(device)
    res.seconds = (time.perf_counter() - start) / args.steps
    res.peak_mib = peak_mib(device)
    mm2 = matmul(MATMUL_N, MATMUL_REPS, device)
    res.matmul_gflops = (mm[0] + mm2[0]) / (mm[1] + mm2[1]) / 1e9
    return res


def measure_translate(mode: str, args: argparse.Namespace) -> Result:
    """In a child process: G_AB alone, eval mode, `inference_mode`; one warm-up batch then timed ones."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    size, n = args.translate_size, args.translate_batch
    res = Result("translate", size, mode, idle_mib=peak_mib(device) if device.type == "cpu" else 0.0)
    mm = matmul(MATMUL_N, MATMUL_REPS, device)
    net_to, tensor_to, autocast = prepare(mode, device)
    config = model_config(CycleGANParams(g_blocks=args.g_blocks, ngf=args.ngf, ndf=args.ndf))
    torch.manual_seed(0)
    G = net_to(ResnetGenerator.from_config(config)).eval().requires_grad_(False)
    photos = tensor_to(torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(3)).float())
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode(), autocast():
        with FlopCounterMode(display=False) as counter:
            out = G(photos / 127.5 - 1.0).float()
        res.finite = bool(torch.isfinite(out).all())
        res.flops = counter.get_total_flops()
        sync(device)
        start = time.perf_counter()
        for _ in range(args.translate_batches):
            G(photos / 127.5 - 1.0).float().cpu()
        sync(device)
    res.seconds = (time.perf_counter() - start) / args.translate_batches
    res.peak_mib = peak_mib(device)
    mm2 = matmul(MATMUL_N, MATMUL_REPS, device)
    res.matmul_gflops = (mm[0] + mm2[0]) / (mm[1] + mm2[1]) / 1e9
    return res


def matmul_rates(args: argparse.Namespace) -> tuple[float, float]:
    """In a child process: fp32 and bf16 1024^2 matmul GFLOP/s (is there fast bf16 on this machine?)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    return tuple(flops / s / 1e9 for flops, s in (matmul(1024, 3, device), matmul(1024, 3, device, torch.bfloat16)))


def in_child(fn, *fn_args):
    """`fn(*fn_args)` in a fresh spawned process, so its peak memory is its own."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *fn_args).result()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="128,256")
    ap.add_argument("--modes", default="fp32,channels_last", help=f"from {', '.join(MODES)}; fp32 (the baseline) always runs")
    ap.add_argument("--steps", type=int, default=1, help="timed training steps per row, after 1 warm-up")
    defaults = CycleGANParams()
    ap.add_argument("--g-blocks", type=int, default=defaults.g_blocks, choices=[6, 9])
    ap.add_argument("--ngf", type=int, default=defaults.ngf)
    ap.add_argument("--ndf", type=int, default=defaults.ndf)
    ap.add_argument("--translate-size", type=int, default=256)
    ap.add_argument("--translate-batch", type=int, default=8)
    ap.add_argument("--translate-batches", type=int, default=1, help="timed batches, after 1 warm-up (0: skip)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per child (0: torch default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--omp-wait", default="passive", choices=["passive", "active", "env"],
                    help="OMP_WAIT_POLICY of the children (env: as inherited); see the module docstring")
    args = ap.parse_args()
    if args.omp_wait != "env":  # read by each spawned child's OpenMP runtime when it starts
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait.upper()
    device = pick_device(args.device)
    sizes, modes = [int(s) for s in args.sizes.split(",") if s], args.modes.split(",")
    if unknown := set(modes) - set(MODES):
        ap.error(f"unknown modes {sorted(unknown)}; known: {', '.join(MODES)}")
    modes = ["fp32"] + [m for m in modes if m != "fp32"]  # the baseline always runs, first

    load_before = os.getloadavg()
    start = time.perf_counter()
    f32, b16 = in_child(matmul_rates, args)
    train, translate = [], []
    for size in sizes:
        for mode in modes:
            train.append(in_child(measure_train, size, mode, args))
            print(f"  train {size} px {mode}: {train[-1].seconds:.1f} s/step "
                  f"({time.perf_counter() - start:.0f} s so far)", flush=True)
    if args.translate_batches > 0:
        for mode in modes:
            translate.append(in_child(measure_translate, mode, args))
            print(f"  translate {mode}: {args.translate_batch / translate[-1].seconds:.2f} img/s "
                  f"({time.perf_counter() - start:.0f} s so far)", flush=True)

    load = " ".join(f"{x:.2f}" for x in load_before) + " -> " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    mem = "RSS" if device.type == "cpu" else "CUDA alloc"
    print(f"\nCycleGAN g_blocks {args.g_blocks}, ngf {args.ngf}, ndf {args.ndf}, batch 1; device {device}, "
          f"{args.threads or torch.get_num_threads()} torch threads, OMP_WAIT_POLICY "
          f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}, {os.cpu_count()} CPUs, loadavg {load}; {args.steps} timed "
          f"step(s) per row; {time.perf_counter() - start:.0f} s")
    print(f"matmul 1024^2 (own child, before the rows): fp32 {f32:.1f} GFLOP/s, bf16 {b16:.1f} GFLOP/s")
    print(f"| px | mode | step s | speed-up vs fp32 | GFLOP/step | GFLOP/s | matmul GFLOP/s | % of matmul "
          f"| loss/G step 0 | finite | idle {mem} MiB | peak {mem} MiB | peak vs fp32 |\n"
          "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    base = {r.size: r for r in train if r.mode == "fp32"}
    for r in train:
        b, rate = base[r.size], r.flops / r.seconds / 1e9
        print(f"| {r.size} | {r.mode} | {r.seconds:.2f} | {b.seconds / r.seconds:.2f}x | {r.flops / 1e9:.0f} | "
              f"{rate:.1f} | {r.matmul_gflops:.1f} | {100 * rate / r.matmul_gflops:.1f} | {r.first_loss:.4f} | "
              f"{'yes' if r.finite else 'NO'} | {r.idle_mib:.0f} | {r.peak_mib:.0f} | {r.peak_mib / b.peak_mib:.2f}x |")
    if translate:
        print(f"\ntranslation, G_AB alone: batch {args.translate_batch} at {args.translate_size} px, "
              f"{args.translate_batches} timed batch(es) per row")
        print(f"| mode | s/batch | img/s | speed-up vs fp32 | GFLOP/img | GFLOP/s | % of matmul | finite "
              f"| peak {mem} MiB |\n|---|---:|---:|---:|---:|---:|---:|---|---:|")
        b = translate[0]
        for r in translate:
            rate = r.flops / r.seconds / 1e9
            print(f"| {r.mode} | {r.seconds:.2f} | {args.translate_batch / r.seconds:.2f} | "
                  f"{b.seconds / r.seconds:.2f}x | {r.flops / args.translate_batch / 1e9:.1f} | {rate:.1f} | "
                  f"{100 * rate / r.matmul_gflops:.1f} | {'yes' if r.finite else 'NO'} | {r.peak_mib:.0f} |")


if __name__ == "__main__":
    main()
