"""Numeric precision and memory format per device: bf16 autocast only where the hardware runs it natively
and fast, channels_last only where it is measured to win.

Machines differ: on a CPU with AVX512-BF16 bf16 autocast made a CycleGAN step 1.7x faster, on one
without it 30x slower. So `auto` asks the hardware. CUDA: bf16 where the device supports it. CPU: bf16
only when /proc/cpuinfo reports avx512_bf16 or amx_bf16 *and* a micro-benchmark (a bf16 against an fp32
1024^2 matmul, a few milliseconds each) finds bf16 at least `BF16_MIN_SPEEDUP` times faster, so a CPU
that reports the flag but runs bf16 slowly is caught. channels_last likewise: `auto` times a small
convolution block (reflection pad, 3x3 conv, instance norm, ReLU; forward and backward) in both layouts
and keeps channels_last only when it is `CHANNELS_LAST_MIN_SPEEDUP` times faster. Measurements are cached
per machine and torch version in the user cache directory ($XDG_CACHE_HOME/lowshot, else
~/.cache/lowshot), so they run once. Every stage logs the choice and its reason, e.g.
`precision bf16 (cpu: avx512_bf16, bf16 matmul 2.4x fp32)`.

Autocast covers forward passes; weights, optimiser states and the losses stay float32.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lowshot.fsutil import atomic_write_text

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")
CHANNELS_LAST = ("auto", "on", "off")
BF16_MIN_SPEEDUP = 1.3  # bf16 matmul must beat fp32 by this much on a CPU for `auto` to pick it
CHANNELS_LAST_MIN_SPEEDUP = 1.05
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
CACHE_FORMAT = 1


@dataclass(frozen=True)
class Precision:
    """What a stage runs with: autocast dtype (bf16 or none) and memory format, with the reasons."""

    bf16: bool
    channels_last: bool
    reason: str
    layout_reason: str = ""

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.bf16 else torch.float32

    def describe(self) -> str:
        text = f"precision {'bf16' if self.bf16 else 'fp32'} ({self.reason})"
        if self.layout_reason:
            text += f", {'channels_last' if self.channels_last else 'contiguous NCHW'} ({self.layout_reason})"
        return text

    def autocast(self, device: torch.device | str, enabled: bool = True) -> contextlib.AbstractContextManager:
        """bf16 autocast on `device` when this precision is bf16 (and `enabled`), else nothing."""
        device = torch.device(device)
        if not (self.bf16 and enabled):
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)

    def prepare(self, module: nn.Module) -> nn.Module:
        """`module` in this precision's memory format (in place; returned)."""
        return module.to(memory_format=torch.channels_last) if self.channels_last else module

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """An input batch in this precision's memory format."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x


FP32 = Precision(bf16=False, channels_last=False, reason="fp32 asked for")


# --- what the hardware says ---------------------------------------------------------------------------


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_key() -> str:
    """Identity of this machine and torch build for the measurement cache."""
    flags = ",".join(sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma"))))
    text = f"{_cpu_model()}|{os.cpu_count()}|{flags}|torch {torch.__version__}|threads {torch.get_num_threads()}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_file() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "lowshot" / "hardware.json"


def _cached(name: str, measure: Callable[[], float]) -> float:
    """`measure()` once per machine key and torch version; later calls read the cache."""
    path, key = cache_file(), f"{name}/{machine_key()}"
    try:
        data = json.loads(path.read_text())
        if data.get("format") != CACHE_FORMAT:
            data = {}
    except (OSError, ValueError):
        data = {}
    entries = data.setdefault("entries", {})
    if key in entries:
        return float(entries[key])
    value = float(measure())
    entries[key] = value
    data["format"] = CACHE_FORMAT
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
    except OSError as e:  # a read-only home must not stop a stage
        log.debug("cannot write %s: %s", path, e)
    return value


def _best_seconds(fn: Callable[[], object], reps: int) -> float:
    fn()  # warm-up: first calls pick kernels and allocate
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bf16_matmul_speedup(n: int = 1024, reps: int = 5) -> float:
    """fp32 time / bf16 time of an n x n CPU matmul (best of `reps` each, interleaved warm-ups)."""
    gen = torch.Generator().manual_seed(0)  # never the global RNG: a stage's draws must not depend on the cache
    a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    a16, b16 = a.bfloat16(), b.bfloat16()
    return _best_seconds(lambda: torch.mm(a, b), reps) / _best_seconds(lambda: torch.mm(a16, b16), reps)


def channels_last_speedup(bf16: bool, reps: int = 3) -> float:
    """NCHW time / channels_last time of a small conv block's forward + backward on the CPU."""
    with torch.random.fork_rng(devices=[]):  # never the global RNG: a stage's draws must not depend on the cache
        torch.manual_seed(0)
        block = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(64, 64, 3), nn.InstanceNorm2d(64), nn.ReLU())
        x = torch.randn(2, 64, 64, 64)

    def step(module: nn.Module, inp: torch.Tensor) -> Callable[[], None]:
        def run() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = module(inp)
            out.float().sum().backward()
        return run

    nchw = _best_seconds(step(block, x.requires_grad_(False)), reps)
    last = nn.Sequential(*block).to(memory_format=torch.channels_last)
    nhwc = _best_seconds(step(last, x.contiguous(memory_format=torch.channels_last)), reps)
    return nchw / nhwc


# --- the choice ---------------------------------------------------------------------------------------


def resolve_precision(spec: str, device: torch.device | str, channels_last: str = "off") -> Precision:
    """The precision and memory format a stage runs with on `device` for `precision` / `channels_last`
    params (`auto`, `fp32` / `bf16`; `auto`, `on` / `off`), with the reasons. Raises ValueError when
    bf16 is asked for on a device that cannot run it at all."""
    if spec not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {spec!r}")
    if channels_last not in CHANNELS_LAST:
        raise ValueError(f"channels_last must be one of {CHANNELS_LAST}, got {channels_last!r}")
    device = torch.device(device)
    bf16, reason = _choose_bf16(spec, device)
    if channels_last == "auto" and device.type == "cpu":
        speedup = _cached(f"channels_last_speedup/{'bf16' if bf16 else 'fp32'}", lambda: channels_last_speedup(bf16))
        last = speedup >= CHANNELS_LAST_MIN_SPEEDUP
        layout = f"conv block {speedup:.2f}x in channels_last"
    elif channels_last == "auto":
        last, layout = True, f"{device.type}: channels_last suits tensor cores"
    else:
        last, layout = channels_last == "on", f"channels_last {channels_last} asked for"
    return Precision(bf16=bf16, channels_last=last, reason=reason, layout_reason=layout)


def _choose_bf16(spec: str, device: torch.device) -> tuple[bool, str]:
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
        if spec == "bf16" and not supported:
            raise ValueError(f"precision bf16 asked for, but {torch.cuda.get_device_name(device)} does not support it")
        if spec == "auto":
            name = torch.cuda.get_device_name(device)
            return supported, f"cuda: {name} {'supports' if supported else 'lacks'} bf16"
        return spec == "bf16", f"{spec} asked for"
    if spec != "auto":
        return spec == "bf16", f"{spec} asked for"
    if device.type != "cpu":
        return False, f"{device.type}: bf16 not checked there"
    native = sorted(f for f in NATIVE_BF16_FLAGS if f in cpu_flags())
    if not native:
        return False, "cpu: no avx512_bf16 or amx_bf16"
    speedup = _cached("bf16_matmul_speedup", bf16_matmul_speedup)
    ok = speedup >= BF16_MIN_SPEEDUP
    return ok, f"cpu: {', '.join(native)}, bf16 matmul {speedup:.1f}x fp32" + ("" if ok else
                                                                             f" (< {BF16_MIN_SPEEDUP}x: too slow)")
