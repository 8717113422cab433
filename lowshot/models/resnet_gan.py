"""The residual generator and critic of Gulrajani et al. 2017, "Improved Training of Wasserstein
GANs", for 64x64 images (igul222/improved_wgan_training `gan_64x64.py`, `GoodGenerator` /
`GoodDiscriminator`, with tflib's layers).

G: z -> linear -> 4x4 map of 8 * dim channels -> one residual up block per octave -> batch norm,
ReLU, 3x3 convolution, tanh. A block is norm, ReLU, (2x nearest upsample,) 3x3 conv, norm, ReLU,
3x3 conv, plus a shortcut of (upsample,) 1x1 conv. The critic mirrors it: 3x3 conv, one residual
down block per octave (norm, ReLU, 3x3 conv, norm, ReLU, 3x3 conv, 2x2 mean pool; shortcut:
mean pool, 1x1 conv) to 4x4, a linear layer to one value. The critic's norm is the reference's
layer norm over (C, H, W) with a per-channel scale and shift (`GroupNorm(1, C)`): no batch norm,
as the per-sample gradient penalty requires; G keeps batch norm.

Initialisation as tflib: uniform weights of std sqrt(4 / (fan_in + fan_out)) ("he") in the
blocks and the output conv, sqrt(2 / (fan_in + fan_out)) (Glorot) in the shortcuts, the critic's
input conv and the linear layers; zero biases. Widths are given per feature-map size, so 32 and
128 px reuse the 64 px design (dim at R, doubling per octave down to at most 8 * dim); the
reference's 64 px networks are `ResNetGANConfig(resolution=64, dim=64, z_dim=128)`.
Networks only: the Wasserstein loss and its gradient penalty are computed by the training loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lowshot.models.config import DictConfig

RESOLUTIONS = (32, 64, 128)


@dataclass
class ResNetGANConfig(DictConfig):
    """Shape of the residual generator / critic pair (the reference's 64 px widths by default)."""

    resolution: int = 64  # output / input side in pixels: 32, 64 or 128
    z_dim: int = 128  # size of z
    dim: int = 64  # channels at full resolution; 8 * dim at the 4x4 and 8x8 maps of 64 px

    def __post_init__(self) -> None:
        if self.resolution not in RESOLUTIONS:
            raise ValueError(f"ResNetGANConfig.resolution must be one of {RESOLUTIONS}, got {self.resolution!r}")
        for name in ("z_dim", "dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ResNetGANConfig.{name} must be a positive integer, got {value!r}")

    def width(self, size: int) -> int:
        """Channels of the feature map of side `size`: dim * min(8, R / size)."""
        return self.dim * min(8, self.resolution // size)

    @classmethod
    def tiny(cls, resolution: int = 32) -> ResNetGANConfig:
        """Narrow networks for tests."""
        return cls(resolution=resolution, z_dim=16, dim=2)


def _tflib_init(module: nn.Conv2d | nn.Linear, he: bool) -> None:
    """Uniform weights of std sqrt(c / (fan_in + fan_out)), c = 4 (he) or 2 (Glorot); zero bias."""
    if isinstance(module, nn.Conv2d):
        k = module.kernel_size[0] * module.kernel_size[1]
        fan_in, fan_out = module.in_channels * k, module.out_channels * k
    else:
        fan_in, fan_out = module.in_features, module.out_features
    bound = math.sqrt(3.0) * math.sqrt((4.0 if he else 2.0) / (fan_in + fan_out))
    nn.init.uniform_(module.weight, -bound, bound)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


def _conv(c_in: int, c_out: int, k: int, *, bias: bool = True, he: bool = True) -> nn.Conv2d:
    conv = nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=bias)
    _tflib_init(conv, he)
    return conv


def _upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="nearest")  # tflib's depth_to_space of 4 copies


def _mean_pool(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 2)


class UpBlock(nn.Module):
    """Residual block doubling the resolution: BN, ReLU, up, conv3, BN, ReLU, conv3 + (up, conv1)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.BatchNorm2d(c_in), _conv(c_in, c_out, 3, bias=False)
        self.norm2, self.conv2 = nn.BatchNorm2d(c_out), _conv(c_out, c_out, 3)
        self.shortcut = _conv(c_in, c_out, 1, he=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(_upsample(F.relu(self.norm1(x))))
        h = self.conv2(F.relu(self.norm2(h)))
        return self.shortcut(_upsample(x)) + h


class DownBlock(nn.Module):
    """Residual block halving the resolution: LN, ReLU, conv3, LN, ReLU, conv3, pool + (pool, conv1)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(1, c_in), _conv(c_in, c_in, 3, bias=False)
        self.norm2, self.conv2 = nn.GroupNorm(1, c_in), _conv(c_in, c_out, 3)
        self.shortcut = _conv(c_in, c_out, 1, he=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.relu(self.norm1(x)))
        h = _mean_pool(self.conv2(F.relu(self.norm2(h))))
        return self.shortcut(_mean_pool(x)) + h


def _octaves(resolution: int) -> list[int]:
    """Feature-map sides 4, 8, ..., R."""
    return [2**i for i in range(2, resolution.bit_length())]


class Generator(nn.Module):
    """z (N, z_dim) -> images (N, 3, R, R) in [-1, 1]. Batch norm: sample in eval mode."""

    def __init__(self, cfg: ResNetGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        sizes = _octaves(cfg.resolution)
        self.input = nn.Linear(cfg.z_dim, 16 * cfg.width(4))
        _tflib_init(self.input, he=False)
        self.blocks = nn.Sequential(*[UpBlock(cfg.width(s // 2), cfg.width(s)) for s in sizes[1:]])
        self.out_norm = nn.BatchNorm2d(cfg.width(cfg.resolution))
        self.out = _conv(cfg.width(cfg.resolution), 3, 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.cfg.z_dim:
            raise ValueError(f"Generator expects z of shape (N, {self.cfg.z_dim}), got {tuple(z.shape)}")
        x = self.input(z).view(len(z), self.cfg.width(4), 4, 4)
        x = self.blocks(x)
        return torch.tanh(self.out(F.relu(self.out_norm(x))))


class Discriminator(nn.Module):
    """images (N, 3, R, R) -> critic values (N,)."""

    def __init__(self, cfg: ResNetGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        sizes = _octaves(cfg.resolution)[::-1]  # R, ..., 4
        self.input = _conv(3, cfg.width(cfg.resolution), 3, he=False)
        self.blocks = nn.Sequential(*[DownBlock(cfg.width(s), cfg.width(s // 2)) for s in sizes[:-1]])
        self.out = nn.Linear(16 * cfg.width(4), 1)
        _tflib_init(self.out, he=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.cfg.resolution
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, r, r):
            raise ValueError(f"Discriminator expects images of shape (N, 3, {r}, {r}), got {tuple(x.shape)}")
        return self.out(self.blocks(self.input(x)).flatten(1)).squeeze(1)
