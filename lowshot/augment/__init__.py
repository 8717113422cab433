"""Differentiable augmentations for GAN discriminators: DiffAugment (Zhao et al. 2020) and
ADA (Karras et al. 2020), batched on the images' device."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from lowshot.augment.ada import AdaController, AdaptiveAugment, AdaStrengths
from lowshot.augment.diffaugment import diff_augment, parse_policy

__all__ = ["AUGMENT_KINDS", "AdaController", "AdaStrengths", "AdaptiveAugment", "diff_augment", "make_augment"]

AUGMENT_KINDS = ("ada", "diffaugment", "fixed", "none")


def _identity(x: Tensor) -> Tensor:
    return x


def make_augment(kind: str, *, policy: str = "color,translation,cutout", p: float = 0.0,
                 pipeline: str | Iterable[str] = "bgc",
                 generator: torch.Generator | None = None) -> Callable[[Tensor], Tensor]:
    """The augmentation a training loop applies to every image D sees.

    kind: `diffaugment` (DiffAugment with `policy`, always on; `p` unused), `ada` (an
    AdaptiveAugment over `pipeline` starting at `p`; the loop updates its `.p` from an
    AdaController), `fixed` (the same pipeline at constant `p`), `none` (identity).
    `generator` seeds the draws. Raises ValueError for an unknown kind, policy or pipeline.
    """
    if kind == "diffaugment":
        parse_policy(policy)
        return functools.partial(diff_augment, policy=policy, generator=generator)
    if kind in ("ada", "fixed"):
        return AdaptiveAugment(pipeline, p, generator=generator)
    if kind == "none":
        return _identity
    raise ValueError(f"unknown augmentation kind {kind!r}; known: {', '.join(AUGMENT_KINDS)}")
