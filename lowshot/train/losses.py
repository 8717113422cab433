"""GAN losses and regularisers shared by every architecture's training loop.

- Non-saturating logistic loss, R1 and path length regularisation, lazy regularisation:
  Karras et al., "Analyzing and Improving the Image Quality of StyleGAN" (CVPR 2020), as in
  NVlabs/stylegan2-ada-pytorch `training/loss.py` and `training/training_loop.py`.
- Hinge loss (lightweight-GAN / FastGAN, Liu et al. 2021), LSGAN and vanilla BCE (CycleGAN,
  Zhu et al. 2017, junyanz/pytorch-CycleGAN-and-pix2pix `models/networks.py` GANLoss).
- WGAN gradient penalty: Gulrajani et al., "Improved Training of Wasserstein GANs" (NeurIPS 2017),
  with SinGAN / ConSinGAN's per-pixel variant for patch critics (tohinz/ConSinGAN `functions.py`).

Every loss returns a scalar averaged over its inputs; the regularisers return one value per sample
so the caller can weight them (gamma / 2, the lazy interval) and average.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

GAN_LOSS_KINDS = ("lsgan", "vanilla", "hinge")


def g_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator loss -log sigmoid(D(G(z))), averaged."""
    return F.softplus(-fake_logits.float()).mean()


def d_logistic(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator loss -log sigmoid(D(x)) - log(1 - sigmoid(D(G(z)))), each term averaged."""
    return F.softplus(-real_logits.float()).mean() + F.softplus(fake_logits.float()).mean()


def d_hinge(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss relu(1 - D(x)) + relu(1 + D(G(z))), each term averaged."""
    return F.relu(1 - real_logits.float()).mean() + F.relu(1 + fake_logits.float()).mean()


def g_hinge(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator hinge loss -D(G(z)), averaged."""
    return -fake_logits.float().mean()


def gan_loss(kind: str, logits: torch.Tensor, target_is_real: bool, for_discriminator: bool = True) -> torch.Tensor:
    """One adversarial loss term, averaged over `logits` (any shape: per image or per patch).

    - 'lsgan':   (D - t)^2 with t = 1 for real, 0 for fake (CycleGAN's default).
    - 'vanilla': binary cross-entropy with logits against t (for the generator with t = 1 this is
                 the non-saturating loss).
    - 'hinge':   discriminator: relu(1 - D) for real, relu(1 + D) for fake; generator: -D (the
                 generator term exists only with target_is_real=True).
    The generator calls it on D(G(x)) with target_is_real=True, for_discriminator=False; the
    discriminator calls it once for reals (True) and once for fakes (False) and sums the two.
    `for_discriminator` only changes the hinge loss.
    """
    x = logits.float()
    if kind == "lsgan":
        return (x - (1.0 if target_is_real else 0.0)).square().mean()
    if kind == "vanilla":
        return F.binary_cross_entropy_with_logits(x, torch.full_like(x, 1.0 if target_is_real else 0.0))
    if kind == "hinge":
        if for_discriminator:
            return F.relu(1 - x).mean() if target_is_real else F.relu(1 + x).mean()
        if not target_is_real:
            raise ValueError("hinge generator loss is defined only for target_is_real=True")
        return -x.mean()
    raise ValueError(f"gan loss kind must be one of {GAN_LOSS_KINDS}, got {kind!r}")


def r1_penalty(real_images: torch.Tensor, real_logits: torch.Tensor) -> torch.Tensor:
    """R1: squared norm of d(sum of D(x)) / dx per real image, shape (N,), differentiable.

    `real_images` must have had requires_grad set before D saw them. The caller multiplies by
    gamma / 2 (and by the lazy interval when applied every k steps).
    """
    if not real_images.requires_grad:
        raise ValueError("r1_penalty: call real_images.requires_grad_(True) before running D on them")
    (grads,) = torch.autograd.grad(real_logits.float().sum(), real_images, create_graph=True)
    return grads.float().square().sum(dim=tuple(range(1, grads.ndim)))


def wgan_gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor, *, per_pixel: bool = False,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP: (||grad D(x_hat)|| - 1)^2 at x_hat = a * real + (1 - a) * fake, a ~ U(0, 1) per
    sample (drawn on the CPU from `generator`), one value per sample, shape (N,), differentiable.

    The gradient is that of the sum of D's outputs (any shape: one score or a patch map per
    image). `per_pixel`: the norm is taken over channels at each pixel and the squared deviation
    averaged over pixels, as SinGAN / ConSinGAN do for their patch critic; otherwise over the
    whole image (Gulrajani et al.). The caller multiplies by the penalty weight and averages.
    """
    a = torch.rand(len(real), 1, 1, 1, generator=generator).to(device=real.device, dtype=real.dtype)
    mixed = (a * real.detach() + (1 - a) * fake.detach()).requires_grad_(True)
    (grads,) = torch.autograd.grad(critic(mixed).float().sum(), mixed, create_graph=True)
    grads = grads.float()
    if per_pixel:
        return (grads.norm(2, dim=1) - 1).square().flatten(1).mean(dim=1)
    return (grads.flatten(1).norm(2, dim=1) - 1).square()


class PathLengthPenalty:
    """Path length regularisation: (|J_w^T y| - a)^2 with y ~ N(0, I) / sqrt(H*W) in image space
    and `a` the running mean of the lengths (decay 0.01), one value per sample, shape (N,).

    `ws` must be the (N, num_ws, w_dim) tensor that produced `fake_images` (part of its graph).
    The caller multiplies by the weight (2) and the lazy interval. `pl_mean` is training state:
    save it with `state_dict()` and restore it on resume.
    """

    def __init__(self, decay: float = 0.01) -> None:
        if not 0 < decay <= 1:
            raise ValueError(f"path length decay must be in (0, 1], got {decay!r}")
        self.decay = decay
        self.pl_mean = torch.zeros([])

    def __call__(self, fake_images: torch.Tensor, ws: torch.Tensor,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        img = fake_images.float()
        h, w = img.shape[2], img.shape[3]
        noise = torch.randn(img.shape, device=img.device, generator=generator) / math.sqrt(h * w)
        (grads,) = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
        sq = grads.float().square().sum(dim=-1)  # per ws vector
        lengths = sq.mean(dim=tuple(range(1, sq.ndim))).sqrt() if sq.ndim > 1 else sq.sqrt()
        # As the reference, the updated mean stays in the graph for this step's penalty.
        pl_mean = self.pl_mean.to(lengths.device).lerp(lengths.mean(), self.decay)
        self.pl_mean = pl_mean.detach()
        return (lengths - pl_mean).square()

    def state_dict(self) -> dict[str, Any]:
        return {"pl_mean": float(self.pl_mean)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pl_mean = torch.tensor(float(state["pl_mean"]))


def lazy_reg_adam_params(lr: float, betas: tuple[float, float], interval: int | None
                         ) -> tuple[float, tuple[float, float]]:
    """Adam lr and betas corrected for a regulariser applied every `interval` steps (StyleGAN2
    paper, appendix B): with ratio k / (k + 1), lr * ratio and beta ** ratio. None: unchanged."""
    if interval is None:
        return lr, tuple(betas)
    if interval < 1:
        raise ValueError(f"lazy regularisation interval must be >= 1 or None, got {interval!r}")
    ratio = interval / (interval + 1)
    return lr * ratio, (betas[0] ** ratio, betas[1] ** ratio)
