"""CycleGAN networks: the ResNet generator and the 70x70 PatchGAN discriminator.

Follows Zhu et al. 2017, "Unpaired Image-to-Image Translation using Cycle-Consistent
Adversarial Networks", as built in junyanz/pytorch-CycleGAN-and-pix2pix `models/networks.py`
(`ResnetGenerator`, `NLayerDiscriminator`, `init_weights` with init_type='normal'). Dropout in
the residual blocks (off by default there) and the U-Net generator are left out.
Networks only: losses live in `lowshot.train.losses`, the history buffer in
`lowshot.train.image_pool`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

NORMS = ("instance", "batch", "none")


def _norm_layer(norm: str, channels: int) -> nn.Module:
    if norm == "instance":
        # As the reference: no affine parameters and no running statistics, so train and eval agree.
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def _conv_bias(norm: str) -> bool:
    # BatchNorm's own shift makes a conv bias redundant; instance norm has no affine shift.
    return norm != "batch"


def init_weights(module: nn.Module, std: float = 0.02) -> nn.Module:
    """DCGAN-style init in place: conv/linear weights ~ N(0, std), biases 0; affine norm
    weights ~ N(1, std), biases 0. Handles spectral-norm parametrised weights. Returns `module`."""
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            weight = (
                m.parametrizations.weight.original if parametrize.is_parametrized(m, "weight") else m.weight
            )
            nn.init.normal_(weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.InstanceNorm2d, nn.GroupNorm, nn.LayerNorm)):
            if getattr(m, "weight", None) is not None:
                nn.init.normal_(m.weight, 1.0, std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
    return module


@dataclass
class CycleGANConfig:
    """Widths and depths of the CycleGAN networks (defaults: the paper's 256 px setting)."""

    ngf: int = 64  # generator base width (channels of the first 7x7 conv)
    ndf: int = 64  # discriminator base width
    g_blocks: int = 9  # residual blocks: 9 for 256 px, 6 for 128 px in the paper
    d_layers: int = 3  # stride-2 layers of the PatchGAN; 3 gives the 70x70 receptive field
    norm: str = "instance"  # instance | batch | none

    def __post_init__(self) -> None:
        for name in ("ngf", "ndf", "g_blocks", "d_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "g_blocks" else 1):
                raise ValueError(f"CycleGANConfig.{name} must be a positive integer, got {value!r}")
        if self.norm not in NORMS:
            raise ValueError(f"CycleGANConfig.norm must be one of {NORMS}, got {self.norm!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CycleGANConfig:
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown CycleGANConfig keys: {sorted(unknown)}")
        return cls(**data)

    @classmethod
    def tiny(cls) -> CycleGANConfig:
        """Narrow networks for tests; the PatchGAN keeps its 3 layers (70 px receptive field)."""
        return cls(ngf=8, ndf=8, g_blocks=2, d_layers=3)


class _ResnetBlock(nn.Module):
    """x + (pad-conv3-norm-ReLU-pad-conv3-norm)(x), reflection padding."""

    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        bias = _conv_bias(norm)
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=bias),
            _norm_layer(norm, channels),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=bias),
            _norm_layer(norm, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """c7s1-ngf, d(2 ngf), d(4 ngf), n x R(4 ngf), u(2 ngf), u(ngf), c7s1-out_ch, tanh.

    Maps (N, in_ch, H, W) to (N, out_ch, H, W) in [-1, 1]. H and W must be multiples of 4
    (two stride-2 convs down, two transposed convs up); otherwise a ValueError says so.
    Weights are initialised with `init_weights` at construction.
    """

    def __init__(
        self, in_ch: int = 3, out_ch: int = 3, ngf: int = 64, n_blocks: int = 9, norm: str = "instance"
    ) -> None:
        super().__init__()
        bias = _conv_bias(norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_ch, ngf, 7, bias=bias),
            _norm_layer(norm, ngf),
            nn.ReLU(inplace=True),
        ]
        ch = ngf
        for _ in range(2):
            layers += [
                nn.Conv2d(ch, ch * 2, 3, stride=2, padding=1, bias=bias),
                _norm_layer(norm, ch * 2),
                nn.ReLU(inplace=True),
            ]
            ch *= 2
        layers += [_ResnetBlock(ch, norm) for _ in range(n_blocks)]
        for _ in range(2):
            layers += [
                nn.ConvTranspose2d(ch, ch // 2, 3, stride=2, padding=1, output_padding=1, bias=bias),
                _norm_layer(norm, ch // 2),
                nn.ReLU(inplace=True),
            ]
            ch //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ch, out_ch, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        init_weights(self)

    @classmethod
    def from_config(cls, cfg: CycleGANConfig) -> ResnetGenerator:
        return cls(ngf=cfg.ngf, n_blocks=cfg.g_blocks, norm=cfg.norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % 4 or w % 4:
            raise ValueError(f"ResnetGenerator needs height and width divisible by 4, got {h}x{w}")
        return self.model(x)


class PatchDiscriminator(nn.Module):
    """PatchGAN: (N, in_ch, H, W) -> (N, 1, H', W') logits, one per overlapping patch.

    4x4 convs: `n_layers` with stride 2 (the first without norm), then two with stride 1,
    LeakyReLU 0.2; widths ndf * min(2^i, 8). With n_layers=3 each logit sees a 70x70 patch
    (`receptive_field`); a 256 px input gives 30x30 logits.
    """

    def __init__(self, in_ch: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "instance") -> None:
        super().__init__()
        bias = _conv_bias(norm)
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, ndf, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        ch = ndf
        for i in range(1, n_layers + 1):
            out = ndf * min(2**i, 8)
            stride = 2 if i < n_layers else 1
            layers += [
                nn.Conv2d(ch, out, 4, stride=stride, padding=1, bias=bias),
                _norm_layer(norm, out),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            ch = out
        layers.append(nn.Conv2d(ch, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)
        init_weights(self)

    @classmethod
    def from_config(cls, cfg: CycleGANConfig) -> PatchDiscriminator:
        return cls(ndf=cfg.ndf, n_layers=cfg.d_layers, norm=cfg.norm)

    @property
    def receptive_field(self) -> int:
        """Side in input pixels of the window one logit sees, from the conv kernels and strides."""
        field, jump = 1, 1
        for m in self.model:
            if isinstance(m, nn.Conv2d):
                field += (m.kernel_size[0] - 1) * jump
                jump *= m.stride[0]
        return field

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
