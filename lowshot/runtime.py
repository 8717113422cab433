"""Device choice and seeding, shared by every stage that runs a network."""

from __future__ import annotations

import random

import numpy as np
import torch


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


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU torch.Generator seeded the same."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
