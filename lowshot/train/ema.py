"""Exponential moving average of the generator's weights, with the half-life measured in images.

Follows NVlabs/stylegan2-ada-pytorch `training/training_loop.py` (and edm's): the half-life is
given in thousands of images, so the decay per step depends on the batch size; during a ramp-up
the half-life is capped at a fraction of the images seen so far, so early, random weights are
forgotten quickly.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_beta(batch: int, half_life_kimg: float, cur_nimg: int, rampup: float | None = None) -> float:
    """Decay per step: 0.5 ** (batch / half_life_images), half_life_images = half_life_kimg * 1000,
    capped at `cur_nimg * rampup` when `rampup` is given. A zero half-life gives 0 (a plain copy)."""
    half_life = half_life_kimg * 1000.0
    if rampup is not None:
        half_life = min(half_life, cur_nimg * rampup)
    if half_life <= 0:
        return 0.0
    return 0.5 ** (batch / half_life)


def make_ema(model: nn.Module) -> nn.Module:
    """A frozen deep copy of `model` in eval mode, to be updated by `update_ema`."""
    ema = copy.deepcopy(model).eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """ema <- model + beta * (ema - model) for parameters; buffers (batch-norm statistics, the
    tracked mean w, spectral-norm vectors) are copied as they are."""
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.copy_(p.detach().lerp(p_ema, beta))
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)
