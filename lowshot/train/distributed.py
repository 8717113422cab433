"""Multi-process training helpers over torch.distributed, started by `torchrun`.

`init_from_env` reads torchrun's RANK / WORLD_SIZE / LOCAL_RANK (and MASTER_ADDR / MASTER_PORT)
and joins the process group: gloo on CPU, nccl on CUDA. Without those variables everything here
works as a single process (rank 0 of 1), so the same loop runs alone, in tests and under torchrun.

The GAN loop averages gradients itself (`average_gradients`, as NVlabs/stylegan3
`training_loop.py` does) rather than wrapping its networks in DistributedDataParallel: its
G and D phases each run a different subset of forward passes, and R1 / path length need a
double backward, which DDP does not support. `ddp_wrap` is there for loops without either.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """True in the process that writes files and logs (rank 0, or a single process)."""
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def init_from_env(device: torch.device | str) -> torch.device:
    """Join the process group torchrun describes (idempotent); return this process's device.

    Does nothing when WORLD_SIZE is unset or 1. On CUDA the device becomes cuda:LOCAL_RANK.
    """
    device = torch.device(device)
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    if world > 1 and not is_initialized():
        missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise RuntimeError(f"WORLD_SIZE={world} but {', '.join(missing)} unset: start the job with torchrun")
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, init_method="env://")
        log.info("rank %d of %d joined the %s process group", rank(), world_size(), backend)
    return device


def local_batch(batch: int, key: str = "train.batch") -> int:
    """This process's share of the global batch; ValueError (naming `key`) if it does not divide."""
    world = world_size()
    if batch % world:
        raise ValueError(f"{key} = {batch} is not divisible by the {world} training processes; "
                         f"use a multiple of {world}")
    return batch // world


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of `tensor` over all processes (in place; also returned). Identity in one process."""
    if is_initialized() and world_size() > 1:
        dist.all_reduce(tensor)
        tensor /= world_size()
    return tensor


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of `tensor` over all processes (in place; also returned)."""
    if is_initialized() and world_size() > 1:
        dist.all_reduce(tensor)
    return tensor


def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """Replace each parameter's .grad by its mean over processes (one flat all-reduce).

    Parameters without a gradient on this process count as zero gradients, so every process
    reduces the same flat tensor even when a phase leaves some parameters unused.
    """
    if not (is_initialized() and world_size() > 1):
        return
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.flatten() for p in params])
    all_reduce_mean(flat)
    for p, g in zip(params, flat.split([p.numel() for p in params])):
        p.grad.copy_(g.view_as(p))


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy `module`'s parameters and buffers from process `src` to all the others."""
    if is_initialized() and world_size() > 1:
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src)


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Copy `module`'s buffers (batch-norm statistics, tracked means) from process `src`."""
    if is_initialized() and world_size() > 1:
        for b in module.buffers():
            dist.broadcast(b, src)


def all_gather_object(obj: Any) -> list[Any]:
    """Every process's `obj`, in rank order (a one-element list in one process)."""
    if not (is_initialized() and world_size() > 1):
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def ddp_wrap(module: nn.Module, device: torch.device, **kwargs: Any) -> nn.Module:
    """`module` wrapped in DistributedDataParallel when running with several processes, else itself."""
    if not (is_initialized() and world_size() > 1):
        return module
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, **kwargs)


def cleanup() -> None:
    """Leave the process group (if this process joined one)."""
    if is_initialized():
        dist.destroy_process_group()
