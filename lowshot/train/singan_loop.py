"""The ConSinGAN training loop: one generator learns one painting, coarse to fine.

Follows Hinz et al., "Improved Techniques for Training Single-Image GANs" (WACV 2021), read in
tohinz/ConSinGAN `ConSinGAN/training_generation.py` and `functions.py` (generation mode):
- the painting is resized so its longer side is at most `max_size`, then a pyramid of `stages`
  levels down to a shorter side of `min_size`, with the paper's rescaling that places more
  levels at low resolution (`pyramid_sizes`);
- stage s trains on level s; the newest `concurrent` stages train together, each stage below the
  newest at `lr_scale` times the learning rate of the one above it; older stages are frozen;
- WGAN-GP with a per-pixel gradient penalty on a patch critic that carries over from stage to
  stage; `d_steps` critic steps, then `g_steps` generator Adam steps on one gradient (as the
  reference: one backward pass, several optimizer steps);
- reconstruction loss: MSE between the painting and the generator's output from a fixed input
  (the coarsest level itself at stage 0, fixed noise maps above); a new stage's noise amplitude
  is `noise_amp` x the RMSE of the reconstruction before that stage has trained;
- learning rates drop by `lr_decay` at `lr_decay_at` of each stage's iterations.

Everything is CPU/GPU agnostic and deterministic for a seed; the full state (networks, optimizers,
fixed noise, amplitudes, position, every random stream) is saved every `snapshot_iters`
iterations, so a killed run resumes exactly where it stopped. Plain fp32 throughout.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from tqdm import tqdm

from lowshot.fsutil import atomic_path, remove_stale_temps, sha256_file
from lowshot.images.grid import image_grid
from lowshot.models.consingan import ConSinGANConfig, Discriminator, Generator, Size, noise_shapes, random_noise
from lowshot.params import SinGANParams
from lowshot.runtime import seed_everything
from lowshot.train import checkpoint, losses
from lowshot.train.gan_loop import LOSSES_FILE, derive_seed, raise_if_diverged, truncate_losses
from lowshot.train.live import LiveLog

log = logging.getLogger(__name__)

MODEL_FILE = "model.pt"  # the finished model: generator, pyramid sizes, noise amplitudes, fixed noise
# SinGANParams keys that do not change what is learned (which paintings, how many drawn, checkpoints).
RUN_ONLY_KEYS = ("paintings", "samples", "size", "upscale", "snapshot_iters", "keep_snapshots")
BETA2 = 0.999


# --- the image pyramid ----------------------------------------------------------------------------


def _ceil(x: float) -> int:
    # The reference sizes a level as ceil(side * scale); a float product that lands a hair above an
    # integer (25.000000000000004) must not add a pixel.
    return math.ceil(x - 1e-9)


def pyramid_sizes(height: int, width: int, *, min_size: int, max_size: int, stages: int) -> list[Size]:
    """(height, width) of each level, coarsest first, for an image of `height` x `width`.

    The finest level is the image scaled so its longer side is at most `max_size` (never
    enlarged). With n = stages - 1 and r = (min_size / its shorter side) ** (1 / n), level i < n
    is the finest scaled by r ** ((n - 1) * ln(n - i) / ln(n) + 1): level 0 has shorter side
    `min_size`, and the exponents fall like a logarithm, so the levels crowd at low resolution
    (ConSinGAN's rescaling; plain SinGAN spaces them geometrically). Sides round up.
    """
    if stages < 1:
        raise ValueError(f"a pyramid needs at least one level, got {stages}")
    scale = min(max_size / max(height, width), 1.0)
    top = (_ceil(height * scale), _ceil(width * scale))
    if stages == 1:
        return [top]
    if min_size >= min(top):
        raise ValueError(f"min_size {min_size} px is not below the finest level's shorter side {min(top)} px "
                         f"({height}x{width} image, max_size {max_size})")
    n = stages - 1
    r = (min_size / min(top)) ** (1 / n)
    sizes = []
    for i in range(n):
        exponent = (n - 1) * math.log(n - i) / math.log(n) + 1 if n > 1 else 1.0
        s = r ** exponent
        sizes.append((_ceil(top[0] * s), _ceil(top[1] * s)))
    return sizes + [top]


def scaled_sizes(sizes: Sequence[Size], target: Size) -> list[Size]:
    """The pyramid `sizes` stretched so the finest level is `target` (height, width): drawing at
    another size or aspect is drawing with every noise map scaled by the same factors."""
    sh, sw = target[0] / sizes[-1][0], target[1] / sizes[-1][1]
    return [(max(1, round(h * sh)), max(1, round(w * sw))) for h, w in sizes[:-1]] + [tuple(target)]


def load_painting(path: str | Path) -> torch.Tensor:
    """An image file as a (1, 3, H, W) float tensor in [-1, 1]."""
    try:
        with PIL.Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"), dtype=np.float32)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read painting {path}: {e}") from e
    return torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0) / 127.5 - 1.0


def image_pyramid(image: torch.Tensor, sizes: Sequence[Size]) -> list[torch.Tensor]:
    """`image` (N, 3, H, W) resized to each of `sizes` (antialiased bicubic, as the reference's
    MATLAB-style imresize), values kept in [-1, 1]."""
    return [F.interpolate(image, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(-1, 1)
            if tuple(image.shape[2:]) != tuple(size) else image.clone() for size in sizes]


# --- learning rates -------------------------------------------------------------------------------


def stage_param_groups(G: Generator, *, lr: float, concurrent: int, lr_scale: float) -> list[dict[str, Any]]:
    """Adam parameter groups for training G's newest stage: the newest `concurrent` bodies, the
    k-th below the newest at lr * lr_scale ** k; the head while stage 0 is among them (at stage
    0's rate); the tail at `lr`. Freezes every other body (requires_grad False)."""
    newest = G.stages - 1
    trained = range(max(0, G.stages - concurrent), G.stages)
    for i, block in enumerate(G.body):
        block.requires_grad_(i in trained)
    groups = [{"name": f"stage{i}", "params": list(G.body[i].parameters()), "lr": lr * lr_scale ** (newest - i)}
              for i in trained]
    G.head.requires_grad_(0 in trained)
    if 0 in trained:
        groups.append({"name": "head", "params": list(G.head.parameters()), "lr": lr * lr_scale ** newest})
    groups.append({"name": "tail", "params": list(G.tail.parameters()), "lr": lr})
    return groups


def _set_decay(opt: torch.optim.Optimizer, factor: float) -> None:
    for group in opt.param_groups:
        group["lr"] = group["initial_lr"] * factor


def stage_optimizers(G: Generator, D: Discriminator, cfg: SinGANParams
                     ) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """Fresh Adam optimizers for a stage: G's groups from `stage_param_groups`, D whole. Each group
    keeps its undecayed rate as `initial_lr`."""
    groups = stage_param_groups(G, lr=cfg.lr_g, concurrent=cfg.concurrent, lr_scale=cfg.lr_scale)
    opts = (torch.optim.Adam(groups, lr=cfg.lr_g, betas=(cfg.beta1, BETA2)),
            torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, BETA2)))
    for opt in opts:
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]
    return opts


# --- fingerprint, model file ----------------------------------------------------------------------


def model_config(cfg: SinGANParams) -> ConSinGANConfig:
    return ConSinGANConfig(channels=cfg.channels, layers=cfg.layers)


def run_fingerprint(cfg: SinGANParams, seed: int, painting: Path, model: ConSinGANConfig | None = None
                    ) -> dict[str, Any]:
    """What identifies one painting's run: the params that change what is learned, the network
    config (`model`, default: built from `cfg`), the seed and the painting's content (not its name)."""
    return checkpoint.params_fingerprint(
        {"singan": cfg.model_dump(mode="json"), "model": (model or model_config(cfg)).to_dict(), "seed": seed,
         "painting": sha256_file(painting)},
        exclude=[f"singan.{k}" for k in RUN_ONLY_KEYS])


@dataclass
class SinGANModel:
    """A trained ConSinGAN: the generator with its pyramid, noise amplitudes and fixed noise."""

    G: Generator
    sizes: list[Size]
    amps: list[float]
    fixed_noise: list[torch.Tensor]
    painting: str
    seconds: float  # training time, summed over resumes

    @property
    def device(self) -> torch.device:
        return next(self.G.parameters()).device

    @torch.inference_mode()
    def reconstruct(self) -> torch.Tensor:
        """The generator's output for its fixed input: close to the painting, (1, 3, H, W)."""
        return self.G([z.to(self.device) for z in self.fixed_noise], self.sizes, self.amps).float().cpu()

    @torch.inference_mode()
    def draw(self, seeds: Sequence[int], size: Size | None = None, batch_size: int = 8) -> torch.Tensor:
        """One variation per seed, (len(seeds), 3, H, W) in [-1, 1], at the training size or at
        `size` (height, width) by scaled noise maps. Variation i depends on `seeds[i]` alone."""
        sizes = scaled_sizes(self.sizes, size) if size else self.sizes
        out = []
        for start in range(0, len(seeds), batch_size):
            chunk = seeds[start:start + batch_size]
            maps = [random_noise(self.G.config, sizes, 1, generator=torch.Generator().manual_seed(int(s)))
                    for s in chunk]
            noise = [torch.cat(level).to(self.device) for level in zip(*maps)]
            out.append(self.G(noise, sizes, self.amps).float().cpu())
        return torch.cat(out) if out else torch.empty(0, 3, *(size or self.sizes[-1]))


def save_model(path: Path, *, config: ConSinGANConfig, G: Generator, sizes: Sequence[Size], amps: Sequence[float],
               fixed_noise: Sequence[torch.Tensor], painting: str, seconds: float, fingerprint: dict[str, Any]) -> None:
    snapshot = {"arch": "consingan", "config": config.to_dict(), "stages": G.stages,
                "G": {k: v.detach().cpu() for k, v in G.state_dict().items()},
                "sizes": [list(s) for s in sizes], "amps": [float(a) for a in amps],
                "fixed_noise": [z.detach().cpu() for z in fixed_noise], "painting": painting,
                "seconds": float(seconds), "params": fingerprint}
    with atomic_path(path) as tmp:
        torch.save(snapshot, tmp)


def load_model(path: str | Path, device: torch.device | str = "cpu") -> SinGANModel:
    """The model a finished `train_singan` wrote (`MODEL_FILE`), in eval mode on `device`."""
    snap = checkpoint.load_state(path)
    if snap.get("arch") != "consingan":
        raise ValueError(f"{path} is not a ConSinGAN model (arch {snap.get('arch')!r})")
    G = Generator(ConSinGANConfig.from_dict(snap["config"]), stages=snap["stages"])
    G.load_state_dict(snap["G"])
    return SinGANModel(G.to(device).eval().requires_grad_(False), [tuple(s) for s in snap["sizes"]],
                       list(snap["amps"]), list(snap["fixed_noise"]), snap["painting"], snap["seconds"])


# --- the loop -------------------------------------------------------------------------------------


def train_singan(
    cfg: SinGANParams,
    *,
    painting: Path,
    out_dir: Path,
    live_dir: Path | None,
    device: torch.device | str,
    seed: int,
    model: ConSinGANConfig | None = None,
    progress: bool = True,
    max_iters: int | None = None,
) -> dict[str, float]:
    """Train ConSinGAN on the image `painting`: `cfg.stages` stages of `stage_iterations(cfg)` iterations.

    Writes to `out_dir`: `state-<k>.pt` (full state every `snapshot_iters` iterations, at each
    stage's end and on stopping; k = thousands of iterations done), `losses.jsonl` (every
    iteration's losses) and, when the last stage is done, `model.pt` (see `load_model`); the
    states are then deleted. Resumes from the newest state (refusing changed params). Scalars and
    each finished stage's reconstruction and samples go to dvclive in `live_dir`. `max_iters`
    stops (saving state) after that many iterations of this call. `model` overrides the network
    config built from `cfg`. Returns the last logged scalars (means since the one before) with
    `progress/stage` (stages done, fractional), `progress/ran` (iterations run by this call) and
    `time/seconds` (training time so far).
    Raises TrainingDiverged on a non-finite loss.
    """
    device = torch.device(device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out_dir)
    config = model or model_config(cfg)
    fingerprint = run_fingerprint(cfg, seed, painting, config)
    if (out_dir / MODEL_FILE).is_file():
        done = checkpoint.load_state(out_dir / MODEL_FILE)
        checkpoint.check_params(done["params"], fingerprint, source=str(out_dir / MODEL_FILE))
        log.info("%s is already trained (%s)", painting.name, out_dir / MODEL_FILE)
        return {"progress/stage": float(done["stages"]), "progress/ran": 0, "time/seconds": float(done["seconds"])}

    image = load_painting(painting)
    sizes = pyramid_sizes(image.shape[2], image.shape[3], min_size=cfg.min_size, max_size=cfg.max_size,
                          stages=cfg.stages)
    field = Discriminator(config).receptive_field
    if min(sizes[0]) < field:
        raise ValueError(f"the coarsest level of {painting.name} is {sizes[0][0]}x{sizes[0][1]} px, smaller than "
                         f"the discriminator's {field} px patch: raise singan.min_size")
    reals = [r.to(device) for r in image_pyramid(image, sizes)]

    # --- networks and random streams, identical for a seed and painting
    seed_everything(derive_seed(seed, "singan", "init"))
    G, D = Generator(config).to(device), Discriminator(config).to(device)
    generators = {name: torch.Generator().manual_seed(derive_seed(seed, "singan", name))
                  for name in ("noise", "fixed", "gp")}
    fixed_noise: list[torch.Tensor] = []
    amps: list[float] = []
    stage, it, seconds = 0, 0, 0.0  # `it` iterations of `stage` are done
    opt_g = opt_d = None

    state_file = checkpoint.latest_state(out_dir)
    if state_file is not None:
        state = checkpoint.load_state(state_file)
        checkpoint.check_params(state["params"], fingerprint, source=str(state_file))
        stage, it, seconds = state["progress"]["stage"], state["progress"]["iter"], state["progress"]["seconds"]
        G = Generator(config, stages=stage + 1).to(device)
        G.load_state_dict(state["G"])
        D.load_state_dict(state["D"])
        fixed_noise = [z.to(device) for z in state["fixed_noise"]]
        amps = list(state["amps"])
        opt_g, opt_d = stage_optimizers(G, D, cfg)
        opt_g.load_state_dict(state["opt_G"])
        opt_d.load_state_dict(state["opt_D"])
        checkpoint.set_rng_state(state["rng"], generators)
        log.info("%s: resuming at stage %d, iteration %d (%s)", painting.name, stage, it, state_file.name)
        del state
        truncate_losses(out_dir / LOSSES_FILE, _step(cfg, stage, it))
    else:
        (out_dir / LOSSES_FILE).unlink(missing_ok=True)

    def save() -> None:
        state = {"format": 1, "arch": "consingan", "config": config.to_dict(), "params": fingerprint,
                 "params_hash": checkpoint.params_hash(fingerprint), "painting": painting.name,
                 "G": G.state_dict(), "D": D.state_dict(), "opt_G": opt_g.state_dict(), "opt_D": opt_d.state_dict(),
                 "fixed_noise": [z.cpu() for z in fixed_noise], "amps": amps, "sizes": [list(s) for s in sizes],
                 "progress": {"stage": stage, "iter": it, "seconds": seconds},
                 "rng": checkpoint.rng_state(generators)}
        checkpoint.save_state(out_dir, state, kimg=_step(cfg, stage, it) / 1000, keep=cfg.keep_snapshots)

    iterations = stage_iterations(cfg)
    total = sum(iterations)
    live = LiveLog(live_dir, resume=state_file is not None, resume_step=_step(cfg, stage, it))
    bar = tqdm(total=total, initial=_step(cfg, stage, it), unit="it", desc=f"singan {painting.stem}",
               disable=not progress)
    losses_log = open(out_dir / LOSSES_FILE, "a")
    sums: dict[str, float] = {}
    summed = 0  # iterations in `sums`
    stats: dict[str, float] = {}
    ran = 0
    start = time.time()
    try:
        while True:
            if it == iterations[stage]:
                if stage == cfg.stages - 1:
                    break
                # --- a new stage: grow G, fix its reconstruction noise, measure its noise amplitude
                stage, it = stage + 1, 0
                G.grow()
            if it == 0:
                fixed_noise, amps = start_stage(G, reals, sizes, fixed_noise, amps, stage, cfg, generators["fixed"],
                                                device)
                opt_g, opt_d = stage_optimizers(G, D, cfg)
            decay = cfg.lr_decay if it >= round(cfg.lr_decay_at * iterations[stage]) else 1.0
            _set_decay(opt_g, decay)
            _set_decay(opt_d, decay)

            row = train_iteration(G, D, opt_g, opt_d, reals[stage], sizes[:stage + 1], fixed_noise, amps, cfg,
                                  generators, device, out_dir=out_dir, where=f"stage {stage}, iteration {it}")
            step = _step(cfg, stage, it)
            losses_log.write(json.dumps({"step": step, "stage": stage, "iter": it, **row}) + "\n")
            for k, v in row.items():
                sums[k] = sums.get(k, 0.0) + v
            it, ran, summed = it + 1, ran + 1, summed + 1
            bar.update(1)

            stage_done = it == iterations[stage]
            stop = max_iters is not None and ran >= max_iters
            if not (stage_done or stop or it % cfg.snapshot_iters == 0):
                continue
            # --- once per snapshot: log, save the full state, stop?
            now = time.time()
            seconds, start = seconds + now - start, now
            stats = {k: v / summed for k, v in sums.items()}
            stats.update({"progress/stage": stage + it / iterations[stage], "progress/ran": ran, "time/seconds": seconds})
            sums, summed = {}, 0
            live.log(_step(cfg, stage, it), stats)
            bar.set_postfix({k.split("/")[-1]: f"{v:.3g}" for k, v in stats.items() if k.startswith("loss/")})
            if stage_done and live.enabled:
                live.image(f"stages/{stage}.png", _stage_grid(G, reals, sizes[:stage + 1], fixed_noise, amps,
                                                              derive_seed(seed, "singan", "grid"), device))
            losses_log.flush()
            save()
            if stop and not (stage_done and stage == cfg.stages - 1):
                return stats
    finally:
        bar.close()
        live.close()
        losses_log.close()

    save_model(out_dir / MODEL_FILE, config=config, G=G, sizes=sizes, amps=amps, fixed_noise=fixed_noise,
               painting=painting.name, seconds=seconds, fingerprint=fingerprint)
    for old in checkpoint.list_states(out_dir):
        old.unlink()
    log.info("%s: trained %d stages in %.0f s", painting.name, cfg.stages, seconds)
    return {**stats, "progress/stage": float(cfg.stages), "progress/ran": ran, "time/seconds": seconds}


def stage_iterations(cfg: SinGANParams) -> list[int]:
    """Iterations of each stage, coarsest first."""
    return list(cfg.iterations) if isinstance(cfg.iterations, list) else [cfg.iterations] * cfg.stages


def _step(cfg: SinGANParams, stage: int, it: int) -> int:
    """Iterations done over all stages: the x axis of the logs and the name of the state files."""
    return sum(stage_iterations(cfg)[:stage]) + it


def start_stage(G: Generator, reals: list[torch.Tensor], sizes: list[Size], fixed_noise: list[torch.Tensor],
                amps: list[float], stage: int, cfg: SinGANParams, gen: torch.Generator,
                device: torch.device) -> tuple[list[torch.Tensor], list[float]]:
    """The fixed reconstruction inputs and noise amplitudes of stages 0..`stage`, given those of
    the stages below (`stage` is G's newest): stage 0 reconstructs from the coarsest level itself
    at amplitude 1; a later stage draws a fixed noise map from `gen`, and its amplitude is
    `cfg.noise_amp` x the RMSE of G's reconstruction before the stage has trained."""
    if stage == 0:
        return [reals[0].clone()], [1.0]
    shape = noise_shapes(G.config, sizes[:stage + 1])[stage]
    fixed = [*fixed_noise, torch.randn(1, *shape, generator=gen).to(device)]
    with torch.no_grad():
        rec = G(fixed, sizes[:stage + 1], [*amps, 0.0])
    rmse = F.mse_loss(rec, reals[stage]).sqrt().item()
    return fixed, [*amps, cfg.noise_amp * rmse]


def train_iteration(G: Generator, D: Discriminator, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
                    real: torch.Tensor, sizes: list[Size], fixed_noise: list[torch.Tensor], amps: list[float],
                    cfg: SinGANParams, generators: dict[str, torch.Generator], device: torch.device, *,
                    out_dir: Path, where: str) -> dict[str, float]:
    """One iteration on level `real`: `d_steps` critic steps against one fake drawn from
    `generators["noise"]`, then `g_steps` generator steps on adversarial + reconstruction loss.
    Returns its losses; raises TrainingDiverged (naming `where`) before any step on a non-finite one."""
    noise = random_noise(G.config, sizes, 1, generator=generators["noise"], device=device)
    fake = G(noise, sizes, amps)  # G does not change during the critic steps: one fake serves them all

    D.requires_grad_(True)
    for _ in range(cfg.d_steps):
        real_score, fake_score = D(real).mean(), D(fake.detach()).mean()
        x_hat = losses.interpolates(real, fake, generators["gp"])
        gp = losses.gradient_penalty(x_hat, D(x_hat), per_pixel=True).mean()
        loss_d = fake_score - real_score + cfg.gp_weight * gp
        values = torch.stack([loss_d.detach(), gp.detach()])
        raise_if_diverged(values, ["loss/D", "loss/gp"], world=1, where=where, out_dir=out_dir)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
    D.requires_grad_(False)

    loss_adv = -D(fake).mean()
    recon = F.mse_loss(G(fixed_noise, sizes, amps), real)
    loss_g = loss_adv + cfg.recon_weight * recon
    values = torch.stack([loss_g.detach(), loss_adv.detach(), recon.detach()])
    raise_if_diverged(values, ["loss/G_total", "loss/G", "loss/recon"], world=1, where=where, out_dir=out_dir)
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    for _ in range(cfg.g_steps):  # as the reference: several Adam steps on one gradient
        opt_g.step()
    return {"loss/D": loss_d.item(), "loss/gp": gp.item(), "loss/wasserstein": (real_score - fake_score).item(),
            "loss/G": loss_adv.item(), "loss/recon": recon.item()}


@torch.no_grad()
def _stage_grid(G: Generator, reals: list[torch.Tensor], sizes: list[Size], fixed_noise: list[torch.Tensor],
                amps: list[float], seed: int, device: torch.device) -> PIL.Image.Image:
    """The stage's level of the painting, its reconstruction and four samples, side by side."""
    stage = len(sizes) - 1
    noise = random_noise(G.config, sizes, 4, generator=torch.Generator().manual_seed(seed), device=device)
    images = torch.cat([reals[stage], G(fixed_noise, sizes, amps), G(noise, sizes, amps)]).float().cpu()
    return image_grid(images, ncols=len(images))
