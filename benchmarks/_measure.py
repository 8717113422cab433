"""Helpers shared by the training benchmarks: device sync, a matmul FLOP/s baseline, peak memory of the
calling process, the CPU's flags, and a dvclive metric's history."""

from __future__ import annotations

import csv
import re
import resource
import time
from pathlib import Path

import torch

MIB = 1 << 20


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul(n: int, reps: int, device: torch.device, dtype: torch.dtype = torch.float32) -> tuple[float, float]:
    """(FLOPs, seconds) of `reps` n x n matmuls after one untimed warm-up."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    sync(device)
    return 2.0 * n**3 * reps, time.perf_counter() - start


def peak_mib(device: torch.device) -> float:
    """Peak memory so far: CUDA allocations, or this process's peak RSS. Linux keeps ru_maxrss across
    execve, so a spawned child's ru_maxrss starts at its parent's peak; VmHWM is the child's own."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / MIB
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / MIB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MIB  # Linux units: KiB


def cpu_flags() -> str:
    """The CPU's AVX512 and AMX flags (what decides bf16 speed), for every benchmark table."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    found = sorted(set(re.findall(r"\b(avx512[a-z_0-9]*|amx[a-z_0-9]*)\b", text)))
    return " ".join(found) or "none"


def live_metric(tsv: Path) -> dict[int, float]:
    """{step: value} of one dvclive metric table (plots/metrics/.../NAME.tsv); empty when it is absent."""
    if not tsv.is_file():
        return {}
    with tsv.open() as f:
        return {int(r["step"]): float(r[tsv.stem]) for r in csv.DictReader(f, delimiter="\t")}
