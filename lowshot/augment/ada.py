"""Adaptive discriminator augmentation (ADA), Karras et al. 2020, "Training Generative Adversarial
Networks with Limited Data" (reference: NVlabs/stylegan2-ada-pytorch, training/augment.py for the
`bgc` pipeline and training/training_loop.py for the p heuristic).

`AdaptiveAugment` applies the `bgc` pipeline: every transform is applied to each sample with
probability p. The geometric ones (x-flip, 90-degree rotation, integer translation, isotropic
scale, rotation, anisotropic scale, fractional translation) are composed into one 3x3 matrix per
sample and applied with a single bilinear resampling of the reflection-padded image; the colour
ones (brightness, contrast, luma flip, hue rotation, saturation) into one 4x4 matrix per sample.
Unlike the reference we do not upsample 2x and low-pass (sym6 wavelet) around the resampling, so
rotations and down-scales alias slightly; D sees the same kind of resampling on reals and fakes.

`AdaController` tunes p from the sign of D's outputs on reals, and (unlike the reference, which
restarts from p = 0) keeps p and its accumulators across a resume through its state_dict.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

logger = logging.getLogger(__name__)

GEOMETRIC_OPS = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")
COLOR_OPS = ("brightness", "contrast", "lumaflip", "hue", "saturation")
PIPELINES = {
    "blit": ("xflip", "rotate90", "xint"),
    "geom": ("scale", "rotate", "aniso", "xfrac"),
    "color": COLOR_OPS,
    "bgc": GEOMETRIC_OPS + COLOR_OPS,
}


@dataclass(frozen=True)
class AdaStrengths:
    """Strengths of the ADA transforms, the paper's defaults."""

    xint_max: float = 0.125  # integer translation: up to this fraction of the side, uniform
    scale_std: float = 0.2  # isotropic scale: std of log2(scale)
    rotate_max: float = 1.0  # rotation: uniform angle in [-rotate_max, rotate_max] * pi
    aniso_std: float = 0.2  # anisotropic scale: std of log2(scale)
    xfrac_std: float = 0.125  # fractional translation: std, as a fraction of the side
    brightness_std: float = 0.2  # additive brightness: std
    contrast_std: float = 0.5  # contrast: std of log2(factor)
    hue_max: float = 1.0  # hue rotation: uniform angle in [-hue_max, hue_max] * pi
    saturation_std: float = 1.0  # saturation: std of log2(factor)


def parse_pipeline(pipeline: str | Iterable[str]) -> tuple[str, ...]:
    """Op names of `pipeline`: a preset (bgc, blit, geom, color), op names, or a comma-separated
    mix; returned in execution order. Raises ValueError naming an unknown name."""
    tokens = pipeline.split(",") if isinstance(pipeline, str) else list(pipeline)
    chosen: set[str] = set()
    for token in (t.strip() for t in tokens):
        if token in PIPELINES:
            chosen.update(PIPELINES[token])
        elif token in GEOMETRIC_OPS or token in COLOR_OPS:
            chosen.add(token)
        elif token:
            known = ", ".join((*PIPELINES, *GEOMETRIC_OPS, *COLOR_OPS))
            raise ValueError(f"unknown ADA pipeline or op {token!r}; known: {known}")
    return tuple(op for op in GEOMETRIC_OPS + COLOR_OPS if op in chosen)


# ---------------------------------------------------------------------------------------------
# Batched homogeneous matrices, float32, shape (n, k, k).

def _eye(n: int, k: int, device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.eye(k, device=device, dtype=dtype).expand(n, k, k).clone()


def _translate(tx: Tensor, ty: Tensor, tz: Tensor | None = None) -> Tensor:
    shifts = [tx, ty] if tz is None else [tx, ty, tz]
    m = _eye(tx.shape[0], len(shifts) + 1, tx.device, tx.dtype)
    for row, shift in enumerate(shifts):
        m[:, row, -1] = shift
    return m


def _scale(*factors: Tensor) -> Tensor:
    m = _eye(factors[0].shape[0], len(factors) + 1, factors[0].device, factors[0].dtype)
    for i, factor in enumerate(factors):
        m[:, i, i] = factor
    return m


def _rotate(cos: Tensor, sin: Tensor) -> Tensor:
    m = _eye(cos.shape[0], 3, cos.device, cos.dtype)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = cos, -sin, sin, cos
    return m


def _rotate_about(axis: Tensor, theta: Tensor) -> Tensor:
    """4x4 rotation by `theta` about the unit 3-vector `axis` (Rodrigues' formula)."""
    n = theta.shape[0]
    cos, sin = theta.cos()[:, None, None], theta.sin()[:, None, None]
    cross = torch.zeros(3, 3, device=theta.device)
    cross[0, 1], cross[0, 2], cross[1, 2] = -axis[2], axis[1], -axis[0]
    cross = cross - cross.T
    m = _eye(n, 4, theta.device)
    m[:, :3, :3] = cos * torch.eye(3, device=theta.device) + sin * cross + (1 - cos) * torch.outer(axis, axis)
    return m


# ---------------------------------------------------------------------------------------------
# Resampling.

def affine_warp(x: Tensor, g_inv: Tensor) -> Tensor:
    """Resample each image of `x` (N, C, H, W) through its inverse transform `g_inv` (N, 3, 3):
    output pixel (x, y), in pixels from the image centre, reads input pixel g_inv @ (x, y, 1).

    The input is reflection-padded by just enough that every sample point (and its bilinear
    neighbour) lies inside, so no black border leaks in; only the output window is sampled, which
    is the crop back to (H, W). Bilinear, differentiable w.r.t. `x`.
    """
    n, c, h, w = x.shape
    g = g_inv.to(x.device, torch.float64)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    corners = torch.tensor([[-cx, cx, cx, -cx], [-cy, -cy, cy, cy], [1.0, 1, 1, 1]],
                           dtype=torch.float64, device=x.device)
    reach = g @ corners  # where the output corners read from, (n, 3, 4)
    xs, ys = reach[:, 0], reach[:, 1]
    margin = torch.stack([(-xs).max() - cx, (-ys).max() - cy, xs.max() - cx, ys.max() - cy]) + 1
    # Reflection padding must stay below the side; beyond that grid_sample reflects the coordinates.
    limit = torch.tensor([w - 1, h - 1, w - 1, h - 1], dtype=torch.float64, device=x.device)
    mx0, my0, mx1, my1 = (int(v) for v in margin.ceil().clamp(min=0).minimum(limit).tolist())
    padded = F.pad(x, (mx0, mx1, my0, my1), mode="reflect") if mx0 + my0 + mx1 + my1 else x
    hp, wp = h + my0 + my1, w + mx0 + mx1

    def const(v: float) -> Tensor:
        return torch.full((n,), v, dtype=torch.float64, device=x.device)

    # normalised output coords -> centred pixels -> g_inv -> padded-centred pixels -> normalised
    theta = (_scale(const(2 / wp), const(2 / hp)) @ _translate(const((mx0 - mx1) / 2), const((my0 - my1) / 2))
             @ g @ _scale(const(w / 2), const(h / 2)))
    grid = F.affine_grid(theta[:, :2, :].to(x.dtype), [n, c, h, w], align_corners=False)
    return F.grid_sample(padded, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def apply_color(x: Tensor, cm: Tensor) -> Tensor:
    """Apply per-sample 4x4 colour matrices `cm` (N, 4, 4) to RGB or grey images (N, C, H, W)."""
    n, c, h, w = x.shape
    cm = cm.to(x.device, x.dtype)
    flat = x.reshape(n, c, h * w)
    if c == 3:
        out = cm[:, :3, :3] @ flat + cm[:, :3, 3:]
    elif c == 1:  # a grey value g is the colour (g, g, g); read back the mean of the three outputs
        gain = cm[:, :3, :3].sum(dim=2).mean(dim=1)
        out = flat * gain[:, None, None] + cm[:, :3, 3].mean(dim=1)[:, None, None]
    else:
        raise ValueError(f"ADA colour transforms need 1 or 3 channels, got {c}")
    return out.reshape(n, c, h, w)


# ---------------------------------------------------------------------------------------------

class AdaptiveAugment(torch.nn.Module):
    """The ADA pipeline: each op of `pipeline` is applied to each sample with probability `p`.

    `p` (float in [0, 1]) is set from outside, usually from an AdaController; it is saved in the
    module's state_dict. At p = 0 the input is returned unchanged. `generator` (or the one passed
    to forward) makes the draws reproducible; it may live on another device than the images.
    """

    def __init__(self, pipeline: str | Iterable[str] = "bgc", p: float = 0.0, *,
                 strengths: AdaStrengths = AdaStrengths(), generator: torch.Generator | None = None):
        super().__init__()
        self.ops = parse_pipeline(pipeline)
        self.strengths = strengths
        self.generator = generator
        self.p = p

    @property
    def p(self) -> float:
        return self._p

    @p.setter
    def p(self, value: float) -> None:
        value = float(value)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"augmentation probability p must be in [0, 1], got {value}")
        self._p = value

    def get_extra_state(self) -> dict[str, Any]:
        return {"p": self.p}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.p = state["p"]

    def extra_repr(self) -> str:
        return f"p={self.p:.4f}, ops={','.join(self.ops)}"

    # -- draws ---------------------------------------------------------------------------------

    def _rand(self, shape: tuple[int, ...], device: torch.device, gen: torch.Generator | None,
              normal: bool = False) -> Tensor:
        draw = torch.randn if normal else torch.rand
        if gen is None:
            return draw(shape, device=device)
        return draw(shape, generator=gen, device=gen.device).to(device)

    def _gate(self, value: Tensor, identity: float, prob: float, gen: torch.Generator | None) -> Tensor:
        """`value` where a per-sample draw falls below `prob`, else `identity`."""
        hit = self._rand((value.shape[0],), value.device, gen) < prob
        return torch.where(hit.view(-1, *([1] * (value.ndim - 1))), value, torch.full_like(value, identity))

    def _rotation(self, n: int, device: torch.device, gen: torch.Generator | None, prob: float) -> Tensor:
        """Inverse of a rotation by a uniform angle, applied with probability `prob`."""
        angle = (self._rand((n,), device, gen) * 2 - 1) * math.pi * self.strengths.rotate_max
        angle = self._gate(angle, 0.0, prob, gen)
        return _rotate(torch.cos(-angle), torch.sin(-angle))

    def sample_geometry(self, n: int, height: int, width: int, device: torch.device,
                        generator: torch.Generator | None = None) -> Tensor:
        """Draw the per-sample inverse geometric transforms, (n, 3, 3) in pixels from the centre."""
        s, p, gen, ops = self.strengths, self.p, generator or self.generator, self.ops
        g = _eye(n, 3, device)
        # Each transform T is drawn in turn; its inverse is appended on the right, so
        # g = T1^-1 @ T2^-1 @ ... maps output pixels back to the input.
        if "xflip" in ops:
            flip = self._gate(torch.floor(self._rand((n,), device, gen) * 2), 0.0, p, gen)
            g = g @ _scale(1 - 2 * flip, torch.ones(n, device=device))
        if "rotate90" in ops:
            k = self._gate(torch.floor(self._rand((n,), device, gen) * 4), 0.0, p, gen).long()
            # exact quarter-turn cosines and sines, so blits stay exact
            cos = torch.tensor([1.0, 0, -1, 0], device=device)[k]
            sin = torch.tensor([0.0, 1, 0, -1], device=device)[k]
            g = g @ _rotate(cos, sin)
        if "xint" in ops:
            t = self._gate((self._rand((n, 2), device, gen) * 2 - 1) * s.xint_max, 0.0, p, gen)
            g = g @ _translate(-torch.round(t[:, 0] * width), -torch.round(t[:, 1] * height))
        if "scale" in ops:
            f = self._gate(torch.exp2(self._rand((n,), device, gen, normal=True) * s.scale_std), 1.0, p, gen)
            g = g @ _scale(1 / f, 1 / f)
        # Rotation is drawn twice, before and after the anisotropic scale, each with probability
        # 1 - sqrt(1 - p), so that some rotation happens with probability p.
        p_rot = 1 - math.sqrt(1 - p)
        if "rotate" in ops:
            g = g @ self._rotation(n, device, gen, p_rot)
        if "aniso" in ops:
            f = self._gate(torch.exp2(self._rand((n,), device, gen, normal=True) * s.aniso_std), 1.0, p, gen)
            g = g @ _scale(1 / f, f)
        if "rotate" in ops:
            g = g @ self._rotation(n, device, gen, p_rot)
        if "xfrac" in ops:
            t = self._gate(self._rand((n, 2), device, gen, normal=True) * s.xfrac_std, 0.0, p, gen)
            g = g @ _translate(-t[:, 0] * width, -t[:, 1] * height)
        return g

    def sample_color(self, n: int, device: torch.device, generator: torch.Generator | None = None) -> Tensor:
        """Draw the per-sample colour transforms, (n, 4, 4) acting on (r, g, b, 1)."""
        s, p, gen, ops = self.strengths, self.p, generator or self.generator, self.ops
        cm = _eye(n, 4, device)
        luma = torch.tensor([1.0, 1, 1], device=device) / math.sqrt(3)  # the grey axis
        luma4 = torch.cat([luma, luma.new_zeros(1)])
        along = torch.outer(luma4, luma4)  # projection onto the grey axis
        # Each transform is composed on the left: it acts after the ones before it.
        if "brightness" in ops:
            b = self._gate(self._rand((n,), device, gen, normal=True) * s.brightness_std, 0.0, p, gen)
            cm = _translate(b, b, b) @ cm
        if "contrast" in ops:
            c = self._gate(torch.exp2(self._rand((n,), device, gen, normal=True) * s.contrast_std), 1.0, p, gen)
            cm = _scale(c, c, c) @ cm
        if "lumaflip" in ops:
            flip = self._gate(torch.floor(self._rand((n,), device, gen) * 2), 0.0, p, gen)
            cm = (torch.eye(4, device=device) - 2 * along * flip[:, None, None]) @ cm  # Householder
        if "hue" in ops:
            angle = self._gate((self._rand((n,), device, gen) * 2 - 1) * math.pi * s.hue_max, 0.0, p, gen)
            cm = _rotate_about(luma, angle) @ cm
        if "saturation" in ops:
            f = self._gate(torch.exp2(self._rand((n,), device, gen, normal=True) * s.saturation_std), 1.0, p, gen)
            sat = _eye(n, 4, device)
            sat[:, :3, :3] = along[:3, :3] + (torch.eye(3, device=device) - along[:3, :3]) * f[:, None, None]
            cm = sat @ cm
        return cm

    # -- forward -------------------------------------------------------------------------------

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment a batch (N, C, H, W) in [-1, 1]; same shape and dtype, differentiable w.r.t. x."""
        if x.ndim != 4:
            raise ValueError(f"AdaptiveAugment expects an NCHW batch, got shape {tuple(x.shape)}")
        if self.p == 0.0 or not self.ops:
            return x
        n, _, h, w = x.shape
        gen = generator or self.generator
        if any(op in GEOMETRIC_OPS for op in self.ops):
            x = affine_warp(x, self.sample_geometry(n, h, w, x.device, gen))
        if any(op in COLOR_OPS for op in self.ops):
            x = apply_color(x, self.sample_color(n, x.device, gen))
        return x


class AdaController:
    """The ADA heuristic: every `interval` minibatches, r_t = mean sign(D(real)) over them and
    p <- clamp(p + sign(r_t - target) * images / (speed_kimg * 1000), 0, 1), where `images` is the
    number of images trained on since the last adjustment (batch_size * interval normally).

    Use: `accumulate(real_logits)` after each D step on reals; `step()` once per minibatch; copy
    the returned p into the AdaptiveAugment. Under DDP give `batch_size` as the global batch and a
    `sync` that sums a tensor across ranks in place and returns it, e.g.
    `lambda t: (torch.distributed.all_reduce(t), t)[1]`; it is called on [sum of signs, count]
    at every adjustment, so every rank computes the same p.
    """

    def __init__(self, batch_size: int, *, p: float = 0.0, target: float = 0.6, speed_kimg: float = 500.0,
                 interval: int = 4, sync: Callable[[Tensor], Tensor] | None = None):
        if batch_size < 1 or interval < 1 or speed_kimg <= 0:
            raise ValueError(f"need batch_size >= 1, interval >= 1, speed_kimg > 0; got "
                             f"{batch_size}, {interval}, {speed_kimg}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"augmentation probability p must be in [0, 1], got {p}")
        self.batch_size, self.target, self.speed_kimg, self.interval = batch_size, target, speed_kimg, interval
        self.sync = sync
        self.p = float(p)
        self.r_t: float | None = None  # r_t of the last adjustment
        self._sign_sum: Tensor | float = 0.0  # stays on D's device between adjustments: no sync per step
        self._count = 0
        self._minibatches = 0
        self._images = 0

    def accumulate(self, real_logits: Tensor) -> None:
        """Add sign(D(real)) of one minibatch (any shape) to the running sums."""
        logits = real_logits.detach()
        self._sign_sum = self._sign_sum + logits.sign().sum(dtype=torch.float64)
        self._count += logits.numel()

    def step(self, images: int | None = None) -> float:
        """Count one minibatch of `images` images (default batch_size); every `interval`-th call
        adjusts p. Returns p. An interval that saw no logits leaves p unchanged."""
        self._minibatches += 1
        self._images += self.batch_size if images is None else int(images)
        if self._minibatches < self.interval:
            return self.p
        sums = torch.as_tensor(self._sign_sum, dtype=torch.float64)
        stats = torch.stack([sums, torch.full_like(sums, self._count)])
        if self.sync is not None:
            stats = self.sync(stats)
        sign_sum, count = stats.tolist()
        if count > 0:
            self.r_t = sign_sum / count
            adjust = math.copysign(1.0, self.r_t - self.target) if self.r_t != self.target else 0.0
            self.p = min(max(self.p + adjust * self._images / (self.speed_kimg * 1000), 0.0), 1.0)
            logger.debug("ADA r_t %.3f -> p %.4f", self.r_t, self.p)
        self._sign_sum, self._count, self._minibatches, self._images = 0.0, 0, 0, 0
        return self.p

    def state_dict(self) -> dict[str, Any]:
        """p, the last r_t and the accumulators of the interval in progress (plain numbers)."""
        return {"p": self.p, "r_t": self.r_t, "sign_sum": float(self._sign_sum), "count": self._count,
                "minibatches": self._minibatches, "images": self._images}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.p = float(state["p"])
        self.r_t = state["r_t"]
        self._sign_sum = float(state["sign_sum"])
        self._count = int(state["count"])
        self._minibatches = int(state["minibatches"])
        self._images = int(state["images"])
