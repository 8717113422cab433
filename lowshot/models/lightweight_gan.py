"""Lightweight GAN / FastGAN networks: a generator with skip-layer excitation and a
discriminator that also reconstructs real images from its own features.

Follows Liu et al. 2021, "Towards Faster and Stabilized GAN Training for High-fidelity Few-shot
Image Synthesis" (odegeasslbc/FastGAN-pytorch `models.py`), with lucidrains/lightweight-gan as a
second reading. Kept from FastGAN: GLU up blocks (one or two convs, alternating), batch norm,
spectral norm on every conv, skip-layer excitation in G and D, the residual "DownBlockComp"
with an average-pool shortcut, the 5x5 logit patch, the two decoders. Changed:
- no noise injection in G, so G is a deterministic function of z (as lucidrains);
- channel widths are given per feature-map size, so 32..256 px share one design;
- no second 128 px discriminator branch (FastGAN's `down_from_small`).
Networks only: the hinge loss and the reconstruction loss are computed by the training loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from lowshot.models.config import DictConfig
from lowshot.models.cyclegan import init_weights

RESOLUTIONS = (32, 64, 128, 256)
# FastGAN's width multipliers, keyed by feature-map size.
_G_MULT = {4: 16, 8: 8, 16: 4, 32: 2, 64: 2, 128: 1, 256: 0.5}
_D_MULT = {8: 8, 16: 4, 32: 2, 64: 1, 128: 0.5, 256: 0.25}
_DEC_MULT = {16: 2, 32: 1, 64: 1, 128: 0.5}
_TWO_CONV = (8, 32, 128)  # sizes where FastGAN's generator uses its two-conv UpBlockComp
RECON_MAX = 128  # decoders reconstruct at most 128 px, as FastGAN


@dataclass
class LightweightGANConfig(DictConfig):
    """Architecture of the lightweight GAN. FastGAN uses ngf=ndf=64 and latent 256; the default
    widths here are halved (about a third of the parameters) to keep CPU runs tolerable."""

    resolution: int = 256  # output side in pixels: 32, 64, 128 or 256
    latent_dim: int = 256  # size of z
    ngf: int = 32  # generator base width: 16*ngf channels at 4x4, ngf at 128x128
    ndf: int = 32  # discriminator base width: 8*ndf channels at 8x8, ndf at 64x64
    spectral_norm: bool = True  # spectral norm on every conv (FastGAN)

    def __post_init__(self) -> None:
        if self.resolution not in RESOLUTIONS:
            raise ValueError(
                f"LightweightGANConfig.resolution must be one of {RESOLUTIONS}, got {self.resolution!r}"
            )
        for name in ("latent_dim", "ngf", "ndf"):
            value = getattr(self, name)
            least = 1 if name == "latent_dim" else 8
            if not isinstance(value, int) or value < least:
                raise ValueError(f"LightweightGANConfig.{name} must be an integer >= {least}, got {value!r}")

    @classmethod
    def tiny(cls, resolution: int = 32) -> LightweightGANConfig:
        """Narrow networks for tests."""
        return cls(resolution=resolution, latent_dim=16, ngf=8, ndf=8)


def _width(mult: dict[int, float], base: int, size: int) -> int:
    return max(int(mult[size] * base), 2)


def _conv(c_in: int, c_out: int, k: int, stride: int = 1, padding: int = 0) -> nn.Conv2d:
    # No biases, as FastGAN: most convs feed a batch norm, whose shift makes a bias redundant.
    return nn.Conv2d(c_in, c_out, k, stride, padding, bias=False)


def _finish(module: nn.Module, use_spectral_norm: bool) -> None:
    """N(0, 0.02) init, then spectral norm (wrapping after init so its power iteration starts
    from the final weights)."""
    init_weights(module)
    if use_spectral_norm:
        for m in list(module.modules()):
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                spectral_norm(m)


def _up_block(c_in: int, c_out: int, convs: int = 1) -> nn.Sequential:
    """Nearest 2x upsample, then `convs` x (3x3 conv to 2*c_out, batch norm, GLU)."""
    layers: list[nn.Module] = [nn.Upsample(scale_factor=2, mode="nearest")]
    for i in range(convs):
        c = c_in if i == 0 else c_out
        layers += [_conv(c, 2 * c_out, 3, padding=1), nn.BatchNorm2d(2 * c_out), nn.GLU(dim=1)]
    return nn.Sequential(*layers)


class SkipExcitation(nn.Module):
    """Skip-layer excitation: a low-resolution map, pooled to 4x4, yields one sigmoid gate per
    channel of a high-resolution map: high * sigmoid(conv1(swish(conv4(pool4(low)))))."""

    def __init__(self, c_low: int, c_high: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(4),
            _conv(c_low, c_high, 4),
            nn.SiLU(),
            _conv(c_high, c_high, 1),
            nn.Sigmoid(),
        )

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        return high * self.gate(low)


def generator_sle_pairs(resolution: int) -> dict[int, int]:
    """{target size: source size} of the generator's excitations. FastGAN gates each map of
    64 px and up from the map 16x smaller (4->64, 8->128, 16->256); at 32 px, where no such
    pair exists, the 4x4 map gates the 32x32 one."""
    if resolution < 64:
        return {resolution: 4}
    return {t: t // 16 for t in (64, 128, 256) if t <= resolution}


def discriminator_sle_pairs(resolution: int) -> dict[int, int]:
    """{target size: source size} of the discriminator's excitations: FastGAN's 256->32,
    128->16 and 64->8 (the map 8x larger gates the smaller), those that exist at `resolution`
    (none at 32 px)."""
    return {t: 8 * t for t in (32, 16, 8) if 8 * t <= resolution}


class Generator(nn.Module):
    """z (N, latent_dim) -> images (N, 3, R, R) in [-1, 1].

    4x4 from a transposed conv on z, then one GLU up block per octave (two convs at 8, 32 and
    128 px, as FastGAN), skip-layer excitation per `generator_sle_pairs`, a 3x3 conv to RGB and
    tanh. Batch norm: outputs in train mode depend on the batch; use eval mode for sampling.
    """

    def __init__(self, cfg: LightweightGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        width = partial(_width, _G_MULT, cfg.ngf)
        self.sizes = [2**i for i in range(2, cfg.resolution.bit_length())]  # 4, 8, ..., R
        self.init = nn.Sequential(
            nn.ConvTranspose2d(cfg.latent_dim, 2 * width(4), 4, bias=False),
            nn.BatchNorm2d(2 * width(4)),
            nn.GLU(dim=1),
        )
        self.ups = nn.ModuleDict(
            {str(s): _up_block(width(s // 2), width(s), 2 if s in _TWO_CONV else 1) for s in self.sizes[1:]}
        )
        self.sle_pairs = generator_sle_pairs(cfg.resolution)
        self.sle = nn.ModuleDict({str(t): SkipExcitation(width(s), width(t)) for t, s in self.sle_pairs.items()})
        self.to_rgb = _conv(width(cfg.resolution), 3, 3, padding=1)
        _finish(self, cfg.spectral_norm)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.cfg.latent_dim:
            raise ValueError(f"Generator expects z of shape (N, {self.cfg.latent_dim}), got {tuple(z.shape)}")
        sources = set(self.sle_pairs.values())
        x = self.init(z[:, :, None, None])
        kept = {4: x}
        for s in self.sizes[1:]:
            x = self.ups[str(s)](x)
            if s in self.sle_pairs:
                x = self.sle[str(s)](kept[self.sle_pairs[s]], x)
            if s in sources:
                kept[s] = x
        return torch.tanh(self.to_rgb(x))


class _DownBlock(nn.Module):
    """FastGAN's DownBlockComp: mean of (4x4 s2 conv, BN, LReLU, 3x3 conv, BN, LReLU) and an
    (avg-pool, 1x1 conv, BN, LReLU) shortcut."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            _conv(c_in, c_out, 4, 2, 1), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2),
            _conv(c_out, c_out, 3, 1, 1), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2),
        )  # fmt: skip
        self.skip = nn.Sequential(
            nn.AvgPool2d(2), _conv(c_in, c_out, 1), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.main(x) + self.skip(x)) / 2


class _Decoder(nn.Module):
    """FastGAN's SimpleDecoder: 8x8 features -> GLU up blocks -> 3x3 conv -> tanh at `out_size`."""

    def __init__(self, c_in: int, out_size: int, ndf: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(8)]
        size, ch = 8, c_in
        while size < out_size:
            size *= 2
            out = _width(_DEC_MULT, ndf, size)
            layers.append(_up_block(ch, out))
            ch = out
        layers += [_conv(ch, 3, 3, padding=1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    return x if x.shape[-1] == size else F.interpolate(x, size=(size, size), mode="area")


class Discriminator(nn.Module):
    """images (N, 3, R, R) -> logits (N, 1, 5, 5): a 5x5 patch of logits per image, each with a
    receptive field covering the whole image (the loop averages them in the hinge loss).

    A 3x3 stem at full resolution, residual down blocks to 8x8 with skip-layer excitation per
    `discriminator_sle_pairs`, then 1x1 conv, BN, LReLU and a valid 4x4 conv.

    With `reconstruct=True` it also returns a dict for FastGAN's self-supervised loss (to be
    applied to real images only):
      whole, whole_target: decoder of the 8x8 features; the input resized (area) to the
          decoder's side min(128, R).
      part, part_target: decoder of one quarter of the 16x16 features; the matching quarter of
          the input resized to min(128, R/2).
      quarter: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right, drawn from `generator`
          (one quarter for the whole batch, as the references).
    Targets are detached. FastGAN compares with LPIPS, which needs pretrained VGG weights that
    are not available offline; the loop uses a pixel L1/MSE instead.
    """

    def __init__(self, cfg: LightweightGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        width = partial(_width, _D_MULT, cfg.ndf)
        res = cfg.resolution
        self.stem = nn.Sequential(_conv(3, width(res), 3, 1, 1), nn.LeakyReLU(0.2))
        self.sizes = [res >> i for i in range(1, res.bit_length() - 3)]  # R/2, ..., 8
        self.downs = nn.ModuleDict({str(s): _DownBlock(width(2 * s), width(s)) for s in self.sizes})
        self.sle_pairs = discriminator_sle_pairs(res)
        self.sle = nn.ModuleDict({str(t): SkipExcitation(width(s), width(t)) for t, s in self.sle_pairs.items()})
        self.head = nn.Sequential(
            _conv(width(8), width(8), 1), nn.BatchNorm2d(width(8)), nn.LeakyReLU(0.2), _conv(width(8), 1, 4)
        )
        self.decoder_whole = _Decoder(width(8), min(RECON_MAX, res), cfg.ndf)
        self.decoder_part = _Decoder(width(16), min(RECON_MAX, res // 2), cfg.ndf)
        _finish(self, cfg.spectral_norm)

    def forward(
        self, x: torch.Tensor, *, reconstruct: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, Any]]:
        res = self.cfg.resolution
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, res, res):
            raise ValueError(
                f"Discriminator expects images of shape (N, 3, {res}, {res}), got {tuple(x.shape)}"
            )
        feats = {res: self.stem(x)}
        h = feats[res]
        for s in self.sizes:
            h = self.downs[str(s)](h)
            if s in self.sle_pairs:
                h = self.sle[str(s)](feats[self.sle_pairs[s]], h)
            feats[s] = h
        logits = self.head(h)
        if not reconstruct:
            return logits

        quarter = int(torch.randint(4, (1,), generator=generator))
        row, col = divmod(quarter, 2)
        part_feat = feats[16][:, :, row * 8 : (row + 1) * 8, col * 8 : (col + 1) * 8]
        half = res // 2
        crop = x.detach()[:, :, row * half : (row + 1) * half, col * half : (col + 1) * half]
        whole = self.decoder_whole(feats[8])
        part = self.decoder_part(part_feat)
        return logits, {
            "whole": whole,
            "whole_target": _resize(x.detach(), whole.shape[-1]),
            "part": part,
            "part_target": _resize(crop, part.shape[-1]),
            "quarter": quarter,
        }
