"""Differentiable Augmentation (DiffAugment), Zhao et al. 2020, "Differentiable Augmentation for
Data-Efficient GAN Training" (reference: mit-han-lab/data-efficient-gans, DiffAugment_pytorch.py).

The same random transform T is applied to reals and fakes, D sees D(T(x)), and gradients flow
through T into G. Every op draws its parameters per sample, runs batched on the input's device
and is differentiable w.r.t. the input. Images are NCHW in [-1, 1]; non-square images work.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

TRANSLATION_RATIO = 0.125  # largest shift, as a fraction of the side
CUTOUT_RATIO = 0.5  # side of the cut-out square, as a fraction of the side


def _rand(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    """U[0, 1) draws in `like`'s dtype on `like`'s device (drawn on the generator's device)."""
    if generator is None:
        return torch.rand(shape, device=like.device).to(like.dtype)
    return torch.rand(shape, generator=generator, device=generator.device).to(like.device, like.dtype)


def _randint(low: int, high: int, shape: tuple[int, ...], device: torch.device,
             generator: torch.Generator | None) -> Tensor:
    """Integers in [low, high) on `device`."""
    if generator is None:
        return torch.randint(low, high, shape, device=device)
    return torch.randint(low, high, shape, generator=generator, device=generator.device).to(device)


def brightness(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """x + (u - 0.5), u ~ U[0, 1) per sample."""
    return x + (_rand((x.shape[0], 1, 1, 1), x, generator) - 0.5)


def saturation(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """(x - mean over channels) * 2u + that mean, u ~ U[0, 1) per sample."""
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_rand((x.shape[0], 1, 1, 1), x, generator) * 2) + mean


def contrast(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """(x - mean over C, H, W) * (u + 0.5) + that mean, u ~ U[0, 1) per sample."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand((x.shape[0], 1, 1, 1), x, generator) + 0.5) + mean


def max_shift(size: int) -> int:
    """Largest translation (pixels) along a side of `size` pixels: int(size / 8 + 0.5)."""
    return int(size * TRANSLATION_RATIO + 0.5)


def translation(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Shift each sample by integers (dy, dx), each uniform in [-s, s] for its axis; zero fill.

    Output pixel (i, j) takes input pixel (i - dy, j - dx), or 0 where that lies outside.
    """
    n, c, h, w = x.shape
    sy, sx = max_shift(h), max_shift(w)
    dy = _randint(-sy, sy + 1, (n, 1), x.device, generator)
    dx = _randint(-sx, sx + 1, (n, 1), x.device, generator)
    # Zero-pad by the largest shift, then gather each sample's window: rows, then columns.
    padded = F.pad(x, (sx, sx, sy, sy))
    rows = torch.arange(h, device=x.device) + sy - dy  # (n, h), indices into the padded rows
    cols = torch.arange(w, device=x.device) + sx - dx  # (n, w)
    out = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * sx))
    return out.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def cutout_side(size: int) -> int:
    """Side (pixels) of the cut-out square along a side of `size` pixels: int(size / 2 + 0.5)."""
    return int(size * CUTOUT_RATIO + 0.5)


def cutout(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Zero one rectangle of cutout_side(H) x cutout_side(W) per sample at a random centre,
    clipped at the borders (so a rectangle at the edge may be smaller)."""
    n, _, h, w = x.shape
    ch, cw = cutout_side(h), cutout_side(w)
    # Centre in [0, size] for even sides, [0, size - 1] for odd ones, as the reference draws it.
    top = _randint(0, h + 1 - ch % 2, (n, 1), x.device, generator) - ch // 2
    left = _randint(0, w + 1 - cw % 2, (n, 1), x.device, generator) - cw // 2
    ys = torch.arange(h, device=x.device)
    xs = torch.arange(w, device=x.device)
    in_rows = (ys >= top) & (ys < top + ch)  # (n, h)
    in_cols = (xs >= left) & (xs < left + cw)  # (n, w)
    keep = ~(in_rows[:, :, None] & in_cols[:, None, :])
    return x * keep[:, None].to(x.dtype)


OPS: dict[str, tuple[Callable[[Tensor, torch.Generator | None], Tensor], ...]] = {
    "color": (brightness, saturation, contrast),
    "translation": (translation,),
    "cutout": (cutout,),
}


def parse_policy(policy: str) -> list[str]:
    """Split a comma-separated policy into op names; raise ValueError naming an unknown one."""
    names = [name.strip() for name in policy.split(",") if name.strip()]
    for name in names:
        if name not in OPS:
            raise ValueError(f"unknown DiffAugment op {name!r} in policy {policy!r}; known: {', '.join(OPS)}")
    return names


def diff_augment(x: Tensor, policy: str, generator: torch.Generator | None = None) -> Tensor:
    """Apply the DiffAugment `policy` (e.g. "color,translation,cutout", ops in the given order)
    to a batch `x` (N, C, H, W) in [-1, 1]; returns a new tensor of the same shape and dtype.

    `generator` makes the draws reproducible (it may live on another device than `x`).
    An empty policy returns `x` itself.
    """
    if x.ndim != 4:
        raise ValueError(f"diff_augment expects an NCHW batch, got shape {tuple(x.shape)}")
    for name in parse_policy(policy):
        for op in OPS[name]:
            x = op(x, generator)
    return x
