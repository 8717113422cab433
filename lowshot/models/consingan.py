"""ConSinGAN networks: a generator that grows one stage per pyramid level, and a patch discriminator.

Follows Hinz et al., "Improved Techniques for Training Single-Image GANs" (WACV 2021), read in
tohinz/ConSinGAN `ConSinGAN/models.py` (unconditional generation mode):
- every conv is unpadded (kernel 3, LeakyReLU 0.05, no normalisation); the inputs carry the margin
  the convs eat, so image borders see real context rather than zeros;
- the generator's head maps 3-channel noise at the coarsest size to features; stage 0's body
  refines them; each later stage upsamples (bicubic) the previous stage's features, adds its own
  noise map (one per feature channel, scaled by the stage's noise amplitude) and refines them
  with `layers` convs, residually; a tail conv + tanh maps the last features to RGB;
- a new stage starts as a copy of the newest one (`Generator.grow`);
- the discriminator is a fully convolutional patch critic (head, `layers` convs, 1-channel tail):
  one scalar per 11x11 patch for the default 3 layers.
Networks only: the pyramid, the noise amplitudes, the losses and the per-stage learning rates
live in `lowshot.train.singan_loop`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lowshot.models.config import DictConfig
from lowshot.models.cyclegan import init_weights

Size = tuple[int, int]  # (height, width) in pixels


@dataclass
class ConSinGANConfig(DictConfig):
    """Architecture shared by every stage; the defaults are the paper's."""

    channels: int = 64  # feature channels of every conv (and of the noise maps above stage 0)
    layers: int = 3  # convs per generator stage, and in the discriminator's body
    kernel: int = 3  # conv kernel side (odd)
    slope: float = 0.05  # LeakyReLU negative slope
    image_channels: int = 3

    def __post_init__(self) -> None:
        for name in ("channels", "layers", "image_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ConSinGANConfig.{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.kernel, int) or self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"ConSinGANConfig.kernel must be an odd integer >= 1, got {self.kernel!r}")

    @property
    def margin(self) -> int:
        """Pixels one stage's body eats at each border (its unpadded convs)."""
        return self.layers * (self.kernel // 2)

    @classmethod
    def tiny(cls) -> ConSinGANConfig:
        """Narrow networks for tests."""
        return cls(channels=8, layers=2)


def _conv_act(config: ConSinGANConfig, c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, config.kernel), nn.LeakyReLU(config.slope))


def _upsample(x: torch.Tensor, size: Size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bicubic", align_corners=True)


def noise_shapes(config: ConSinGANConfig, sizes: Sequence[Size]) -> list[tuple[int, int, int]]:
    """(channels, height, width) of each stage's noise map for a pyramid of image `sizes`: image
    channels at stage 0's size, then feature channels with the stage's margin on every side."""
    m = config.margin
    return [(config.image_channels, h, w) if i == 0 else (config.channels, h + 2 * m, w + 2 * m)
            for i, (h, w) in enumerate(sizes)]


def random_noise(config: ConSinGANConfig, sizes: Sequence[Size], count: int, *,
                 generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """One standard normal noise map per stage, each (count, C, H, W), drawn on the CPU from `generator`."""
    return [torch.randn(count, *shape, generator=generator).to(device) for shape in noise_shapes(config, sizes)]


class Generator(nn.Module):
    """`forward(noise, sizes, amps)`: noise maps (one per stage, see `noise_shapes`), the image size
    of each stage and each stage's noise amplitude -> images (N, 3, H, W) in [-1, 1] at `sizes[-1]`.

    Holds `stages` bodies (at least 1); `grow()` adds one, a copy of the newest. Drawing at other
    sizes than the training pyramid is drawing with other `sizes` (and noise maps to match).
    """

    def __init__(self, config: ConSinGANConfig, stages: int = 1) -> None:
        super().__init__()
        if stages < 1:
            raise ValueError(f"a generator needs at least one stage, got {stages}")
        self.config = config
        c = config.channels
        self.head = _conv_act(config, config.image_channels, c)
        first = nn.Sequential(*(_conv_act(config, c, c) for _ in range(config.layers)))
        self.body = nn.ModuleList([first])
        self.tail = nn.Sequential(nn.Conv2d(c, config.image_channels, config.kernel), nn.Tanh())
        init_weights(self)
        for _ in range(stages - 1):
            self.grow()

    @property
    def stages(self) -> int:
        return len(self.body)

    def grow(self) -> None:
        """Add a stage initialised as a copy of the newest one (the paper's warm start)."""
        self.body.append(copy.deepcopy(self.body[-1]))

    def forward(self, noise: Sequence[torch.Tensor], sizes: Sequence[Size],
                amps: Sequence[float | torch.Tensor]) -> torch.Tensor:
        if not len(noise) == len(sizes) == len(amps) == self.stages:
            raise ValueError(f"generator with {self.stages} stages got {len(noise)} noise maps, "
                             f"{len(sizes)} sizes and {len(amps)} amplitudes")
        pad = self.config.kernel // 2
        m = self.config.margin
        h, w = sizes[0]
        # Stage 0 sees noise (or, for the reconstruction, the coarsest image itself) scaled by amps[0].
        x = self.head(F.pad(noise[0] * amps[0], [pad] * 4))
        # As the reference: a small bicubic stretch before zero padding varies the border content.
        x = F.pad(_upsample(x, (h + 2 * pad, w + 2 * pad)), [m - pad] * 4)
        features = self.body[0](x)
        for block, z, (h, w), amp in zip(self.body[1:], noise[1:], sizes[1:], amps[1:]):
            up = _upsample(features, (h + 2 * m, w + 2 * m))
            features = block(up + amp * z) + _upsample(features, (h, w))
        return self.tail(F.pad(features, [pad] * 4))


class Discriminator(nn.Module):
    """Patch critic: images (N, 3, H, W) -> scores (N, 1, H - 2r, W - 2r), r = (layers + 2) * (kernel // 2)."""

    def __init__(self, config: ConSinGANConfig) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        self.net = nn.Sequential(
            _conv_act(config, config.image_channels, c),
            *(_conv_act(config, c, c) for _ in range(config.layers)),
            nn.Conv2d(c, 1, config.kernel),
        )
        init_weights(self)

    @property
    def receptive_field(self) -> int:
        return 2 * (self.config.layers + 2) * (self.config.kernel // 2) + 1

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)
