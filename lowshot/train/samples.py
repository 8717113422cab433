"""Drawing images from a trained generator: per-seed latents, truncation, interpolation strips.

Each image has its own seed, so image `i` of a run can be redrawn alone (as stylegan2-ada's
`generate.py --seeds`). Truncation: stylegan2 moves w toward the tracked mean w (psi 1 = none);
the other architectures (lightweight, dcgan, wgan-gp, resnet-wgan-gp) have no mapping network, so
psi scales z toward the mean of its N(0, I) prior.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from lowshot.images.grid import to_pil_images
from lowshot.precision import FP32, Precision


def latent_dim(G: nn.Module) -> int:
    """Size of z of a generator from `checkpoint.load_generator`."""
    config = G.config_dict
    return int(config["latent_dim"] if G.arch == "lightweight" else config["z_dim"])


def seed_latents(seeds: Sequence[int], dim: int) -> torch.Tensor:
    """(len(seeds), dim) standard normal latents, row i drawn from seed `seeds[i]` alone."""
    return torch.stack([torch.randn(dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds]) \
        if len(seeds) else torch.empty(0, dim)


def _styles(G: nn.Module, z: torch.Tensor, psi: float) -> torch.Tensor:
    """The generator's input for z: stylegan2's (truncated) ws, the other architectures' scaled z."""
    return G.mapping(z, psi=psi) if G.arch == "stylegan2" else z * psi


def _render(G: nn.Module, styles: torch.Tensor) -> torch.Tensor:
    return G.synthesis(styles, noise_mode="const") if G.arch == "stylegan2" else G(styles)


@torch.inference_mode()
def synthesize(G: nn.Module, z: torch.Tensor, *, psi: float = 1.0, batch_size: int = 32,
               precision: Precision = FP32) -> Iterator[torch.Tensor]:
    """Images in [-1, 1] (float32) for latents `z`, `batch_size` at a time, on the generator's device,
    under `precision`'s autocast."""
    device = next(G.parameters()).device
    for start in range(0, len(z), batch_size):
        with precision.autocast(device):
            images = _render(G, _styles(G, z[start:start + batch_size].to(device), psi))
        yield images.float().cpu()


@torch.inference_mode()
def interpolate(G: nn.Module, z0: torch.Tensor, z1: torch.Tensor, steps: int, *, psi: float = 1.0,
                precision: Precision = FP32) -> torch.Tensor:
    """`steps` images on the way from z0 to z1: linear in w (stylegan2), spherical in z (the others)."""
    if steps < 2:
        raise ValueError(f"an interpolation needs at least 2 steps, got {steps}")
    device = next(G.parameters()).device
    t = torch.linspace(0, 1, steps, device=device).view(-1, 1)
    z0, z1 = z0.to(device).view(1, -1), z1.to(device).view(1, -1)
    if G.arch == "stylegan2":
        w0, w1 = _styles(G, z0, psi), _styles(G, z1, psi)
        styles = w0 + (w1 - w0) * t.view(-1, 1, 1)
    else:
        omega = torch.arccos((z0 / z0.norm() * z1 / z1.norm()).sum().clamp(-1, 1))
        if omega.abs() < 1e-6:
            z = z0 + (z1 - z0) * t
        else:
            z = (torch.sin((1 - t) * omega) * z0 + torch.sin(t * omega) * z1) / torch.sin(omega)
        styles = _styles(G, z, psi)
    with precision.autocast(device):
        return _render(G, styles).float().cpu()


def write_images(images: torch.Tensor, names: Sequence[str], folder: str | os.PathLike) -> list[Path]:
    """Save a (N, 3, H, W) batch in [-1, 1] as PNGs `folder/<name>` (the folder must exist)."""
    paths = []
    for im, name in zip(to_pil_images(images), names):
        paths.append(Path(folder) / name)
        im.save(paths[-1], compress_level=1)
    return paths
