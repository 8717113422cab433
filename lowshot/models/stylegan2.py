"""StyleGAN2 generator and discriminator in plain PyTorch (no custom CUDA ops).

Follows Karras et al., "Analyzing and Improving the Image Quality of StyleGAN" (CVPR 2020), as
configured for small data by Karras et al., "Training Generative Adversarial Networks with Limited
Data" (NeurIPS 2020), after NVlabs/stylegan2-ada-pytorch `training/networks.py`: mapping network
with equalized learning rate and a tracked mean w, skip-architecture synthesis with modulated /
demodulated convolutions and per-pixel noise, residual discriminator with minibatch stddev.

Differences from the reference, all numerically equivalent or deliberate:
- Resampling uses the reference's [1,3,3,1] FIR filter, applied as a depthwise `conv2d` /
  `conv_transpose2d` (no upfirdn2d op), so the same code runs on CPU and GPU.
- The modulated convolution is either one grouped `conv2d` (weights modulated per sample) or,
  equivalently, activations scaled before and after a shared-weight convolution; as in the
  reference the grouped form is the default in eval mode, the scaled form in training mode.
- The discriminator's strided 3x3 convolution blurs first and convolves at the low resolution
  (the same linear map as convolve-then-blur, four times cheaper).
- The minibatch-stddev layer accepts batches not divisible by the group size (groups of
  near-equal size instead of the reference's reshape error); it matches the reference otherwise.
- Style mixing draws its crossover layer per sample (the reference draws one for the batch).
- The discriminator returns logits of shape (N,).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lowshot.models.config import DictConfig

MAPPING_LR_MULTIPLIER = 0.01
W_AVG_BETA = 0.995
LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)
NOISE_MODES = ("random", "const", "none")


@dataclass
class StyleGAN2Config(DictConfig):
    """Shape of a StyleGAN2 generator / discriminator pair (plain JSON-able values).

    Feature maps per resolution r are min(channel_base // r, channel_max). The defaults follow the
    reference "auto" config for small data (2 mapping layers, feature maps halved below 512 px:
    channel_base 16384) but cap channels at 256 and use 256-d latents to keep CPU runs feasible.
    """

    resolution: int = 128  # output / input image side, pixels (power of two, 32..256)
    z_dim: int = 256  # input latent size
    w_dim: int = 256  # intermediate latent (style) size
    mapping_layers: int = 2  # fully connected layers in the mapping network
    channel_base: int = 16384  # feature maps at resolution r: channel_base // r ...
    channel_max: int = 128  # ... capped at channel_max
    mbstd_group: int = 4  # minibatch-stddev group size (clipped to the batch size)
    img_channels: int = 3
    conv_clamp: float | None = 256.0  # clamp conv activations to +-this (None = off), as the reference

    def __post_init__(self) -> None:
        r = self.resolution
        if not isinstance(r, int) or r < 32 or r > 256 or r & (r - 1):
            raise ValueError(f"StyleGAN2Config.resolution must be a power of two in 32..256, got {r!r}")
        for name in ("z_dim", "w_dim", "mapping_layers", "channel_base", "channel_max", "mbstd_group", "img_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"StyleGAN2Config.{name} must be a positive integer, got {value!r}")
        if self.conv_clamp is not None and self.conv_clamp <= 0:
            raise ValueError(f"StyleGAN2Config.conv_clamp must be positive or None, got {self.conv_clamp!r}")

    def channels(self, res: int) -> int:
        """Feature maps at resolution `res` (at least 1)."""
        return max(1, min(self.channel_base // res, self.channel_max))

    @classmethod
    def tiny(cls, resolution: int = 32) -> StyleGAN2Config:
        """A few channels per layer: for tests."""
        return cls(resolution=resolution, z_dim=16, w_dim=16, mapping_layers=2,
                   channel_base=8 * resolution, channel_max=16, mbstd_group=4)


# ---------------------------------------------------------------------------------------------
# Resampling with the [1,3,3,1] FIR filter, as depthwise convolutions.

def _fir(x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """Depthwise 4x4 filter weight (C,1,4,4) for x's channels, dtype and device; sums to `gain`."""
    k = torch.tensor([1.0, 3.0, 3.0, 1.0], device=x.device)
    k = torch.outer(k, k) * (gain / 64.0)
    return k.to(x.dtype).expand(x.shape[1], 1, 4, 4)


def _blur(x: torch.Tensor, pad: int, gain: float = 1.0, stride: int = 1) -> torch.Tensor:
    return F.conv2d(x, _fir(x, gain), padding=pad, stride=stride, groups=x.shape[1])


def upsample2d(x: torch.Tensor) -> torch.Tensor:
    """2x upsampling: zero insertion followed by the FIR filter (gain 4), as upfirdn2d.upsample2d."""
    return F.conv_transpose2d(x, _fir(x, 4.0), stride=2, padding=1, groups=x.shape[1])


def downsample2d(x: torch.Tensor) -> torch.Tensor:
    """2x downsampling: FIR filter then stride 2, as upfirdn2d.downsample2d."""
    return _blur(x, pad=1, stride=2)


def _bias_act(x: torch.Tensor, bias: torch.Tensor | None, act: bool, gain: float, clamp: float | None) -> torch.Tensor:
    if bias is not None:
        x = x + bias.to(x.dtype).reshape(1, -1, *([1] * (x.ndim - 2)))
    if act:
        x = F.leaky_relu(x, LRELU_SLOPE)
        gain = gain * LRELU_GAIN
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


# ---------------------------------------------------------------------------------------------
# Equalized-learning-rate layers: weights drawn from N(0,1), scaled by He's constant at run time.

class FullyConnected(nn.Module):
    def __init__(self, in_features: int, out_features: int, act: bool = False,
                 lr_multiplier: float = 1.0, bias_init: float = 0.0) -> None:
        super().__init__()
        self.act = act
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain)
        return _bias_act(x, self.bias * self.bias_gain, self.act, 1.0, None)


class Conv2d(nn.Module):
    """Equalized-lr convolution + bias + optional lrelu; `down` halves the resolution (blurred)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, bias: bool = True,
                 act: bool = True, down: bool = False, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.act, self.down, self.conv_clamp = act, down, conv_clamp
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = self.weight * self.weight_gain
        k = w.shape[-1]
        if not self.down:
            x = F.conv2d(x, w, padding=k // 2)
        elif k == 1:
            x = F.conv2d(downsample2d(x), w)
        else:
            # conv(pad k//2+1) then blur(stride 2) == blur(pad k//2+1) then conv(stride 2): cheaper.
            x = F.conv2d(_blur(x, pad=k // 2 + 1), w, stride=2)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return _bias_act(x, self.bias, self.act, gain, clamp)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *, demodulate: bool = True,
                     up: bool = False, fused: bool = True) -> torch.Tensor:
    """StyleGAN2 modulated convolution (paper eq. 1-3): weight scaled per input channel by each
    sample's style, then (optionally) each output channel renormalised to unit expected std.

    x (N,I,H,W), weight (O,I,k,k), styles (N,I). `up` doubles the resolution as the reference's
    conv2d_resample (zero insertion, FIR filter, k x k conv), computed as a transposed convolution
    then the FIR blur: a quarter of the cost of convolving at the high resolution. `fused` runs one grouped convolution; otherwise the same result
    is computed by scaling activations around a shared-weight convolution.
    """
    n, cin = x.shape[:2]
    cout, _, k, _ = weight.shape
    styles = styles.float()
    w = weight.unsqueeze(0) * styles.reshape(n, 1, cin, 1, 1)  # (N,O,I,k,k)
    dcoefs = (w.square().sum(dim=(2, 3, 4)) + 1e-8).rsqrt() if demodulate else None  # (N,O)
    if fused:
        if dcoefs is not None:
            w = w * dcoefs.reshape(n, cout, 1, 1, 1)
        xg = x.reshape(1, n * cin, *x.shape[2:])
        if up:
            wt = w.flip([3, 4]).transpose(1, 2).reshape(n * cin, cout, k, k)
            y = F.conv_transpose2d(xg, wt.to(x.dtype), stride=2, groups=n)
        else:
            y = F.conv2d(xg, w.reshape(n * cout, cin, k, k).to(x.dtype), padding=k // 2, groups=n)
        y = y.reshape(n, cout, *y.shape[2:])
    else:
        x = x * styles.to(x.dtype).reshape(n, cin, 1, 1)
        if up:
            y = F.conv_transpose2d(x, weight.flip([2, 3]).transpose(0, 1).to(x.dtype), stride=2)
        else:
            y = F.conv2d(x, weight.to(x.dtype), padding=k // 2)
        if dcoefs is not None:
            y = y * dcoefs.to(y.dtype).reshape(n, cout, 1, 1)
    if up:
        y = _blur(y, pad=1, gain=4.0)  # (2H+1) -> 2H
    return y


# ---------------------------------------------------------------------------------------------
# Generator

class MappingNetwork(nn.Module):
    """z -> w: 2nd-moment normalisation, FC + lrelu layers (lr x0.01), broadcast to num_ws."""

    def __init__(self, z_dim: int, w_dim: int, num_ws: int, num_layers: int) -> None:
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws = z_dim, w_dim, num_ws
        dims = [z_dim] + [w_dim] * num_layers
        self.layers = nn.Sequential(*[
            FullyConnected(dims[i], dims[i + 1], act=True, lr_multiplier=MAPPING_LR_MULTIPLIER)
            for i in range(num_layers)
        ])
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, psi: float = 1.0, truncation_cutoff: int | None = None,
                update_w_avg: bool = False) -> torch.Tensor:
        """ws (N, num_ws, w_dim). `psi` < 1 pulls w toward the tracked mean (first
        `truncation_cutoff` layers only, when given); `update_w_avg` moves the mean (beta 0.995)."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape (N, {self.z_dim}), got {tuple(z.shape)}")
        x = z.float()
        x = x * (x.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
        x = self.layers(x)
        if update_w_avg:
            self.w_avg.copy_(x.detach().float().mean(dim=0).lerp(self.w_avg, W_AVG_BETA))
        ws = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if psi != 1:
            avg = self.w_avg.to(ws.dtype)
            if truncation_cutoff is None:
                ws = avg.lerp(ws, psi)
            else:
                ws = torch.cat([avg.lerp(ws[:, :truncation_cutoff], psi), ws[:, truncation_cutoff:]], dim=1)
        return ws


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally upsampling) + per-pixel noise + bias + lrelu."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, *,
                 up: bool = False, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.resolution, self.up, self.conv_clamp = resolution, up, conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str, fused: bool) -> torch.Tensor:
        x = modulated_conv2d(x, self.weight, self.affine(w), up=self.up, fused=fused)
        if noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device, dtype=x.dtype)
            x = x + noise * self.noise_strength.to(x.dtype)
        elif noise_mode == "const":
            x = x + (self.noise_const * self.noise_strength).to(x.dtype)
        return _bias_act(x, self.bias, True, 1.0, self.conv_clamp)


class ToRGB(nn.Module):
    """Modulated 1x1 conv to image channels, without demodulation."""

    def __init__(self, in_channels: int, img_channels: int, w_dim: int, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(img_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(img_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused: bool) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=fused)
        return _bias_act(x, self.bias, False, 1.0, self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution: (upsampling conv,) conv, toRGB added to the upsampled running image."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int,
                 img_channels: int, conv_clamp: float | None) -> None:
        super().__init__()
        self.first = in_channels == 0
        if self.first:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=True, conv_clamp=conv_clamp)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)
        self.torgb = ToRGB(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_conv = 1 if self.first else 2

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor,
                noise_mode: str, fused: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if self.first:
            x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
            x = self.conv1(x, ws[:, 0], noise_mode, fused)
        else:
            x = self.conv0(x, ws[:, 0], noise_mode, fused)
            x = self.conv1(x, ws[:, 1], noise_mode, fused)
        y = self.torgb(x, ws[:, self.num_conv], fused).float()
        img = y if img is None else upsample2d(img) + y
        return x, img


class SynthesisNetwork(nn.Module):
    """ws (N, num_ws, w_dim) -> images (N, C, R, R), skip architecture from a learned 4x4 constant."""

    def __init__(self, cfg: StyleGAN2Config) -> None:
        super().__init__()
        self.w_dim = cfg.w_dim
        self.resolutions = [2**i for i in range(2, int(math.log2(cfg.resolution)) + 1)]
        self.blocks = nn.ModuleList()
        for res in self.resolutions:
            in_ch = cfg.channels(res // 2) if res > 4 else 0
            self.blocks.append(SynthesisBlock(in_ch, cfg.channels(res), cfg.w_dim, res, cfg.img_channels, cfg.conv_clamp))
        # The toRGB of one block shares its w with the first conv of the next block.
        self.num_ws = sum(b.num_conv for b in self.blocks) + 1

    def forward(self, ws: torch.Tensor, noise_mode: str = "random", fused_modconv: bool | None = None) -> torch.Tensor:
        """`noise_mode`: 'random' (fresh noise), 'const' (fixed buffers: deterministic) or 'none'.
        `fused_modconv` None -> grouped conv in eval mode, scaled activations in training mode."""
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must have shape (N, {self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}")
        fused = (not self.training) if fused_modconv is None else fused_modconv
        x = img = None
        idx = 0
        for block in self.blocks:
            x, img = block(x, img, ws[:, idx: idx + block.num_conv + 1], noise_mode, fused)
            idx += block.num_conv
        return img


class Generator(nn.Module):
    """StyleGAN2 generator: `mapping` (z -> ws) then `synthesis` (ws -> image in about [-1, 1])."""

    def __init__(self, cfg: StyleGAN2Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.synthesis = SynthesisNetwork(cfg)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(cfg.z_dim, cfg.w_dim, self.num_ws, cfg.mapping_layers)

    def style_mix(self, ws: torch.Tensor, prob: float, psi: float = 1.0,
                  truncation_cutoff: int | None = None) -> torch.Tensor:
        """With probability `prob` per sample, replace ws from a random layer in [1, num_ws) on by
        the ws of a fresh z (regularises the generator against correlated styles)."""
        if prob <= 0:
            return ws
        n, device = ws.shape[0], ws.device
        ws2 = self.mapping(torch.randn(n, self.cfg.z_dim, device=device), psi=psi, truncation_cutoff=truncation_cutoff)
        cutoff = torch.randint(1, self.num_ws, (n,), device=device)
        cutoff = torch.where(torch.rand(n, device=device) < prob, cutoff, torch.full_like(cutoff, self.num_ws))
        replace = torch.arange(self.num_ws, device=device).unsqueeze(0) >= cutoff.unsqueeze(1)  # (N, num_ws)
        return torch.where(replace.unsqueeze(2), ws2.to(ws.dtype), ws)

    def forward(self, z: torch.Tensor, *, psi: float = 1.0, truncation_cutoff: int | None = None,
                noise_mode: str = "random", style_mix_prob: float = 0.0, update_w_avg: bool = False,
                fused_modconv: bool | None = None, return_ws: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Images (N, C, R, R) for latents z (N, z_dim); with `return_ws`, also the ws used
        (N, num_ws, w_dim), e.g. for the path length penalty."""
        ws = self.mapping(z, psi=psi, truncation_cutoff=truncation_cutoff, update_w_avg=update_w_avg)
        ws = self.style_mix(ws, style_mix_prob, psi=psi, truncation_cutoff=truncation_cutoff)
        img = self.synthesis(ws, noise_mode=noise_mode, fused_modconv=fused_modconv)
        return (img, ws) if return_ws else img


# ---------------------------------------------------------------------------------------------
# Discriminator

class MinibatchStd(nn.Module):
    """Appends one channel: the stddev of features over a group of samples, averaged over C,H,W.

    Samples i and j share a group when i % n == j % n with n = ceil(N / G) groups (the reference's
    grouping when G divides N); group sizes then differ by at most one.
    """

    def __init__(self, group_size: int) -> None:
        super().__init__()
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        groups = -(-n // min(self.group_size, n))
        gid = torch.arange(n, device=x.device) % groups
        xf = x.float()  # in fp32 even under autocast: a small difference of large numbers
        counts = torch.bincount(gid, minlength=groups).float().reshape(-1, 1, 1, 1)
        mean = xf.new_zeros(groups, *xf.shape[1:]).index_add_(0, gid, xf) / counts
        var = xf.new_zeros(groups, *xf.shape[1:]).index_add_(0, gid, (xf - mean[gid]).square()) / counts
        std = (var + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (groups,)
        y = std[gid].reshape(n, 1, 1, 1).expand(n, 1, h, w).to(x.dtype)
        return torch.cat([x, y], dim=1)


class DiscriminatorBlock(nn.Module):
    """Residual block: two 3x3 convs (the second downsampling) + a 1x1 downsampling skip, both
    scaled by 1/sqrt(2) so the sum keeps unit variance."""

    def __init__(self, in_channels: int, out_channels: int, conv_clamp: float | None) -> None:
        super().__init__()
        self.conv0 = Conv2d(in_channels, in_channels, 3, conv_clamp=conv_clamp)
        self.conv1 = Conv2d(in_channels, out_channels, 3, down=True, conv_clamp=conv_clamp)
        self.skip = Conv2d(in_channels, out_channels, 1, bias=False, act=False, down=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gain = math.sqrt(0.5)
        return self.skip(x, gain=gain) + self.conv1(self.conv0(x), gain=gain)


class Discriminator(nn.Module):
    """StyleGAN2 residual discriminator: images (N, C, R, R) -> logits (N,)."""

    def __init__(self, cfg: StyleGAN2Config) -> None:
        super().__init__()
        self.cfg = cfg
        res = cfg.resolution
        self.fromrgb = Conv2d(cfg.img_channels, cfg.channels(res), 1, conv_clamp=cfg.conv_clamp)
        blocks = []
        while res > 4:
            blocks.append(DiscriminatorBlock(cfg.channels(res), cfg.channels(res // 2), cfg.conv_clamp))
            res //= 2
        self.blocks = nn.Sequential(*blocks)
        ch = cfg.channels(4)
        self.mbstd = MinibatchStd(cfg.mbstd_group)
        self.conv = Conv2d(ch + 1, ch, 3, conv_clamp=cfg.conv_clamp)
        self.fc = FullyConnected(ch * 16, ch, act=True)
        self.out = FullyConnected(ch, 1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        r = self.cfg.resolution
        if img.ndim != 4 or img.shape[1:] != (self.cfg.img_channels, r, r):
            raise ValueError(f"images must have shape (N, {self.cfg.img_channels}, {r}, {r}), got {tuple(img.shape)}")
        x = self.blocks(self.fromrgb(img))
        x = self.conv(self.mbstd(x))
        x = self.fc(x.flatten(1))
        return self.out(x).squeeze(1).float()
