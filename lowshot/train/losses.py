"""GAN losses and regularisers shared by every architecture's training loop.

- Non-saturating logistic loss, R1 and path length regularisation, lazy regularisation:
  Karras et al., "Analyzing and Improving the Image Quality of StyleGAN" (CVPR 2020), as in
  NVlabs/stylegan2-ada-pytorch `training/loss.py` and `training/training_loop.py`.
- Hinge loss (lightweight-GAN / FastGAN, Liu et al. 2021), LSGAN and vanilla BCE (CycleGAN,
  Zhu et al. 2017, junyanz/pytorch-CycleGAN-and-pix2pix `models/networks.py` GANLoss).
- PatchNCE (CUT, Park et al. 2020, taesungp/contrastive-unpaired-translation `models/patchnce.py`).
- A colour anchor for translators: L1 of block averages, ours.
- Wasserstein loss with the gradient penalty on random interpolates: Gulrajani et al., "Improved
  Training of Wasserstein GANs" (NeurIPS 2017), igul222/improved_wgan_training `gan_64x64.py`.
  SinGAN / ConSinGAN take it per pixel for their patch critics (tohinz/ConSinGAN `functions.py`).

Every loss returns a scalar averaged over its inputs; the regularisers return one value per sample
so the caller can weight them (gamma / 2, the lazy interval) and average.
"""

from __future__ import annotations

import math
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


def d_wasserstein(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Critic loss D(G(z)) - D(x), each term averaged: minus the critic's estimate of the Wasserstein-1
    distance. (The generator's loss, -D(G(z)) averaged, is `g_hinge`.)"""
    return fake_logits.float().mean() - real_logits.float().mean()


def critic_margin(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """A critic's real outputs about the midpoint of the batch's mean real and mean fake output: a
    critic is defined up to a constant, so this, not D(x), is what has a meaningful sign (for ADA's r_t)."""
    mid = (real_logits.float().mean() + fake_logits.float().mean()) / 2
    return real_logits.float() - mid


def interpolates(real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """x_hat = real + alpha (fake - real), alpha ~ U[0, 1) per sample (drawn on the generator's
    device), as a new leaf that requires grad; `real` and `fake` are not differentiated."""
    device = generator.device if generator is not None else real.device
    alpha = torch.rand(len(real), *[1] * (real.ndim - 1), generator=generator, device=device).to(real)
    return torch.lerp(real.detach(), fake.detach(), alpha).requires_grad_(True)


def gradient_penalty(x_hat: torch.Tensor, critic_out: torch.Tensor, *, per_pixel: bool = False) -> torch.Tensor:
    """(||d D(x_hat) / d x_hat||_2 - 1)^2 per sample, shape (N,), differentiable w.r.t. D's
    parameters (Gulrajani et al. eq. 3; the caller multiplies by lambda and averages).

    `critic_out` may be one score or a patch map per image (the gradient is that of their sum).
    `per_pixel`: the norm is taken over channels at each pixel and the squared deviations averaged
    over pixels, as SinGAN / ConSinGAN do for their patch critic; otherwise over the whole image.

    `x_hat` must have required grad before D saw it (`interpolates` returns such a tensor). The
    gradient of the batch's summed outputs is each sample's own gradient only for a critic without
    batch norm, as WGAN-GP requires.
    """
    if not x_hat.requires_grad:
        raise ValueError("gradient_penalty: D must be run on x_hat after x_hat.requires_grad_(True)")
    (grads,) = torch.autograd.grad(critic_out.float().sum(), x_hat, create_graph=True)
    grads = grads.float()
    if per_pixel:
        return (torch.linalg.vector_norm(grads, dim=1) - 1).square().flatten(1).mean(dim=1)
    return (torch.linalg.vector_norm(grads.flatten(1), dim=1) - 1).square()


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


def patch_nce_loss(query: torch.Tensor, key: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """PatchNCE (InfoNCE over patches) of one feature layer, averaged over images and patches.

    `query`, `key`: (N, P, D) L2-normalised projections of the same P positions of image n, the
    query from the translation, the key from its source. For each patch the positive is the key at
    its own position, the negatives the keys at the image's other P - 1 positions (not other images',
    as CUT's default): -log(exp(q.k+ / t) / sum over the P keys of exp(q.k / t)). Keys carry no
    gradient (the reference detaches them). Computed in float32.
    """
    if query.shape != key.shape or query.ndim != 3:
        raise ValueError(f"patch_nce_loss needs query and key of one shape (N, P, D), got "
                         f"{tuple(query.shape)} and {tuple(key.shape)}")
    q, k = query.float(), key.detach().float()
    logits = torch.bmm(q, k.transpose(1, 2)) / temperature  # (N, P, P): row i = patch i against every key
    targets = torch.arange(q.shape[1], device=q.device).expand(q.shape[0], -1)
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def colour_anchor(translation: torch.Tensor, photo: torch.Tensor, pool: int) -> torch.Tensor:
    """L1 between `translation` and `photo`, both averaged over `pool` x `pool` blocks: the colours and
    light of the photo at that scale, blind to everything finer (a style loss's complement, as "preserving
    colour" in Gatys et al. 2016, but on pixels). Sides not divisible by `pool` lose the remainder."""
    if pool < 1:
        raise ValueError(f"colour anchor pool must be >= 1, got {pool!r}")
    return F.l1_loss(F.avg_pool2d(translation.float(), pool), F.avg_pool2d(photo.float(), pool))


def r1_penalty(real_images: torch.Tensor, real_logits: torch.Tensor) -> torch.Tensor:
    """R1: squared norm of d(sum of D(x)) / dx per real image, shape (N,), differentiable.

    `real_images` must have had requires_grad set before D saw them. The caller multiplies by
    gamma / 2 (and by the lazy interval when applied every k steps).
    """
    if not real_images.requires_grad:
        raise ValueError("r1_penalty: call real_images.requires_grad_(True) before running D on them")
    (grads,) = torch.autograd.grad(real_logits.float().sum(), real_images, create_graph=True)
    return grads.float().square().sum(dim=tuple(range(1, grads.ndim)))


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
