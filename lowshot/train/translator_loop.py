"""The photo -> Monet translator loop: CycleGAN, CUT and FastCUT, with DiffAugment (and optionally ADA) on the
discriminators.

One loop, models as data (as `gan_loop` does for the GANs): a `TranslatorRecipe` per model builds its
networks, image pools and phase list; data, the learning-rate schedule, checkpoints, exact resume,
DDP, dvclive, the translation grid and the FID / KID / MiFID probe are shared.

- CycleGAN (Zhu et al. 2017; junyanz/pytorch-CycleGAN-and-pix2pix `models/cycle_gan_model.py`): two
  ResNet generators, two PatchGANs, LSGAN, cycle and identity L1 losses, a pool of 50 fakes. Each
  minibatch runs a G phase (both generators) then a D phase (both discriminators).
- CUT and FastCUT (Park et al. 2020; taesungp/contrastive-unpaired-translation `models/cut_model.py`):
  one generator, one PatchGAN, LSGAN, and PatchNCE on the generator's encoder features: the features of
  the translation G(a) at 256 random positions per layer must match the photo's own features at the
  same positions against the photo's other positions (`losses.patch_nce_loss`, projection heads in
  `models.cut`). CUT adds the NCE identity loss (G(b) against b) at lambda_NCE 1; FastCUT drops it,
  uses lambda_NCE 10 and flip equivariance (a photo flipped at random, its translation's features
  flipped back). The reference updates D before G; here, as for CycleGAN, G's phase comes first and D
  then judges the fakes G just made (so each step costs one generator forward less). The photo's key
  features come from the same forward pass that translates it (the reference encodes it again).

ADA (`ada_target`; Karras et al. 2020, `augment.ada`): the bgc transforms, applied before DiffAugment to every
image the discriminators see, at a probability p that the controller raises while D_B is too sure of the Monets
(the mean sign of D_B(real) minus the loss's midpoint, 0.5 for LSGAN, above the target) and lowers otherwise.
p and the controller's sums are part of the state; the step's p is in `losses.jsonl` as `aug/p`.

EMA (`ema_kimg` > 0; `train.ema`, as the GAN loop's G_ema): an exponential moving average of G_AB's weights,
updated after every step, is what `photo2monet.pt`, the grid and the metrics translate with; a GAN's weights
at one step swing (palette casts that come and go from epoch to epoch), their average over the last
half-life does not. Saved in the state as `G_ema`.

Naming: domain A = photos, domain B = Monet paintings (several sources mixed by sampling weight).
G_AB translates A -> B (the product, saved as `photo2monet.pt`); for CycleGAN G_BA goes back, D_A judges
domain A, D_B domain B. Per-step losses (`losses.jsonl`; epoch means in dvclive) are named `loss/*`:
CycleGAN `loss/G` (the weighted total), `loss/G_AB`, `loss/G_BA`, `loss/cycle_A`, `loss/cycle_B`,
`loss/idt_A`, `loss/idt_B` (plain L1s), `loss/D_A`, `loss/D_B`; CUT `loss/G`, `loss/G_AB`, `loss/NCE`,
`loss/NCE_Y` (identity, CUT only), `loss/D_B`. D losses are 0.5 (real term + term of a (pooled) fake).

An epoch is `epoch_images` photos (every photo once when null), ceil(epoch_images / batch) steps.
Learning rate: junyanz's "linear" rule, lr * (1 - max(0, e + 1 - epochs) / (decay_epochs + 1)) in
0-based epoch e: constant for `epochs`, then `decay_epochs` steps down, reaching 0 where training ends.
Images are loaded at `load_size` and randomly cropped to `size`; the metrics and the grid translate
whole photos at 256 px, as `translate` does, so they measure the product.

Checkpoints: `state-<epoch>.pt` via `checkpoint.save_state`, the epoch count standing in checkpoint's
kimg slot (a run stopped mid-epoch by `max_steps` saves e.g. state-000002.500.pt). A run resumes by
itself and exactly: networks, Adam, the data position, each process's image pools, augmentation and
other random streams, the partial epoch's loss sums. A changed fingerprint (the resolved params: a
null key counts as its model's reference value) is refused; `epochs` / `decay_epochs` may change only
if the learning rate of every epoch already (partly) trained stays the same.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from lowshot.augment import AdaController, AdaptiveAugment, make_augment
from lowshot.fsutil import remove_stale_temps
from lowshot.images.folder import list_images
from lowshot.images.grid import image_grid
from lowshot.metrics.probe import MetricProbe
from lowshot.models.cut import PatchSampleMLP
from lowshot.models.cyclegan import CycleGANConfig, PatchDiscriminator, ResnetGenerator
from lowshot.models.patch_transfer import PatchTransfer, PatchTransferConfig
from lowshot.params import CycleGANParams
from lowshot.precision import FP32, Precision
from lowshot.runtime import seed_everything
from lowshot.train import checkpoint, distributed, losses
from lowshot.train.checkpoint import PHOTO2MONET_FILE, load_photo2monet
from lowshot.train.ema import ema_beta, make_ema, update_ema
from lowshot.train.data import (ImageDataset, ImageSource, InfiniteSampler, WeightedSampler, load_image, source_files,
                                sources_digest)
from lowshot.train.eta import RunClock
from lowshot.train.gan_loop import (LOSSES_FILE, Phase, TrainingDiverged, derive_seed, run_phase,
                                    truncate_losses)
from lowshot.train.image_pool import ImagePool
from lowshot.train.live import LiveLog

log = logging.getLogger(__name__)

__all__ = ["PHOTO2MONET_FILE", "RUN_ONLY_KEYS", "TrainingDiverged", "load_photo2monet", "load_size",
           "data_digest", "lr_factor", "model_config", "run_fingerprint", "steps_per_epoch", "train_translator"]

# CycleGANParams keys that do not change what is learned. epochs / decay_epochs are checked apart
# (they shape the learning rate; see the module docstring).
RUN_ONLY_KEYS = ("epochs", "decay_epochs", "eval_every", "eval_images", "grid_size", "keep_snapshots", "workers")
PATCH_KEYS = ("patch_size", "patch_stride", "patch_descriptor", "patch_colour", "patch_detail", "patch_texture",
              "patch_choices", "patch_photo_detail")  # the `patches` translator's
EVAL_SIZE = 256  # side of the photos translated for the grid and the metrics: what `translate` writes
EVAL_BATCH = 16  # photos per G_AB forward pass when translating for the grid and the metrics
ADA_INTERVAL = 4  # minibatches between ADA's adjustments of p (the reference's)
# D's output halfway between its real and fake targets, where ADA's sign(D(real)) turns: LSGAN's targets
# are 1 and 0; the vanilla and hinge losses' logits are signed.
REAL_MIDPOINT = {"lsgan": 0.5, "vanilla": 0.0, "hinge": 0.0}


# --- schedule and data ------------------------------------------------------------------------------


def model_config(cfg: CycleGANParams) -> CycleGANConfig:
    """The networks' shape from the params' widths and the model's reference init and antialiasing."""
    cfg = cfg.resolved()
    return CycleGANConfig(ngf=cfg.ngf, ndf=cfg.ndf, g_blocks=cfg.g_blocks, d_layers=cfg.d_layers,
                          upsample=cfg.upsample, init=cfg.init, residual=cfg.residual,
                          antialias=cfg.antialias)


def data_digest(photos: ImageSource, monet: Sequence[tuple[ImageSource, float]]) -> str:
    """The identity of a run's training data: photos, Monet sources and their weights."""
    return sources_digest([(photos, 1.0), *monet])


def run_fingerprint(cfg: CycleGANParams, seed: int, data: str, config: CycleGANConfig | None = None) -> dict[str, Any]:
    """What identifies a run: the resolved params that change what is learned, the networks, the seed
    and the data (`data_digest`); `epochs` / `decay_epochs` are checked apart, see `_check_schedule`."""
    cfg = cfg.resolved()
    return checkpoint.params_fingerprint(
        {"cyclegan": cfg.model_dump(mode="json"), "model": (config or model_config(cfg)).to_dict(), "seed": seed,
         "data": data},
        exclude=[f"cyclegan.{k}" for k in (*RUN_ONLY_KEYS, *_inert_keys(cfg))])


def _inert_keys(cfg: CycleGANParams) -> tuple[str, ...]:
    """Keys of a feature that is off: they change nothing learned, and a run started before the feature
    existed (its fingerprint lacks them) resumes."""
    return (("ada_target", "ada_kimg") if cfg.ada_target is None else ()) + \
        (("ema_kimg", "ema_rampup") if cfg.ema_kimg == 0 else ()) + \
        (("lambda_colour", "colour_pool") if cfg.lambda_colour == 0 else ()) + \
        (() if cfg.model == "patches" else PATCH_KEYS)


def lr_factor(epoch: int, epochs: int, decay_epochs: int) -> float:
    """Learning-rate multiplier of 0-based `epoch` (junyanz 'linear'), never below 0."""
    return max(0.0, 1.0 - max(0, epoch + 1 - epochs) / (decay_epochs + 1))


def steps_per_epoch(cfg: CycleGANParams, photos: int) -> int:
    """ceil(epoch_images / batch), with epoch_images = `photos` when cfg.epoch_images is null."""
    return math.ceil((cfg.epoch_images or photos) / cfg.batch)


def load_size(cfg: CycleGANParams) -> int:
    """Side images are loaded at before the random `size` crop: `load_size`, else 286/256 of the crop."""
    return cfg.load_size if cfg.load_size is not None else round(cfg.size * 286 / 256)


def _monet_sources(monet: Sequence[tuple[ImageSource, float]]) -> tuple[list[list[Path]], list[float]]:
    """The files and weights of the domain-B sources that count; weight 0 or no images: dropped."""
    files, weights, described = [], [], []
    for source, weight in monet:
        if weight < 0 or not math.isfinite(weight):
            raise ValueError(f"Monet source weights must be finite and >= 0, got {weight} for {source}")
        what, found = source_files(source)
        described.append(f"{what} ({len(found)} images, weight {weight:g})")
        if weight == 0 or not found:
            log.warning("Monet source %s dropped: %s", what, "weight 0" if weight == 0 else "no images")
            continue
        files.append(found)
        weights.append(float(weight))
    if not files:
        raise ValueError("no Monet images to train on (domain B): " + ("; ".join(described) or "no sources given"))
    return files, weights


def _fixed_photos(files: Sequence[Path], count: int, seed: int, size: int) -> torch.Tensor:
    """`count` photos chosen by `seed` (in file order), centre-cropped to `size`: uint8 (N, 3, S, S)."""
    pick = np.sort(np.random.default_rng(seed).choice(len(files), min(count, len(files)), replace=False))
    return torch.from_numpy(np.stack([load_image(files[i], size) for i in pick]))


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield module
    finally:
        module.train(was_training)


def _translate(G: nn.Module, photos: torch.Tensor, device: torch.device, precision: Precision) -> Iterator[torch.Tensor]:
    """G's outputs for uint8 photos, in chunks, as float CPU tensors in [-1, 1]."""
    with _eval_mode(G):
        for i in range(0, len(photos), EVAL_BATCH):
            x = precision.inputs(photos[i:i + EVAL_BATCH].to(device).float() / 127.5 - 1.0)
            with precision.autocast(device):
                yield G(x).float().cpu()


# --- the models: networks, pools and phases ---------------------------------------------------------


@dataclass
class Translator:
    """One model's parts: networks by name (G_AB always), the D image pools, the phases of a step."""

    nets: nn.ModuleDict
    pools: dict[str, ImagePool]
    phases: list[Phase] = field(default_factory=list)


def discriminator_augmentation(
    cfg: CycleGANParams, generator: torch.Generator,
) -> tuple[Callable[[torch.Tensor], torch.Tensor], AdaptiveAugment | None, AdaController | None]:
    """What D sees of every image: ADA's transforms (when ada_target is set) then DiffAugment's policy;
    with ADA on, also its transforms and the controller that tunes their p."""
    diff = make_augment("diffaugment", policy=cfg.diffaugment, generator=generator) if cfg.diffaugment \
        else make_augment("none")
    if cfg.ada_target is None:
        return diff, None, None
    transforms = AdaptiveAugment("bgc", 0.0, generator=generator)
    controller = AdaController(cfg.batch, target=cfg.ada_target, speed_kimg=cfg.ada_kimg, interval=ADA_INTERVAL,
                               sync=distributed.all_reduce_sum)
    return (lambda x: diff(transforms(x))), transforms, controller


def _observe_real(ada: AdaController, midpoint: float, real_out: torch.Tensor) -> None:
    """ADA's overfitting signal: the sign of D's outputs on reals measured from the loss's midpoint."""
    ada.accumulate(real_out.float() - midpoint)


def _adam(params: Any, cfg: CycleGANParams) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


def discriminator_loss(kind: str, D: nn.Module, augment: Callable, real: torch.Tensor, fake: torch.Tensor,
                       observe: Callable[[torch.Tensor], None] | None = None) -> torch.Tensor:
    """0.5 (loss of D on an augmented real + loss on an augmented fake); `observe` sees D's outputs on the reals."""
    real_out = D(augment(real))
    if observe is not None:
        observe(real_out)
    return 0.5 * (losses.gan_loss(kind, real_out, True) + losses.gan_loss(kind, D(augment(fake)), False))


def _colour_term(cfg: CycleGANParams, scalars: dict[str, torch.Tensor],
                 *pairs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor | float:
    """lambda_colour x the summed colour anchors of (translation, source) pairs, logged as loss/colour; 0 when off."""
    if cfg.lambda_colour == 0:
        return 0.0
    colour = sum(losses.colour_anchor(out, src, cfg.colour_pool) for out, src in pairs)
    scalars["loss/colour"] = colour
    return cfg.lambda_colour * colour


def build_cyclegan(cfg: CycleGANParams, config: CycleGANConfig, augment: Callable,
                   streams: dict[str, torch.Generator], observe: Callable[[torch.Tensor], None] | None) -> Translator:
    """G_AB, G_BA, D_A, D_B; a G phase (both generators) then a D phase (both discriminators). The
    batch dict holds photos "A" and paintings "B"; the G phase leaves its fakes there for D. `observe`
    sees D_B's outputs on the Monets (D_A judges thousands of photos: no few-shot overfitting to watch)."""
    nets = nn.ModuleDict({"G_AB": ResnetGenerator.from_config(config), "G_BA": ResnetGenerator.from_config(config),
                          "D_A": PatchDiscriminator.from_config(config), "D_B": PatchDiscriminator.from_config(config)})
    G_AB, G_BA, D_A, D_B = nets["G_AB"], nets["G_BA"], nets["D_A"], nets["D_B"]
    pools = {d: ImagePool(cfg.pool_size, rng=streams[f"pool_{d}"]) for d in "AB"}
    gens, discs = nn.ModuleList([G_AB, G_BA]), nn.ModuleList([D_A, D_B])
    kind, w_cycle, w_idt = cfg.gan_loss, cfg.lambda_cycle, cfg.lambda_cycle * cfg.lambda_identity

    def g_main(b: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        a, m = b["A"], b["B"]
        fake_b, fake_a = G_AB(a), G_BA(m)
        g_ab = losses.gan_loss(kind, D_B(augment(fake_b)), True, for_discriminator=False)
        g_ba = losses.gan_loss(kind, D_A(augment(fake_a)), True, for_discriminator=False)
        # Forward cycle || G_BA(G_AB(a)) - a ||_1, backward cycle || G_AB(G_BA(b)) - b ||_1.
        cycle_a = F.l1_loss(G_BA(fake_b).float(), a)
        cycle_b = F.l1_loss(G_AB(fake_a).float(), m)
        total = g_ab + g_ba + w_cycle * (cycle_a + cycle_b)
        scalars = {"loss/G_AB": g_ab, "loss/G_BA": g_ba, "loss/cycle_A": cycle_a, "loss/cycle_B": cycle_b}
        total = total + _colour_term(cfg, scalars, (fake_b, a), (fake_a, m))
        if w_idt > 0:
            # Identity: a painting fed to G_AB (a photo fed to G_BA) should come back unchanged.
            idt_a = F.l1_loss(G_BA(a).float(), a)
            idt_b = F.l1_loss(G_AB(m).float(), m)
            total = total + w_idt * (idt_a + idt_b)
            scalars |= {"loss/idt_A": idt_a, "loss/idt_B": idt_b}
        b["fake_A"], b["fake_B"] = fake_a.detach().float(), fake_b.detach().float()
        return total, {"loss/G": total, **scalars}

    def d_main(b: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss_a = discriminator_loss(kind, D_A, augment, b["A"], pools["A"].query(b["fake_A"]))
        loss_b = discriminator_loss(kind, D_B, augment, b["B"], pools["B"].query(b["fake_B"]), observe)
        return loss_a + loss_b, {"loss/D_A": loss_a, "loss/D_B": loss_b}

    phases = [Phase("G", gens, _adam(gens.parameters(), cfg), 1, g_main),
              Phase("D", discs, _adam(discs.parameters(), cfg), 1, d_main)]
    return Translator(nets, pools, phases)


def build_cut(cfg: CycleGANParams, config: CycleGANConfig, augment: Callable,
              streams: dict[str, torch.Generator], observe: Callable[[torch.Tensor], None] | None) -> Translator:
    """G_AB, the PatchNCE heads H and D_B; a G phase (G_AB and H together, one Adam) then a D phase.
    `observe` sees D_B's outputs on the Monets."""
    G = ResnetGenerator.from_config(config)
    H = PatchSampleMLP(G.tap_channels(), width=cfg.nce_width)
    D = PatchDiscriminator.from_config(config)
    nets = nn.ModuleDict({"G_AB": G, "H": H, "D_B": D})
    pools = {"B": ImagePool(cfg.pool_size, rng=streams["pool_B"])}
    gen = nn.ModuleList([G, H])
    kind, lam, idt, flip_eq = cfg.gan_loss, cfg.lambda_nce, cfg.nce_idt, cfg.flip_equivariance

    def nce(keys: list[torch.Tensor], queries: list[torch.Tensor]) -> torch.Tensor:
        """Mean over layers of the PatchNCE loss of query features against key features (same images)."""
        with torch.no_grad():
            k_proj, ids = H(keys, cfg.nce_patches, generator=streams["nce"])
        q_proj, _ = H(queries, cfg.nce_patches, ids)
        return torch.stack([losses.patch_nce_loss(q, k, cfg.nce_temperature) for q, k in zip(q_proj, k_proj)]).mean()

    def g_main(b: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        a, m = b["A"], b["B"]
        n = len(a)
        src = torch.cat([a, m]) if idt else a
        flipped = flip_eq and bool(torch.rand((), generator=streams["flip"]) < 0.5)
        out, taps = G(src.flip(3) if flipped else src, taps=True)
        fake_b = out[:n]
        g_adv = losses.gan_loss(kind, D(augment(fake_b)), True, for_discriminator=False)
        scalars = {"loss/G_AB": g_adv}
        total = g_adv
        # Against the photo as G saw it: a flipped step translated the flipped photo.
        total = total + _colour_term(cfg, scalars, (fake_b, a.flip(3) if flipped else a))
        if lam > 0:
            # Keys: the sources' own features, which the forward pass just computed (for a flipped
            # step, the unflipped sources' features: the translation's must match them flipped back).
            if flipped:
                with torch.no_grad():
                    taps = G.encode(src)
            keys = [t.detach() for t in taps]
            queries = G.encode(out)
            if flipped:
                queries = [q.flip(3) for q in queries]
            loss_x = nce([k[:n] for k in keys], [q[:n] for q in queries])
            scalars["loss/NCE"] = loss_x
            if idt:
                loss_y = nce([k[n:] for k in keys], [q[n:] for q in queries])
                scalars["loss/NCE_Y"] = loss_y
                loss_x = 0.5 * (loss_x + loss_y)
            total = total + lam * loss_x
        b["fake_B"] = fake_b.detach().float()
        return total, {"loss/G": total, **scalars}

    def d_main(b: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss_b = discriminator_loss(kind, D, augment, b["B"], pools["B"].query(b["fake_B"]), observe)
        return loss_b, {"loss/D_B": loss_b}

    phases = [Phase("G", gen, _adam(gen.parameters(), cfg), 1, g_main),
              Phase("D", D, _adam(D.parameters(), cfg), 1, d_main)]
    return Translator(nets, pools, phases)


@dataclass(frozen=True)
class TranslatorRecipe:
    """How to build a model, and the random streams (besides `augment`) its phases draw from."""

    build: Callable[[CycleGANParams, CycleGANConfig, Callable, dict[str, torch.Generator],
                     Callable[[torch.Tensor], None] | None], Translator]
    streams: tuple[str, ...]


RECIPES = {
    "cyclegan": TranslatorRecipe(build_cyclegan, ("pool_A", "pool_B")),
    "cut": TranslatorRecipe(build_cut, ("pool_B", "nce", "flip")),
    "fastcut": TranslatorRecipe(build_cut, ("pool_B", "nce", "flip")),
}


# --- metrics and checks -----------------------------------------------------------------------------


def _make_evaluator(cfg: CycleGANParams, photo_files: list[Path], reference: Path | None, *, seed: int,
                    device: torch.device, precision: Precision, cache: Path | None, scratch: Path
                    ) -> Callable[[nn.Module], dict[str, float]] | None:
    """The metric probe for this run, or None (logged why) when metrics are off or impossible."""
    refs = list_images(reference) if cfg.eval_every and reference is not None else []
    why = ("eval_every is null" if not cfg.eval_every else "no reference folder given" if reference is None
           else f"reference {reference} holds {len(refs)} image(s), needs >= 2" if len(refs) < 2
           else "fewer than 2 photos" if len(photo_files) < 2 else None)
    if why:
        log.info("FID/KID/MiFID off: %s", why)
        return None
    if cfg.eval_images > len(photo_files):
        log.info("cyclegan.eval_images = %d but only %d photos: translating them all",
                 cfg.eval_images, len(photo_files))
    photos = _fixed_photos(photo_files, cfg.eval_images, derive_seed(seed, "eval"), EVAL_SIZE)
    probe = MetricProbe(refs, seed=derive_seed(seed, "kid"), device=device, cache=cache, workers=cfg.workers,
                        scratch=scratch)
    return lambda G_AB: probe(_translate(G_AB, photos, device, precision))


def _check_schedule(saved: dict[str, int], cfg: CycleGANParams, started_epochs: int, source: str) -> None:
    """ParamsMismatch unless the new epochs / decay_epochs give every epoch already (partly)
    trained the learning rate it was trained with."""
    old = [lr_factor(e, saved["epochs"], saved["decay_epochs"]) for e in range(started_epochs)]
    new = [lr_factor(e, cfg.epochs, cfg.decay_epochs) for e in range(started_epochs)]
    if old != new:
        raise checkpoint.ParamsMismatch(
            f"cannot resume from {source}: cyclegan.epochs / decay_epochs {saved['epochs']} / "
            f"{saved['decay_epochs']} -> {cfg.epochs} / {cfg.decay_epochs} change the learning rate of the "
            f"{started_epochs} epoch(s) already trained. Restore those values, or train into a fresh output folder.")


# --- the loop ---------------------------------------------------------------------------------------


def build_patch_translator(cfg: CycleGANParams, *, photos: ImageSource, monet: Sequence[tuple[ImageSource, float]],
                           out_dir: Path, live_dir: Path | None, device: torch.device | str, seed: int,
                           precision: Precision = FP32) -> dict[str, float]:
    """The `patches` translator (`models.patch_transfer`): nothing is learned, so its "training" gathers
    every painting of the Monet sources with a weight above 0 (at 256 px, the scale `translate` works at)
    into `out_dir/photo2monet.pt`, and logs the translation grid of `grid_size` photos. Returns the
    paintings and bank patches counted."""
    files = [f for group in _monet_sources(monet)[0] for f in group]
    paintings = torch.from_numpy(np.stack([load_image(f, EVAL_SIZE) for f in files]))
    model = PatchTransfer(patch_config(cfg), paintings)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint.save_patch_translator(out_dir / PHOTO2MONET_FILE, config=model.config.to_dict(), paintings=paintings)
    stats = {"patches/paintings": float(len(files)), "patches/bank": float(model.bank_size)}
    log.info("patches: %d paintings, %d bank patches -> %s", len(files), model.bank_size, out_dir / PHOTO2MONET_FILE)
    with LiveLog(live_dir) as live:
        if live.enabled:
            _, photo_files = source_files(photos)
            if not photo_files:
                raise FileNotFoundError(f"no photos found in {photos}")
            grid_photos = _fixed_photos(photo_files, cfg.grid_size, derive_seed(seed, "grid"), EVAL_SIZE)
            fakes = torch.cat(list(_translate(model.to(device), grid_photos, torch.device(device), precision)))
            live.image("translations/0.png",
                       image_grid(torch.cat([grid_photos.float() / 127.5 - 1.0, fakes]), ncols=len(grid_photos)))
            live.log(0, stats)
    return stats


def patch_config(cfg: CycleGANParams) -> PatchTransferConfig:
    """The `patches` translator's settings from the params' patch_* keys."""
    return PatchTransferConfig(patch=cfg.patch_size, bank_stride=cfg.patch_stride, descriptor=cfg.patch_descriptor,
                               colour=cfg.patch_colour, detail=cfg.patch_detail, texture=cfg.patch_texture,
                               choices=cfg.patch_choices, photo_detail=cfg.patch_photo_detail)


def train_translator(
    cfg: CycleGANParams,
    *,
    photos: ImageSource,
    monet: Sequence[tuple[ImageSource, float]],
    out_dir: Path,
    live_dir: Path | None,
    device: torch.device | str,
    seed: int,
    precision: Precision = FP32,
    eval_reference: Path | None = None,
    metrics_cache: Path | None = None,
    model: CycleGANConfig | None = None,
    progress: bool = True,
    max_steps: int | None = None,
    warn_hours: float | None = None,
) -> dict[str, float]:
    """Train `cfg.model` (CycleGAN, CUT or FastCUT; `patches` learns nothing: `build_patch_translator`)
    between `photos` (a folder or files) and `monet`
    ((folder or files, sampling weight) pairs) for cfg.epochs + cfg.decay_epochs epochs.

    Writes to `out_dir`: `state-<epoch>.pt` (full state after every epoch, newest `keep_snapshots`
    kept), `photo2monet.pt` (G_AB for inference, its moving average when `ema_kimg` > 0, see
    `checkpoint.load_photo2monet`: the last epoch's, or with `select: best` the evaluated epoch of lowest
    in-training KID, tracked in the state) and `losses.jsonl`
    (every step's losses). Epoch means, the learning rate, speed, the translation grid and, every
    `eval_every` epochs and at the end, FID / KID / MiFID of `eval_images` photos translated at 256 px
    against `eval_reference` (features cached in `metrics_cache`) go to dvclive in `live_dir` (None: not
    logged). Forward passes run under `precision`'s autocast and memory format. Resumes from the newest
    state in `out_dir` (refusing changed params). `model` overrides the networks built from cfg's widths.
    `max_steps` stops after that many steps of this call, saving the state. After the first steps it
    logs the expected duration, and warns once when that exceeds `warn_hours` on a CPU. Returns the
    last epoch's scalars. Raises TrainingDiverged on a non-finite loss, FileNotFoundError when there are
    no photos, ValueError when no Monet source has images.
    """
    cfg = cfg.resolved()
    if cfg.model == "patches":
        return build_patch_translator(cfg, photos=photos, monet=monet, out_dir=out_dir, live_dir=live_dir,
                                      device=device, seed=seed, precision=precision)
    device = distributed.init_from_env(device)
    world, rank, main = distributed.world_size(), distributed.rank(), distributed.is_main()
    local_batch = distributed.local_batch(cfg.batch, "cyclegan.batch")
    out_dir = Path(out_dir)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(out_dir)

    # --- data: photos (A) and the weighted Monet sources (B), loaded at load_size, cropped to size
    monet_files, monet_weights = _monet_sources(monet)
    workers, loaded = max(1, cfg.workers), load_size(cfg)
    photo_data = ImageDataset([(photos, 1)], cfg.size, load_size=loaded, workers=workers)
    monet_data = ImageDataset([(f, 1) for f in monet_files], cfg.size, load_size=loaded, workers=workers)
    photo_sampler = InfiniteSampler(len(photo_data), seed=derive_seed(seed, "photos"), mirror=cfg.mirror,
                                    crop=photo_data.crop_range, rank=rank, world=world)
    monet_sampler = WeightedSampler([len(f) for f in monet_files], monet_weights, seed=derive_seed(seed, "monet"),
                                    mirror=cfg.mirror, crop=monet_data.crop_range, rank=rank, world=world)
    spe = steps_per_epoch(cfg, len(photo_data))
    total_steps = (cfg.epochs + cfg.decay_epochs) * spe

    # --- networks, optimisers, pools, augmentation: identical on every process at start
    seed_everything(seed)
    config = model or model_config(cfg)
    if not isinstance(config, CycleGANConfig):
        raise TypeError(f"model must be a CycleGANConfig, got a {type(config).__name__}")
    recipe = RECIPES[cfg.model]
    generators = {name: torch.Generator().manual_seed(derive_seed(seed, name, rank))
                  for name in ("augment", *recipe.streams)}
    augment, ada_transforms, ada = discriminator_augmentation(cfg, generators["augment"])
    observe = None if ada is None else functools.partial(_observe_real, ada, REAL_MIDPOINT[cfg.gan_loss])
    parts = recipe.build(cfg, config, augment, generators, observe)  # the same initial weights on every process
    torch.manual_seed(derive_seed(seed, "torch", rank))
    nets, pools, phases = parts.nets, parts.pools, parts.phases
    precision.prepare(nets.to(device).train().requires_grad_(False))
    G_ema = make_ema(nets["G_AB"]) if cfg.ema_kimg > 0 else None
    product = nets["G_AB"] if G_ema is None else G_ema  # what photo2monet.pt, the grid and the metrics translate with
    fingerprint = run_fingerprint(cfg, seed, data_digest(photos, monet), config)
    opts = {f"opt_{phase.name}": phase.opt for phase in phases}

    # --- resume this run, or start
    step = 0
    stats: dict[str, float] = {}
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    best: dict[str, float] = {}  # select: best -> {"kid", "epoch"} of the epoch photo2monet.pt holds
    state_file = checkpoint.latest_state(out_dir)
    if state_file is not None:
        state = checkpoint.load_state(state_file)
        checkpoint.check_params(state["params"], fingerprint, source=str(state_file))
        step = state["progress"]["step"]
        if step < total_steps:
            _check_schedule(state["schedule"], cfg, math.ceil(step / spe), str(state_file))
        for name, net in nets.items():
            net.load_state_dict(state[name])
        if G_ema is not None:
            G_ema.load_state_dict(state["G_ema"])
        for name, opt in opts.items():
            opt.load_state_dict(state[name])
        photo_sampler.load_state_dict(state["samplers"]["photos"])
        monet_sampler.load_state_dict(state["samplers"]["monet"])
        stats = dict(state.get("stats", {}))
        best = dict(state.get("best", {}))
        if ada is not None:
            ada.load_state_dict(state["ada"])
            ada_transforms.p = ada.p
        local = state["local"]
        if len(local) == world:
            checkpoint.set_rng_state(local[rank]["rng"], generators)
            for d, pool in pools.items():
                pool.load_state_dict(local[rank]["pools"][d])
            sums, counts = dict(local[rank]["sums"]), dict(local[rank]["counts"])
        else:
            log.warning("state saved by %d processes, resumed by %d: random streams and image pools restart",
                        len(local), world)
        del state
        log.info("resuming from epoch %d step %d (%s)", step // spe, step, state_file.name)
    if main and state_file is None:
        (out_dir / LOSSES_FILE).unlink(missing_ok=True)
    elif main:
        truncate_losses(out_dir / LOSSES_FILE, step)
    if step >= total_steps:
        log.info("already trained %d steps >= %d epochs of %d; nothing to do", step,
                 cfg.epochs + cfg.decay_epochs, spe)
        return stats

    evaluator = _make_evaluator(cfg, photo_data.files, eval_reference, seed=seed, device=device, precision=precision,
                                cache=metrics_cache, scratch=out_dir) if main else None
    if main and cfg.select == "best" and evaluator is None:
        raise ValueError("cyclegan.select: best needs the in-training KID, but metrics are off (no reference "
                         "folder with images, or eval_every null); use select: last")

    def save(epoch: float, publish: bool) -> None:
        """Full state (every process's pools, RNG streams and partial sums); rank 0 writes. `publish`
        also writes G_AB to photo2monet.pt."""
        local = distributed.all_gather_object({
            "rng": checkpoint.rng_state(generators), "pools": {d: p.state_dict() for d, p in pools.items()},
            "sums": dict(sums), "counts": dict(counts)})
        if main:
            state = {
                "format": 1, "arch": cfg.model, "config": config.to_dict(), "epoch": epoch,
                "params": fingerprint, "params_hash": checkpoint.params_hash(fingerprint),
                "schedule": {"epochs": cfg.epochs, "decay_epochs": cfg.decay_epochs},
                **{name: net.state_dict() for name, net in nets.items()},
                **{name: opt.state_dict() for name, opt in opts.items()},
                "progress": {"step": step, "epoch": step // spe, "steps_per_epoch": spe},
                "samplers": {"photos": photo_sampler.state_dict(), "monet": monet_sampler.state_dict()},
                "local": local, "stats": stats, "best": best,
                "ada": None if ada is None else ada.state_dict(),
                **({} if G_ema is None else {"G_ema": G_ema.state_dict()}),
            }
            if publish:  # before the state: a state that records a best always has its photo2monet.pt
                checkpoint.save_photo2monet(out_dir / PHOTO2MONET_FILE, arch=cfg.model, config=config.to_dict(),
                                            generator=product, epoch=epoch)
            path = checkpoint.save_state(out_dir, state, kimg=epoch, keep=cfg.keep_snapshots)
            log.info("saved %s", path.name)
        distributed.barrier()

    live = LiveLog(live_dir, resume=state_file is not None, resume_step=step // spe)
    grid_photos = _fixed_photos(photo_data.files, cfg.grid_size, derive_seed(seed, "grid"), EVAL_SIZE) \
        if live.enabled else None
    losses_log = open(out_dir / LOSSES_FILE, "a") if main else None
    bar = tqdm(total=total_steps, initial=step, unit="step", desc=f"train {cfg.model}",
               disable=not (progress and main))
    clock = RunClock(total_steps - step, unit="step", device=device, warn_hours=warn_hours if main else None)
    epoch_start_step, epoch_start_time, steps_run = step, time.time(), 0
    try:
        while True:
            # --- one minibatch: the G phase, then the D phase
            epoch = step // spe
            lr = cfg.lr * lr_factor(epoch, cfg.epochs, cfg.decay_epochs)
            for opt in opts.values():
                for group in opt.param_groups:
                    group["lr"] = lr
            batch = {"A": precision.inputs(photo_data.batch(*photo_sampler.next_items(local_batch)).to(device)),
                     "B": precision.inputs(monet_data.batch(*monet_sampler.next_items(local_batch)).to(device))}
            row: dict[str, float] = {"step": step, "epoch": epoch}
            for phase in phases:
                scalars = run_phase(phase, batch, precision, device, world=world, out_dir=out_dir,
                                    where=f"step {step} (epoch {epoch}), phase {phase.name}")
                for name, v in scalars.items():
                    row[name] = v
                    sums[name] = sums.get(name, 0.0) + v
                    counts[name] = counts.get(name, 0) + 1
            if G_ema is not None:
                beta = ema_beta(cfg.batch, cfg.ema_kimg, (step + 1) * cfg.batch, cfg.ema_rampup)
                update_ema(G_ema, nets["G_AB"], beta)
            if ada is not None:
                ada_transforms.p = row["aug/p"] = ada.step()
            if losses_log is not None:
                losses_log.write(json.dumps(row) + "\n")
            step, steps_run = step + 1, steps_run + 1
            bar.update(1)
            clock.tick(steps_run)
            stop = step >= total_steps or (max_steps is not None and steps_run >= max_steps)

            if step % spe:
                if stop:  # stopped mid-epoch: keep the partial epoch's position and sums
                    if losses_log is not None:
                        losses_log.flush()
                    save(math.floor(step / spe * 1000) / 1000, publish=cfg.select == "last")
                    break
                continue

            # --- once per epoch: log, translation grid, metrics, snapshot
            elapsed = time.time() - epoch_start_time
            names = sorted(sums)
            means = distributed.all_reduce_mean(
                torch.tensor([sums[k] / counts[k] for k in names], dtype=torch.float64)).tolist()
            stats = dict(zip(names, means))
            stats["progress/epoch"] = float(epoch + 1)
            stats["optim/lr"] = lr
            stats["speed/images_per_sec"] = (step - epoch_start_step) * cfg.batch / max(elapsed, 1e-9)
            if ada is not None:
                stats["aug/p"] = ada.p
                if ada.r_t is not None:
                    stats["aug/r_t"] = ada.r_t
            if grid_photos is not None:
                fakes = torch.cat(list(_translate(product, grid_photos, device, precision)))
                grid = image_grid(torch.cat([grid_photos.float() / 127.5 - 1.0, fakes]), ncols=len(grid_photos))
                live.image(f"translations/{epoch}.png", grid)  # dvclive's step-numbered slider layout
            publish = cfg.select == "last"
            if cfg.eval_every and ((epoch + 1) % cfg.eval_every == 0 or step >= total_steps):
                if evaluator is not None:
                    stats.update(evaluator(product))
                    if cfg.select == "best" and (not best or stats["metrics/kid"] < best["kid"]):
                        best, publish = {"kid": stats["metrics/kid"], "epoch": float(epoch + 1)}, True
                    if best:
                        stats["metrics/best_kid"] = best["kid"]
                distributed.barrier()
            live.log(epoch, stats)
            log.info("epoch %d/%d %s", epoch + 1, cfg.epochs + cfg.decay_epochs,
                     " ".join(f"{k}={v:.4g}" for k, v in stats.items() if k != "progress/epoch"))
            bar.set_postfix({k.split("/")[-1]: f"{v:.3g}" for k, v in stats.items() if k.startswith("loss/")})
            sums, counts = {}, {}
            if losses_log is not None:
                losses_log.flush()
            save(float(epoch + 1), publish)
            epoch_start_step, epoch_start_time = step, time.time()
            if stop:
                if best and step >= total_steps:
                    log.info("%s holds epoch %g, the lowest in-training KID (%.4g)", PHOTO2MONET_FILE,
                             best["epoch"], best["kid"])
                break
    finally:
        bar.close()
        live.close()
        if losses_log is not None:
            losses_log.close()
    return stats
