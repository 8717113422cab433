"""Translator training step time and peak memory on this machine, per precision: fp32 against `auto`
(bf16 where the hardware runs it natively and fast, see lowshot/precision.py), bf16 and channels_last.

    python benchmarks/translator_step.py [--model cyclegan|cut|fastcut] [--sizes 128,256]
        [--modes fp32,auto,channels_last] [--steps 1] [--g-blocks 9] [--ngf 64] [--translate-batch 8]
        [--threads N] [--omp-wait passive] [--device cpu]

Each (size, mode) runs in its own spawned process: the networks and phases of `train_translator` for
`--model` (its recipe in `translator_loop.RECIPES`) at the `CycleGANParams` widths (g_blocks 9, ngf 64,
ndf 64 unless given), batch 1, run as the loop runs a step (per phase: requires_grad on, zero_grad, loss
under the precision's autocast, finite check, backward, step). Photos and paintings are random tensors of
the right shape: data loading is not timed. One warm-up step, counted by `FlopCounterMode` (convolutions
and matmuls, forward + backward), then `--steps` timed steps.

Modes: fp32 (contiguous NCHW: the baseline row of each size), auto (`precision: auto`: what the stages
choose on this machine), bf16 (forced), channels_last (fp32, networks and inputs in channels_last),
auto+channels_last. Every mode starts from the same weights and inputs, so "loss/G" of the first step
shows what bf16 changes; "finite" says whether every loss of every step was finite. Translation: `G_AB`
alone in eval mode under `inference_mode`, `--translate-batch` photos of `--translate-size` px, one
warm-up batch then `--translate-batches` timed.

Threads: `--threads` (default: torch's) per child; the children run with OMP_WAIT_POLICY PASSIVE unless
`--omp-wait` says otherwise (on a shared 2-core machine libgomp's spin-waiting made a step 3-4x slower).
On a CPU without native bf16 (AVX2, no AVX512-BF16/AMX), forced bf16 is very slow (a 128 px CycleGAN step
249 s against 7.4 s fp32): measure it there with `--sizes 128 --modes bf16` only.

Relative figures, so that load from other jobs does not invalidate the comparison: speed-ups are against
the fp32 row of the same size, measured in the same run; each child also measures fp32 and bf16 dense
matmul GFLOP/s (2048^2, 3 reps before its timed work and 3 after), the hardware's ceilings, and the table
gives the step's FLOP rate beside both. Peak memory: the child's VmHWM from /proc on CPU; on CUDA
`torch.cuda.max_memory_allocated`.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from _measure import cpu_flags, matmul, peak_mib, sync
from lowshot.augment import make_augment
from lowshot.models.cyclegan import ResnetGenerator
from lowshot.params import CycleGANParams
from lowshot.precision import FP32, Precision, resolve_precision
from lowshot.runtime import pick_device
from lowshot.train.translator_loop import RECIPES, model_config

MODES = ("fp32", "auto", "bf16", "channels_last", "auto+channels_last")
MATMUL_N, MATMUL_REPS = 2048, 3


@dataclass
class Result:
    kind: str  # "train" or "translate"
    size: int
    mode: str
    seconds: float = 0.0  # per step (train) or per batch (translate)
    flops: float = 0.0  # per step / batch
    matmul_gflops: float = 0.0
    matmul_bf16_gflops: float = 0.0
    precision: str = ""
    first_loss: float = float("nan")
    finite: bool = True
    idle_mib: float = 0.0
    peak_mib: float = 0.0


def prepare(mode: str, device: torch.device) -> Precision:
    """The precision a mode stands for."""
    if mode == "fp32":
        return FP32
    if mode == "channels_last":
        return Precision(bf16=False, channels_last=True, reason="fp32 asked for", layout_reason="asked for")
    return resolve_precision("bf16" if mode == "bf16" else "auto", device, "on" if "channels_last" in mode else "off")


def ceilings(device: torch.device) -> tuple[float, float, float, float]:
    """(fp32 FLOPs, seconds, bf16 FLOPs, seconds) of dense matmuls: the hardware's ceilings."""
    return (*matmul(MATMUL_N, MATMUL_REPS, device), *matmul(MATMUL_N, MATMUL_REPS, device, torch.bfloat16))


def set_ceilings(res: Result, before: tuple[float, ...], after: tuple[float, ...]) -> None:
    res.matmul_gflops = (before[0] + after[0]) / (before[1] + after[1]) / 1e9
    res.matmul_bf16_gflops = (before[2] + after[2]) / (before[3] + after[3]) / 1e9


def measure_train(size: int, mode: str, args: argparse.Namespace) -> Result:
    """In a child process: build the model's networks, one FLOP-counted warm-up step, `args.steps` timed."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    res = Result("train", size, mode, idle_mib=peak_mib(device) if device.type == "cpu" else 0.0)
    mm = ceilings(device)
    precision = prepare(mode, device)
    res.precision = precision.describe()

    cfg = CycleGANParams(model=args.model, size=size, g_blocks=args.g_blocks, ngf=args.ngf, ndf=args.ndf).resolved()
    config = model_config(cfg)
    torch.manual_seed(0)
    recipe = RECIPES[cfg.model]
    streams = {name: torch.Generator().manual_seed(i) for i, name in enumerate(("augment", *recipe.streams))}
    augment = make_augment("diffaugment", policy=cfg.diffaugment, generator=streams["augment"])
    parts = recipe.build(cfg, config, augment, streams)
    precision.prepare(parts.nets.to(device).train().requires_grad_(False))
    data = torch.Generator().manual_seed(3)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> float:
        """One minibatch as `train_translator` runs it; returns loss/G."""
        batch = {d: precision.inputs((torch.rand(cfg.batch, 3, size, size, generator=data) * 2 - 1).to(device))
                 for d in "AB"}
        loss_g = float("nan")
        for phase in parts.phases:
            phase.module.requires_grad_(True)
            phase.opt.zero_grad(set_to_none=True)
            with precision.autocast(device):
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
    set_ceilings(res, mm, ceilings(device))
    return res


def measure_translate(mode: str, args: argparse.Namespace) -> Result:
    """In a child process: G_AB alone, eval mode, `inference_mode`; one warm-up batch then timed ones."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    size, n = args.translate_size, args.translate_batch
    res = Result("translate", size, mode, idle_mib=peak_mib(device) if device.type == "cpu" else 0.0)
    mm = ceilings(device)
    precision = prepare(mode, device)
    res.precision = precision.describe()
    config = model_config(CycleGANParams(model=args.model, g_blocks=args.g_blocks, ngf=args.ngf, ndf=args.ndf))
    torch.manual_seed(0)
    G = precision.prepare(ResnetGenerator.from_config(config).to(device)).eval().requires_grad_(False)
    photos = precision.inputs(
        torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(3)).float().to(device))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode(), precision.autocast(device):
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
    set_ceilings(res, mm, ceilings(device))
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
    ap.add_argument("--model", default="cyclegan", choices=tuple(RECIPES))
    ap.add_argument("--modes", default="fp32,auto", help=f"from {', '.join(MODES)}; fp32 (the baseline) always runs")
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
    print(f"\n{args.model} g_blocks {args.g_blocks}, ngf {args.ngf}, ndf {args.ndf}, batch 1; device {device}, "
          f"{args.threads or torch.get_num_threads()} torch threads, OMP_WAIT_POLICY "
          f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}, {os.cpu_count()} CPUs, loadavg {load}; {args.steps} timed "
          f"step(s) per row; {time.perf_counter() - start:.0f} s")
    print(f"matmul 1024^2 (own child, before the rows): fp32 {f32:.1f} GFLOP/s, bf16 {b16:.1f} GFLOP/s; "
          f"CPU flags: {cpu_flags()}")
    for r in train + translate:
        if r.mode not in ("fp32", "channels_last"):
            print(f"  {r.kind} {r.mode}: {r.precision}")
    print(f"| px | mode | step s | speed-up vs fp32 | GFLOP/step | GFLOP/s | matmul fp32 / bf16 GFLOP/s "
          f"| loss/G step 0 | finite | idle {mem} MiB | peak {mem} MiB | peak vs fp32 |\n"
          "|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    base = {r.size: r for r in train if r.mode == "fp32"}
    for r in train:
        b, rate = base[r.size], r.flops / r.seconds / 1e9
        print(f"| {r.size} | {r.mode} | {r.seconds:.2f} | {b.seconds / r.seconds:.2f}x | {r.flops / 1e9:.0f} | "
              f"{rate:.1f} | {r.matmul_gflops:.0f} / {r.matmul_bf16_gflops:.0f} | {r.first_loss:.4f} | "
              f"{'yes' if r.finite else 'NO'} | {r.idle_mib:.0f} | {r.peak_mib:.0f} | {r.peak_mib / b.peak_mib:.2f}x |")
    if translate:
        print(f"\ntranslation, G_AB alone: batch {args.translate_batch} at {args.translate_size} px, "
              f"{args.translate_batches} timed batch(es) per row")
        print(f"| mode | s/batch | img/s | speed-up vs fp32 | GFLOP/img | GFLOP/s | matmul fp32 / bf16 GFLOP/s "
              f"| finite | peak {mem} MiB |\n|---|---:|---:|---:|---:|---:|---:|---|---:|")
        b = translate[0]
        for r in translate:
            rate = r.flops / r.seconds / 1e9
            print(f"| {r.mode} | {r.seconds:.2f} | {args.translate_batch / r.seconds:.2f} | "
                  f"{b.seconds / r.seconds:.2f}x | {r.flops / args.translate_batch / 1e9:.1f} | {rate:.1f} | "
                  f"{r.matmul_gflops:.0f} / {r.matmul_bf16_gflops:.0f} | {'yes' if r.finite else 'NO'} | "
                  f"{r.peak_mib:.0f} |")


if __name__ == "__main__":
    main()
