"""CycleGAN networks: the ResNet generator and the 70x70 PatchGAN discriminator.

Follows Zhu et al. 2017, "Unpaired Image-to-Image Translation using Cycle-Consistent
Adversarial Networks", as built in junyanz/pytorch-CycleGAN-and-pix2pix `models/networks.py`
(`ResnetGenerator`, `NLayerDiscriminator`, `init_weights` with init_type='normal'). Dropout in
the residual blocks (off by default there) and the U-Net generator are left out.

Four additions, all options: `upsample="resize"` replaces each transposed convolution by a bilinear
2x resize and a 3x3 convolution (Odena et al. 2016, "Deconvolution and Checkerboard Artifacts"; CUT's
anti-aliased generator blurs its upsampling for the same reason); `residual=True` makes the generator
predict a change to its input, tanh(atanh(x) + h(x)) with the last convolution initialised to zero, so that
an untrained generator is the identity and training starts from the photo instead of from noise (a short
budget then cannot leave the photo's structure behind); `antialias=True` downsamples as CUT's reference does
by default (its `no_antialias` off; Zhang 2019, "Making Convolutional Networks Shift-Invariant Again"): each
stride-2 convolution of the generator's encoder and of the PatchGAN becomes a stride-1 convolution followed by
a [1, 2, 1] blur and 2x subsampling, so neither network aliases high frequencies into the coarse features
(a discriminator that aliases can be fooled by periodic high-frequency patterns); and the generator exposes its
encoder features (`encoder_taps`, `encode`) for CUT's PatchNCE loss (taesungp/contrastive-unpaired-
translation `networks.py` ResnetGenerator.forward with `layers`, `encode_only`).
Networks only: losses live in `lowshot.train.losses`, the history buffer in
`lowshot.train.image_pool`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from lowshot.models.config import DictConfig

NORMS = ("instance", "batch", "none")
UPSAMPLES = ("transpose", "resize")
INITS = ("normal", "xavier")


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


def init_weights(module: nn.Module, std: float = 0.02, kind: str = "normal") -> nn.Module:
    """Init in place: conv/linear weights ~ N(0, std) (`normal`, DCGAN style) or Xavier-normal with
    gain `std` (`xavier`, CUT's choice), biases 0; affine norm weights ~ N(1, std), biases 0.
    Handles spectral-norm parametrised weights. Returns `module`."""
    if kind not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {kind!r}")
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            weight = (
                m.parametrizations.weight.original if parametrize.is_parametrized(m, "weight") else m.weight
            )
            if kind == "xavier":
                nn.init.xavier_normal_(weight, gain=std)
            else:
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
class CycleGANConfig(DictConfig):
    """Widths and depths of the CycleGAN networks (defaults: the paper's 256 px setting)."""

    ngf: int = 64  # generator base width (channels of the first 7x7 conv)
    ndf: int = 64  # discriminator base width
    g_blocks: int = 9  # residual blocks: 9 for 256 px, 6 for 128 px in the paper
    d_layers: int = 3  # stride-2 layers of the PatchGAN; 3 gives the 70x70 receptive field
    norm: str = "instance"  # instance | batch | none
    upsample: str = "transpose"  # transpose (the paper) | resize (bilinear 2x + 3x3 conv: no checkerboard)
    init: str = "normal"  # normal (CycleGAN) | xavier (CUT); both with gain / std 0.02
    residual: bool = False  # generators output tanh(atanh(input) + h): the identity at initialisation
    antialias: bool = False  # stride-2 convs become stride-1 convs + blur-pool (CUT's reference default)

    def __post_init__(self) -> None:
        for name in ("ngf", "ndf", "g_blocks", "d_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "g_blocks" else 1):
                raise ValueError(f"CycleGANConfig.{name} must be a positive integer, got {value!r}")
        for name in ("residual", "antialias"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"CycleGANConfig.{name} must be true or false, got {getattr(self, name)!r}")
        for name, allowed in (("norm", NORMS), ("upsample", UPSAMPLES), ("init", INITS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"CycleGANConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")

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


class BlurPool(nn.Module):
    """Blur with the [1, 2, 1] x [1, 2, 1] / 16 filter (reflect padding), then keep every second pixel:
    2x downsampling without aliasing (Zhang 2019; CUT's `Downsample` with its default filter size 3)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0])
        kernel = (taps[:, None] * taps[None, :]) / 16
        self.register_buffer("kernel", kernel.expand(channels, 1, 3, 3).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
        return nn.functional.conv2d(x, self.kernel.to(x.dtype), stride=2, groups=x.shape[1])


def _upsample(ch: int, out: int, how: str, bias: bool) -> list[nn.Module]:
    """Double the side: a transposed 3x3 conv (the paper), or a bilinear resize then a 3x3 conv."""
    if how == "transpose":
        return [nn.ConvTranspose2d(ch, out, 3, stride=2, padding=1, output_padding=1, bias=bias)]
    return [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(ch, out, 3, padding=1, padding_mode="reflect", bias=bias)]


class ResnetGenerator(nn.Module):
    """c7s1-ngf, d(2 ngf), d(4 ngf), n x R(4 ngf), u(2 ngf), u(ngf), c7s1-out_ch, tanh.

    Maps (N, in_ch, H, W) to (N, out_ch, H, W) in [-1, 1]. H and W must be multiples of 4
    (two stride-2 convs down, two upsamplings); otherwise a ValueError says so. `upsample` picks
    transposed convs or resize-convs. Weights are initialised with `init_weights(kind=init)`. With
    `residual`, the output is tanh(atanh(x) + h(x)) (x clamped inside (-1, 1)) where h is the network
    without its tanh and its last conv starts at zero: the identity until training moves it.

    `encoder_taps` are the positions in `self.model` whose outputs CUT's PatchNCE compares, the
    same places as the reference's default `--nce_layers 0,4,8,12,16`: the (padded) input, the
    first and second downsampling convs, and residual blocks 1 and 5 (the last block when there
    are fewer). `encode(x)` returns those features and runs no further than the last of them.
    """

    def __init__(
        self, in_ch: int = 3, out_ch: int = 3, ngf: int = 64, n_blocks: int = 9, norm: str = "instance",
        upsample: str = "transpose", init: str = "normal", residual: bool = False, antialias: bool = False,
    ) -> None:
        super().__init__()
        if upsample not in UPSAMPLES:
            raise ValueError(f"upsample must be one of {UPSAMPLES}, got {upsample!r}")
        if residual and in_ch != out_ch:
            raise ValueError(f"a residual generator needs in_ch == out_ch, got {in_ch} and {out_ch}")
        bias = _conv_bias(norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_ch, ngf, 7, bias=bias),
            _norm_layer(norm, ngf),
            nn.ReLU(inplace=True),
        ]
        taps = [0]
        ch = ngf
        for _ in range(2):
            taps.append(len(layers))
            layers += [  # antialias: the conv at stride 1, the blur-pool after the activation, as the reference
                nn.Conv2d(ch, ch * 2, 3, stride=1 if antialias else 2, padding=1, bias=bias),
                _norm_layer(norm, ch * 2),
                nn.ReLU(),  # not in place: with norm "none" it would overwrite the tapped conv output
                *([BlurPool(ch * 2)] if antialias else []),
            ]
            ch *= 2
        first_block = len(layers)
        layers += [_ResnetBlock(ch, norm) for _ in range(n_blocks)]
        if n_blocks:
            taps += sorted({first_block, first_block + min(4, n_blocks - 1)})
        for _ in range(2):
            layers += [*_upsample(ch, ch // 2, upsample, bias), _norm_layer(norm, ch // 2), nn.ReLU(inplace=True)]
            ch //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ch, out_ch, 7), nn.Identity() if residual else nn.Tanh()]
        self.model = nn.Sequential(*layers)
        self.encoder_taps: tuple[int, ...] = tuple(taps)
        self.residual = residual
        init_weights(self, kind=init)
        if residual:
            nn.init.zeros_(layers[-2].weight)
            nn.init.zeros_(layers[-2].bias)

    @classmethod
    def from_config(cls, cfg: CycleGANConfig) -> ResnetGenerator:
        return cls(ngf=cfg.ngf, n_blocks=cfg.g_blocks, norm=cfg.norm, upsample=cfg.upsample, init=cfg.init,
                   residual=cfg.residual, antialias=cfg.antialias)

    def _output(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        if not self.residual:
            return h
        # 0.999: atanh stays finite (|atanh| <= 3.8) on pure black or white pixels
        return torch.tanh(torch.atanh(x.float().clamp(-0.999, 0.999)) + h.float())

    @staticmethod
    def _check(x: torch.Tensor) -> None:
        h, w = x.shape[-2:]
        if h % 4 or w % 4:
            raise ValueError(f"ResnetGenerator needs height and width divisible by 4, got {h}x{w}")

    def forward(self, x: torch.Tensor, *, taps: bool = False) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """The translation; with `taps=True`, (translation, the encoder features `encode` returns)."""
        self._check(x)
        if not taps:
            return self._output(x, self.model(x))
        feats, h = [], x
        for i, layer in enumerate(self.model):
            h = layer(h)
            if i in self.encoder_taps:
                feats.append(h)
        return self._output(x, h), feats

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The features at `encoder_taps`, (N, C_i, H_i, W_i) each; stops after the last tap."""
        self._check(x)
        feats, last = [], self.encoder_taps[-1]
        for i, layer in enumerate(self.model[:last + 1]):
            x = layer(x)
            if i in self.encoder_taps:
                feats.append(x)
        return feats

    def tap_channels(self) -> list[int]:
        """Channels of each encoder feature (from a dry run on a tiny input)."""
        with torch.no_grad():
            p = next(self.parameters())
            return [f.shape[1] for f in self.encode(torch.zeros(1, 3, 8, 8, device=p.device, dtype=p.dtype))]


class PatchDiscriminator(nn.Module):
    """PatchGAN: (N, in_ch, H, W) -> (N, 1, H', W') logits, one per overlapping patch.

    4x4 convs: `n_layers` with stride 2 (the first without norm), then two with stride 1,
    LeakyReLU 0.2; widths ndf * min(2^i, 8). With n_layers=3 each logit sees a 70x70 patch
    (`receptive_field`); a 256 px input gives 30x30 logits. With `antialias`, each stride-2 conv runs
    at stride 1 and a `BlurPool` follows its activation (CUT's default): the same output size, a
    slightly wider receptive field, about twice the FLOPs.
    """

    def __init__(self, in_ch: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "instance",
                 antialias: bool = False) -> None:
        super().__init__()
        bias = _conv_bias(norm)
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, ndf, 4, stride=1 if antialias else 2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            *([BlurPool(ndf)] if antialias else []),
        ]
        ch = ndf
        for i in range(1, n_layers + 1):
            out = ndf * min(2**i, 8)
            down = i < n_layers
            layers += [
                nn.Conv2d(ch, out, 4, stride=2 if down and not antialias else 1, padding=1, bias=bias),
                _norm_layer(norm, out),
                nn.LeakyReLU(0.2, inplace=True),
                *([BlurPool(out)] if down and antialias else []),
            ]
            ch = out
        layers.append(nn.Conv2d(ch, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)
        init_weights(self)

    @classmethod
    def from_config(cls, cfg: CycleGANConfig) -> PatchDiscriminator:
        return cls(ndf=cfg.ndf, n_layers=cfg.d_layers, norm=cfg.norm, antialias=cfg.antialias)

    @property
    def receptive_field(self) -> int:
        """Side in input pixels of the window one logit sees, from the conv and blur kernels and strides."""
        field, jump = 1, 1
        for m in self.model:
            if isinstance(m, nn.Conv2d):
                field += (m.kernel_size[0] - 1) * jump
                jump *= m.stride[0]
            elif isinstance(m, BlurPool):
                field += 2 * jump
                jump *= 2
        return field

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
