"""What differs between the GAN architectures: one `Recipe` each, read by the one GAN loop.

A recipe names the networks (a model config and how to build G and D), how to draw an image
from G, the losses, and the architecture's reference optimiser settings: the learning rates,
Adam betas and critic steps its authors trained with. `train.lr_g`, `lr_d`, `betas` and
`critic_steps` default to null, which means those reference values; a value set overrides.

References: StyleGAN2 (NVlabs/stylegan2-ada-pytorch `train.py`, "auto" config below 1024 px:
lr 0.0025, betas (0, 0.99)); lightweight-GAN (FastGAN `train.py`: lr 2e-4, betas (0.5, 0.999));
DCGAN (pytorch/examples `dcgan/main.py`: lr 2e-4, betas (0.5, 0.999), non-saturating logistic
loss); WGAN-GP (igul222/improved_wgan_training `gan_64x64.py`: lr 1e-4, betas (0, 0.9), 5 critic
steps per G step, Wasserstein loss with a gradient penalty).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from lowshot.models import dcgan, lightweight_gan, resnet_gan, stylegan2
from lowshot.params import TrainParams
from lowshot.train import losses

log = logging.getLogger(__name__)

ModelConfig = (stylegan2.StyleGAN2Config | lightweight_gan.LightweightGANConfig | dcgan.DCGANConfig
               | resnet_gan.ResNetGANConfig)


@dataclass(frozen=True)
class Optim:
    """Adam settings of G and D, and D (critic) steps per G step."""

    lr_g: float
    lr_d: float
    betas: tuple[float, float]
    critic_steps: int

    def as_params(self) -> dict[str, Any]:
        """As `train` params (JSON values): the keys they resolve."""
        return {**asdict(self), "betas": list(self.betas)}


# The reference settings of each architecture (module docstring); read when a recipe is made.
REFERENCE = {
    "lightweight": Optim(lr_g=2e-4, lr_d=2e-4, betas=(0.5, 0.999), critic_steps=1),
    "stylegan2": Optim(lr_g=0.0025, lr_d=0.0025, betas=(0.0, 0.99), critic_steps=1),
    "dcgan": Optim(lr_g=2e-4, lr_d=2e-4, betas=(0.5, 0.999), critic_steps=1),
    "wgan-gp": Optim(lr_g=1e-4, lr_d=1e-4, betas=(0.0, 0.9), critic_steps=5),
    "resnet-wgan-gp": Optim(lr_g=1e-4, lr_d=1e-4, betas=(0.0, 0.9), critic_steps=5),
}


def resolve_optim(cfg: TrainParams, reference: Optim) -> Optim:
    """The run's settings: each of `train.lr_g`, `lr_d`, `betas`, `critic_steps` that is set, else `reference`'s."""
    chosen = {f.name: getattr(cfg, f.name) for f in fields(Optim)}
    resolved = {k: getattr(reference, k) if v is None else v for k, v in chosen.items()}
    return Optim(**{**resolved, "betas": tuple(resolved["betas"])})


def describe_optim(cfg: TrainParams, arch: str, optim: Optim) -> str:
    """One line naming each resolved setting and whether it is the reference or set in params."""
    return ", ".join(f"train.{k} {v} ({'set' if getattr(cfg, k) is not None else arch + ' reference'})"
                     for k, v in optim.as_params().items())


@dataclass
class Recipe:
    """One architecture, as the GAN loop needs it.

    `g_loss(fake_logits)` and `d_loss(real_logits, fake_logits)` are the adversarial losses;
    `critic`: D is a Wasserstein critic (outputs defined up to a constant), trained with the
    gradient penalty. `optim` is the run's resolved optimiser settings.
    """

    arch: str
    config: ModelConfig
    latent_dim: int
    optim: Optim
    build: Callable[[], tuple[nn.Module, nn.Module]]
    sample: Callable[[nn.Module, torch.Tensor], torch.Tensor]  # inference: G_ema, z -> images
    g_loss: Callable[[torch.Tensor], torch.Tensor]
    d_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    critic: bool = False


def _config(model: ModelConfig | None, cls: type, arch: str, default: Callable[[], ModelConfig]) -> Any:
    config = model or default()
    if not isinstance(config, cls):
        raise TypeError(f"train.arch is {arch} but the model config is a {type(config).__name__}")
    return config


def _plain(g: nn.Module, z: torch.Tensor) -> torch.Tensor:
    return g(z)


def make_recipe(cfg: TrainParams, model: ModelConfig | None) -> Recipe:
    """The architecture-specific pieces for `cfg.arch`, with `model` (default: the architecture's
    default config at `cfg.resolution`, widened or narrowed by `cfg.channels`) and the optimiser
    settings resolved against the architecture's reference."""
    arch, res, ch = cfg.arch, cfg.resolution, cfg.channels
    optim = resolve_optim(cfg, REFERENCE[arch])
    if arch == "stylegan2":
        width = {"channel_max": ch} if ch else {}
        mc = _config(model, stylegan2.StyleGAN2Config, arch, lambda: stylegan2.StyleGAN2Config(resolution=res, **width))
        return Recipe(arch, mc, mc.z_dim, optim, lambda: (stylegan2.Generator(mc), stylegan2.Discriminator(mc)),
                      lambda g, z: g(z, noise_mode="const"), losses.g_nonsaturating, losses.d_logistic)
    if arch == "lightweight":
        width = {"ngf": ch, "ndf": ch} if ch else {}
        mc = _config(model, lightweight_gan.LightweightGANConfig, arch,
                     lambda: lightweight_gan.LightweightGANConfig(resolution=res, **width))
        return Recipe(arch, mc, mc.latent_dim, optim,
                      lambda: (lightweight_gan.Generator(mc), lightweight_gan.Discriminator(mc)), _plain,
                      losses.g_hinge, losses.d_hinge)
    if arch in ("dcgan", "wgan-gp"):
        critic = arch == "wgan-gp"
        # z of 100 (pytorch/examples) or 128 (the WGAN-GP code); the critic has layer norm, not batch norm.
        shape = {"z_dim": 128, "d_norm": "layer"} if critic else {"z_dim": 100, "d_norm": "batch"}
        width = {"ngf": ch, "ndf": ch} if ch else {}
        mc = _config(model, dcgan.DCGANConfig, arch, lambda: dcgan.DCGANConfig(resolution=res, **shape, **width))
        if critic and mc.d_norm == "batch":
            raise ValueError("train.arch wgan-gp needs a critic without batch norm (DCGANConfig.d_norm layer or none)")
        return Recipe(arch, mc, mc.z_dim, optim, lambda: (dcgan.Generator(mc), dcgan.Discriminator(mc)), _plain,
                      *_adversarial_losses(critic), critic=critic)
    if arch == "resnet-wgan-gp":
        width = {"dim": ch} if ch else {}
        mc = _config(model, resnet_gan.ResNetGANConfig, arch,
                     lambda: resnet_gan.ResNetGANConfig(resolution=res, **width))
        return Recipe(arch, mc, mc.z_dim, optim, lambda: (resnet_gan.Generator(mc), resnet_gan.Discriminator(mc)),
                      _plain, *_adversarial_losses(True), critic=True)
    raise ValueError(f"unknown train.arch {arch!r} (known: {', '.join(REFERENCE)})")


def _adversarial_losses(critic: bool) -> tuple[Callable, Callable]:
    """Wasserstein (G: -D(G(z)), the hinge generator loss) or the non-saturating logistic losses."""
    return (losses.g_hinge, losses.d_wasserstein) if critic else (losses.g_nonsaturating, losses.d_logistic)
