"""DCGAN networks: a generator of transposed convolutions and a discriminator of strided ones.

Follows Radford et al. 2016, "Unsupervised Representation Learning with Deep Convolutional
Generative Adversarial Networks", as built in pytorch/examples `dcgan/main.py`: G is a 4x4
transposed convolution of z, then 4x4 stride-2 transposed convolutions halving the width per
octave, each followed by batch norm and ReLU, and a tanh output; D mirrors it with 4x4 stride-2
convolutions, LeakyReLU 0.2 and batch norm (none after the first), down to a 4x4 map and a valid
4x4 convolution to one logit; weights N(0, 0.02), batch-norm scales N(1, 0.02).

The same networks are the "DCGAN-shaped" WGAN-GP baseline of Gulrajani et al. 2017 (igul222/
improved_wgan_training `gan_64x64.py`, `DCGANGenerator` / `DCGANDiscriminator`) with `d_norm`
"layer": a critic must not use batch norm (the gradient penalty is per sample), so its norm is
the reference's layer norm over (C, H, W) with a per-channel scale and shift, i.e.
`GroupNorm(1, C)`. Differences from the references: widths are given per feature-map size so
32, 64 and 128 px share one design (pytorch/examples hard-codes 64 px); the critic keeps
pytorch/examples' 4x4 kernels (the WGAN-GP code uses 5x5) and its final convolution (the same
map as the WGAN-GP code's linear layer on the flattened 4x4 features).
Networks only: the losses are computed by the training loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lowshot.models.config import DictConfig
from lowshot.models.cyclegan import init_weights

RESOLUTIONS = (32, 64, 128)
D_NORMS = ("batch", "layer", "none")
LRELU_SLOPE = 0.2


@dataclass
class DCGANConfig(DictConfig):
    """Shape of a DCGAN generator / discriminator pair (the reference's 64 px widths by default)."""

    resolution: int = 64  # output / input side in pixels: 32, 64 or 128
    z_dim: int = 100  # size of z
    ngf: int = 64  # generator width at R/2 px (doubling per octave down, at most 8 * ngf at 4x4)
    ndf: int = 64  # discriminator width at R/2 px (doubling per octave down, at most 8 * ndf)
    d_norm: str = "batch"  # discriminator norm: batch (DCGAN), layer (WGAN-GP critic) or none

    def __post_init__(self) -> None:
        if self.resolution not in RESOLUTIONS:
            raise ValueError(f"DCGANConfig.resolution must be one of {RESOLUTIONS}, got {self.resolution!r}")
        for name in ("z_dim", "ngf", "ndf"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"DCGANConfig.{name} must be a positive integer, got {value!r}")
        if self.d_norm not in D_NORMS:
            raise ValueError(f"DCGANConfig.d_norm must be one of {D_NORMS}, got {self.d_norm!r}")

    def width(self, base: int, size: int) -> int:
        """Channels of the feature map of side `size`: base at R/2, doubled per octave, capped at 8 * base."""
        return base * min(8, self.resolution // (2 * size))

    @classmethod
    def tiny(cls, resolution: int = 32, d_norm: str = "batch") -> DCGANConfig:
        """Narrow networks for tests."""
        return cls(resolution=resolution, z_dim=16, ngf=4, ndf=4, d_norm=d_norm)


def _octaves(resolution: int) -> list[int]:
    """Feature-map sides 4, 8, ..., R/2."""
    return [2**i for i in range(2, resolution.bit_length() - 1)]


def _d_norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)  # mean / variance over (C, H, W), scale and shift per channel
    return nn.Identity()


class Generator(nn.Module):
    """z (N, z_dim) -> images (N, 3, R, R) in [-1, 1]. Batch norm: outputs in train mode depend on
    the batch; sample in eval mode."""

    def __init__(self, cfg: DCGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        sizes = _octaves(cfg.resolution)
        w = [cfg.width(cfg.ngf, s) for s in sizes]
        layers: list[nn.Module] = [nn.ConvTranspose2d(cfg.z_dim, w[0], 4, 1, 0, bias=False),
                                   nn.BatchNorm2d(w[0]), nn.ReLU()]
        for c_in, c_out in zip(w, w[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
        layers += [nn.ConvTranspose2d(w[-1], 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.cfg.z_dim:
            raise ValueError(f"Generator expects z of shape (N, {self.cfg.z_dim}), got {tuple(z.shape)}")
        return self.net(z[:, :, None, None])


class Discriminator(nn.Module):
    """images (N, 3, R, R) -> logits (N,) (critic values with d_norm 'layer' or 'none')."""

    def __init__(self, cfg: DCGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        sizes = _octaves(cfg.resolution)[::-1]  # R/2, ..., 4
        w = [cfg.width(cfg.ndf, s) for s in sizes]
        bias = cfg.d_norm == "none"  # a norm's shift makes a conv bias redundant
        layers: list[nn.Module] = [nn.Conv2d(3, w[0], 4, 2, 1, bias=bias), nn.LeakyReLU(LRELU_SLOPE)]
        for c_in, c_out in zip(w, w[1:]):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=bias), _d_norm(cfg.d_norm, c_out),
                       nn.LeakyReLU(LRELU_SLOPE)]
        layers.append(nn.Conv2d(w[-1], 1, 4, 1, 0, bias=bias))
        self.net = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.cfg.resolution
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, r, r):
            raise ValueError(f"Discriminator expects images of shape (N, 3, {r}, {r}), got {tuple(x.shape)}")
        return self.net(x).flatten()
