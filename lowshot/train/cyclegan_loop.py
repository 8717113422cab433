"""The CycleGAN training loop: photo -> Monet translation with DiffAugment on the discriminators.

Follows Zhu et al. 2017 as trained by junyanz/pytorch-CycleGAN-and-pix2pix (`models/cycle_gan_model.py`
for the losses, `train.py` for the epochs, `models/networks.py` `get_scheduler('linear')` for the
learning rate, `data/base_dataset.py` "resize_and_crop" for the data), laid out like `gan_loop`:
each minibatch runs a G phase then a D phase (`gan_loop.Phase`); once per epoch we log, draw the
fixed translation grid, measure FID / KID / MiFID when due and save the full state.

Naming: domain A = photos, domain B = Monet paintings (several sources mixed by sampling weight).
G_AB translates A -> B (the product, saved as `photo2monet.pt`), G_BA the way back; D_A judges
domain A (real photos vs G_BA's fakes), D_B domain B. (junyanz's D_A judges G_A's outputs, i.e.
domain B.) Per-step losses (`losses.jsonl`, and their epoch means in dvclive): `loss/G` (the
weighted total the generators minimise), `loss/G_AB`, `loss/G_BA` (adversarial), `loss/cycle_A`
= |G_BA(G_AB(a)) - a|_1, `loss/cycle_B`, `loss/idt_A` = |G_BA(a) - a|_1, `loss/idt_B` (plain L1s;
the weights apply inside loss/G; identity only when lambda_identity > 0), `loss/D_A`, `loss/D_B`
= 0.5 (real term + term of a fake from the image pool).

An epoch is `epoch_images` photos (every photo once when null), ceil(epoch_images / batch) steps.
Learning rate: junyanz's "linear" rule, lr * (1 - max(0, e + 1 - epochs) / (decay_epochs + 1)) in
0-based epoch e: constant for `epochs`, then `decay_epochs` steps down, the last at
lr / (decay_epochs + 1), reaching 0 where training ends.

Checkpoints: `state-<epoch>.pt` via `checkpoint.save_state`, the epoch count standing in
checkpoint's kimg slot (state-000003.000.pt after 3 epochs; a run stopped mid-epoch by `max_steps`
saves e.g. state-000002.500.pt, step / steps_per_epoch floored to 3 decimals). Unlike junyanz
(`--continue_train --epoch_count`), a run resumes by itself and exactly: networks, Adam, the data
position, each process's image pools, augmentation and global RNG streams, the partial epoch's
loss sums. A resumed run must equal a fresh run with the current params: a changed fingerprint is
refused, and `epochs` / `decay_epochs` may change only if the learning rate of every epoch already
(partly) trained stays the same (e.g. lengthening a run still in its constant phase).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from lowshot.augment import make_augment
from lowshot.fsutil import atomic_path, remove_stale_temps
from lowshot.images.folder import list_images
from lowshot.images.grid import image_grid
from lowshot.metrics.probe import MetricProbe
from lowshot.models.cyclegan import CycleGANConfig, PatchDiscriminator, ResnetGenerator
from lowshot.params import CycleGANParams
from lowshot.runtime import seed_everything
from lowshot.train import checkpoint, distributed, losses
from lowshot.train.data import (ImageDataset, ImageSource, InfiniteSampler, WeightedSampler, load_image, source_files,
                                sources_digest)
from lowshot.train.gan_loop import (LOSSES_FILE, Phase, TrainingDiverged, derive_seed, raise_if_diverged,
                                    truncate_losses)
from lowshot.train.image_pool import ImagePool
from lowshot.train.live import LiveLog

log = logging.getLogger(__name__)

__all__ = ["PHOTO2MONET_FILE", "RUN_ONLY_KEYS", "TrainingDiverged", "load_photo2monet", "load_size",
           "data_digest", "lr_factor", "model_config", "run_fingerprint", "steps_per_epoch", "train_cyclegan"]

# CycleGANParams keys that do not change what is learned. epochs / decay_epochs are checked apart
# (they shape the learning rate; see the module docstring).
RUN_ONLY_KEYS = ("epochs", "decay_epochs", "eval_every", "eval_images", "grid_size", "keep_snapshots", "workers")
PHOTO2MONET_FILE = "photo2monet.pt"
EVAL_BATCH = 16  # photos per G_AB forward pass when translating for the grid and the metrics


# --- schedule and data ------------------------------------------------------------------------------


def model_config(cfg: CycleGANParams) -> CycleGANConfig:
    """The networks' shape from the params' widths."""
    return CycleGANConfig(ngf=cfg.ngf, ndf=cfg.ndf, g_blocks=cfg.g_blocks, d_layers=cfg.d_layers)


def data_digest(photos: ImageSource, monet: Sequence[tuple[ImageSource, float]]) -> str:
    """The identity of a run's training data: photos, Monet sources and their weights."""
    return sources_digest([(photos, 1.0), *monet])


def run_fingerprint(cfg: CycleGANParams, seed: int, data: str, config: CycleGANConfig | None = None) -> dict[str, Any]:
    """What identifies a run: the params that change what is learned, the networks, the seed and the
    data (`data_digest`); `epochs` / `decay_epochs` are checked apart, see `_check_schedule`."""
    return checkpoint.params_fingerprint(
        {"cyclegan": cfg.model_dump(mode="json"), "model": (config or model_config(cfg)).to_dict(), "seed": seed,
         "data": data},
        exclude=[f"cyclegan.{k}" for k in RUN_ONLY_KEYS])


def lr_factor(epoch: int, epochs: int, decay_epochs: int) -> float:
    """Learning-rate multiplier of 0-based `epoch` (junyanz 'linear'), never below 0."""
    return max(0.0, 1.0 - max(0, epoch + 1 - epochs) / (decay_epochs + 1))


def steps_per_epoch(cfg: CycleGANParams, photos: int) -> int:
    """ceil(epoch_images / batch), with epoch_images = `photos` when cfg.epoch_images is null."""
    return math.ceil((cfg.epoch_images or photos) / cfg.batch)


def load_size(size: int) -> int:
    """Side images are loaded at before the random `size` crop: 286 for 256, as the paper."""
    return round(size * 286 / 256)


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


def _translate(G: nn.Module, photos: torch.Tensor, device: torch.device) -> Iterator[torch.Tensor]:
    """G's outputs for uint8 photos, in chunks, as float CPU tensors in [-1, 1]."""
    with _eval_mode(G):
        for i in range(0, len(photos), EVAL_BATCH):
            yield G(photos[i:i + EVAL_BATCH].to(device).float() / 127.5 - 1.0).float().cpu()


# --- the inference snapshot -------------------------------------------------------------------------


def save_photo2monet(path: Path, G_AB: nn.Module, config: CycleGANConfig, epoch: float) -> None:
    """Write {arch, config, G_AB weights, epoch} atomically: what `load_photo2monet` needs."""
    weights = {k: v.detach().cpu() for k, v in G_AB.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"arch": "cyclegan", "config": config.to_dict(), "G_AB": weights, "epoch": float(epoch)}, tmp)


def load_photo2monet(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The photo -> Monet generator of a `photo2monet.pt` (or of a CycleGAN state file) on `device`,
    in eval mode with gradients off; it maps (N, 3, H, W) in [-1, 1] (H, W multiples of 4) to the
    same shape. The module carries `.config_dict` and `.epoch`."""
    snap = checkpoint.load_state(path)
    if snap.get("arch") != "cyclegan" or "G_AB" not in snap:
        raise ValueError(f"{path} is not a lowshot CycleGAN snapshot or state (arch {snap.get('arch')!r})")
    G = ResnetGenerator.from_config(CycleGANConfig.from_dict(snap["config"]))
    G.load_state_dict(snap["G_AB"])
    G.config_dict, G.epoch = dict(snap["config"]), float(snap["epoch"])
    return G.to(device).eval().requires_grad_(False)


# --- phases, metrics, checks ------------------------------------------------------------------------


def make_phases(cfg: CycleGANParams, nets: nn.ModuleDict, augment: Any, pools: dict[str, ImagePool]) -> list[Phase]:
    """The G phase (both generators) then the D phase (both discriminators) of one minibatch.
    The batch dict holds photos "A" and paintings "B"; the G phase leaves its fakes there for D."""
    G_AB, G_BA, D_A, D_B = nets["G_AB"], nets["G_BA"], nets["D_A"], nets["D_B"]
    gens, discs = nn.ModuleList([G_AB, G_BA]), nn.ModuleList([D_A, D_B])
    betas = (cfg.beta1, cfg.beta2)
    opt_g = torch.optim.Adam(gens.parameters(), lr=cfg.lr, betas=betas)
    opt_d = torch.optim.Adam(discs.parameters(), lr=cfg.lr, betas=betas)
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
        if w_idt > 0:
            # Identity: a painting fed to G_AB (a photo fed to G_BA) should come back unchanged.
            idt_a = F.l1_loss(G_BA(a).float(), a)
            idt_b = F.l1_loss(G_AB(m).float(), m)
            total = total + w_idt * (idt_a + idt_b)
            scalars |= {"loss/idt_A": idt_a, "loss/idt_B": idt_b}
        b["fake_A"], b["fake_B"] = fake_a.detach().float(), fake_b.detach().float()
        return total, {"loss/G": total, **scalars}

    def d_loss(D: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return 0.5 * (losses.gan_loss(kind, D(augment(real)), True) + losses.gan_loss(kind, D(augment(fake)), False))

    def d_main(b: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss_a = d_loss(D_A, b["A"], pools["A"].query(b["fake_A"]))
        loss_b = d_loss(D_B, b["B"], pools["B"].query(b["fake_B"]))
        return loss_a + loss_b, {"loss/D_A": loss_a, "loss/D_B": loss_b}

    return [Phase("G", gens, opt_g, 1, g_main), Phase("D", discs, opt_d, 1, d_main)]


def _make_evaluator(cfg: CycleGANParams, photo_files: list[Path], reference: Path | None, *, seed: int,
                    device: torch.device, cache: Path | None, scratch: Path
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
    photos = _fixed_photos(photo_files, cfg.eval_images, derive_seed(seed, "eval"), cfg.size)
    probe = MetricProbe(refs, seed=derive_seed(seed, "kid"), device=device, cache=cache, workers=cfg.workers,
                        scratch=scratch)
    return lambda G_AB: probe(_translate(G_AB, photos, device))


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


def train_cyclegan(
    cfg: CycleGANParams,
    *,
    photos: ImageSource,
    monet: Sequence[tuple[ImageSource, float]],
    out_dir: Path,
    live_dir: Path | None,
    device: torch.device | str,
    seed: int,
    eval_reference: Path | None = None,
    metrics_cache: Path | None = None,
    model: CycleGANConfig | None = None,
    progress: bool = True,
    max_steps: int | None = None,
) -> dict[str, float]:
    """Train CycleGAN between `photos` (a folder or files) and `monet` ((folder or files, sampling
    weight) pairs) for cfg.epochs + cfg.decay_epochs epochs.

    Writes to `out_dir`: `state-<epoch>.pt` (full state after every epoch, newest
    `keep_snapshots` kept), `photo2monet.pt` (G_AB for inference, see `load_photo2monet`) and
    `losses.jsonl` (every step's losses). Epoch means, the learning rate, speed, the translation
    grid and, every `eval_every` epochs and at the end, FID / KID / MiFID of `eval_images`
    translated photos against `eval_reference` (features cached in `metrics_cache`) go to dvclive
    in `live_dir` (None: not logged). Resumes from the newest state in `out_dir` (refusing changed
    params). `model` overrides the networks built from cfg's widths. `max_steps` stops after that
    many steps of this call, saving the state. Returns the last epoch's scalars. Raises
    TrainingDiverged on a non-finite loss, FileNotFoundError when there are no photos, ValueError
    when no Monet source has images.
    """
    device = distributed.init_from_env(device)
    world, rank, main = distributed.world_size(), distributed.rank(), distributed.is_main()
    local_batch = distributed.local_batch(cfg.batch, "cyclegan.batch")
    out_dir = Path(out_dir)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(out_dir)

    # --- data: photos (A) and the weighted Monet sources (B), loaded at 286/256 of the crop
    monet_files, monet_weights = _monet_sources(monet)
    workers, loaded = max(1, cfg.workers), load_size(cfg.size)
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
    nets = nn.ModuleDict({"G_AB": ResnetGenerator.from_config(config), "G_BA": ResnetGenerator.from_config(config),
                          "D_A": PatchDiscriminator.from_config(config), "D_B": PatchDiscriminator.from_config(config)})
    nets.to(device).train().requires_grad_(False)
    fingerprint = run_fingerprint(cfg, seed, data_digest(photos, monet), config)
    generators = {name: torch.Generator().manual_seed(derive_seed(seed, name, rank))
                  for name in ("augment", "pool_A", "pool_B")}
    torch.manual_seed(derive_seed(seed, "torch", rank))
    augment = make_augment("diffaugment", policy=cfg.diffaugment, generator=generators["augment"]) \
        if cfg.diffaugment else make_augment("none")
    pools = {d: ImagePool(cfg.pool_size, rng=generators[f"pool_{d}"]) for d in "AB"}
    phases = make_phases(cfg, nets, augment, pools)
    opts = {"opt_G": phases[0].opt, "opt_D": phases[1].opt}

    # --- resume this run, or start
    step = 0
    stats: dict[str, float] = {}
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    state_file = checkpoint.latest_state(out_dir)
    if state_file is not None:
        state = checkpoint.load_state(state_file)
        checkpoint.check_params(state["params"], fingerprint, source=str(state_file))
        step = state["progress"]["step"]
        if step < total_steps:
            _check_schedule(state["schedule"], cfg, math.ceil(step / spe), str(state_file))
        for name, net in nets.items():
            net.load_state_dict(state[name])
        for name, opt in opts.items():
            opt.load_state_dict(state[name])
        photo_sampler.load_state_dict(state["samplers"]["photos"])
        monet_sampler.load_state_dict(state["samplers"]["monet"])
        stats = dict(state.get("stats", {}))
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

    evaluator = _make_evaluator(cfg, photo_data.files, eval_reference, seed=seed, device=device,
                                cache=metrics_cache, scratch=out_dir) if main else None
    autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=cfg.bf16)

    def save(epoch: float) -> None:
        """Full state (every process's pools, RNG streams and partial sums); rank 0 writes."""
        local = distributed.all_gather_object({
            "rng": checkpoint.rng_state(generators), "pools": {d: p.state_dict() for d, p in pools.items()},
            "sums": dict(sums), "counts": dict(counts)})
        if main:
            state = {
                "format": 1, "arch": "cyclegan", "config": config.to_dict(), "epoch": epoch,
                "params": fingerprint, "params_hash": checkpoint.params_hash(fingerprint),
                "schedule": {"epochs": cfg.epochs, "decay_epochs": cfg.decay_epochs},
                **{name: net.state_dict() for name, net in nets.items()},
                **{name: opt.state_dict() for name, opt in opts.items()},
                "progress": {"step": step, "epoch": step // spe, "steps_per_epoch": spe},
                "samplers": {"photos": photo_sampler.state_dict(), "monet": monet_sampler.state_dict()},
                "local": local, "stats": stats,
            }
            path = checkpoint.save_state(out_dir, state, kimg=epoch, keep=cfg.keep_snapshots)
            save_photo2monet(out_dir / PHOTO2MONET_FILE, nets["G_AB"], config, epoch)
            log.info("saved %s", path.name)
        distributed.barrier()

    live = LiveLog(live_dir, resume=state_file is not None, resume_step=step // spe)
    grid_photos = _fixed_photos(photo_data.files, cfg.grid_size, derive_seed(seed, "grid"), cfg.size) \
        if live.enabled else None
    losses_log = open(out_dir / LOSSES_FILE, "a") if main else None
    bar = tqdm(total=total_steps, initial=step, unit="step", desc="train cyclegan", disable=not (progress and main))
    epoch_start_step, epoch_start_time, steps_run = step, time.time(), 0
    try:
        while True:
            # --- one minibatch: the G phase, then the D phase
            epoch = step // spe
            lr = cfg.lr * lr_factor(epoch, cfg.epochs, cfg.decay_epochs)
            for opt in opts.values():
                for group in opt.param_groups:
                    group["lr"] = lr
            batch = {"A": photo_data.batch(*photo_sampler.next_items(local_batch)).to(device),
                     "B": monet_data.batch(*monet_sampler.next_items(local_batch)).to(device)}
            row: dict[str, float] = {"step": step, "epoch": epoch}
            for phase in phases:
                phase.module.requires_grad_(True)
                phase.opt.zero_grad(set_to_none=True)
                with torch.autocast(**autocast):
                    total, scalars = phase.loss(batch)
                values = torch.stack([v.detach().float() for v in (total, *scalars.values())])
                raise_if_diverged(values, ["total", *scalars], world=world, out_dir=out_dir,
                                   where=f"step {step} (epoch {epoch}), phase {phase.name}")
                total.backward()
                distributed.average_gradients(phase.module.parameters())
                phase.module.requires_grad_(False)
                phase.opt.step()
                for name, v in zip(scalars, values[1:].tolist()):
                    row[name] = v
                    sums[name] = sums.get(name, 0.0) + v
                    counts[name] = counts.get(name, 0) + 1
            if losses_log is not None:
                losses_log.write(json.dumps(row) + "\n")
            step, steps_run = step + 1, steps_run + 1
            bar.update(1)
            stop = step >= total_steps or (max_steps is not None and steps_run >= max_steps)

            if step % spe:
                if stop:  # stopped mid-epoch: keep the partial epoch's position and sums
                    if losses_log is not None:
                        losses_log.flush()
                    save(math.floor(step / spe * 1000) / 1000)
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
            if grid_photos is not None:
                fakes = torch.cat(list(_translate(nets["G_AB"], grid_photos, device)))
                grid = image_grid(torch.cat([grid_photos.float() / 127.5 - 1.0, fakes]), ncols=len(grid_photos))
                live.image(f"translations/{epoch}.png", grid)  # dvclive's step-numbered slider layout
            if cfg.eval_every and ((epoch + 1) % cfg.eval_every == 0 or step >= total_steps):
                if evaluator is not None:
                    stats.update(evaluator(nets["G_AB"]))
                distributed.barrier()
            live.log(epoch, stats)
            log.info("epoch %d/%d %s", epoch + 1, cfg.epochs + cfg.decay_epochs,
                     " ".join(f"{k}={v:.4g}" for k, v in stats.items() if k != "progress/epoch"))
            bar.set_postfix({k.split("/")[-1]: f"{v:.3g}" for k, v in stats.items() if k.startswith("loss/")})
            sums, counts = {}, {}
            if losses_log is not None:
                losses_log.flush()
            save(float(epoch + 1))
            epoch_start_step, epoch_start_time = step, time.time()
            if stop:
                break
    finally:
        bar.close()
        live.close()
        if losses_log is not None:
            losses_log.close()
    return stats
