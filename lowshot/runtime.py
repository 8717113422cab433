"""Device and precision choice and seeding, shared by every stage that runs a network."""

from __future__ import annotations

import logging
import random

import numpy as np
import torch

from lowshot.precision import Precision, resolve_precision

log = logging.getLogger(__name__)


def pick_device(spec: str = "auto") -> torch.device:
    """`auto` -> CUDA when present, else CPU; otherwise `spec` as given (`cpu`, `cuda`, `cuda:1`).

    Raises ValueError if a CUDA device is asked for and none is available.
    """
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} asked for, but no CUDA device is available (use 'auto' or 'cpu')")
    return device


def pick_precision(spec: str, device: torch.device, channels_last: str = "off", *, stage: str) -> Precision:
    """`resolve_precision` for a stage, logging the choice and its reason once."""
    precision = resolve_precision(spec, device, channels_last)
    log.info("%s on %s: %s", stage, device, precision.describe())
    return precision


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU torch.Generator seeded the same."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
