"""The GAN training loop, one for every architecture: lightweight-GAN (FastGAN), StyleGAN2(-ADA) and
the baselines DCGAN, WGAN-GP and ResNet WGAN-GP.

Modelled on NVlabs/edm `training/training_loop.py` and NVlabs/stylegan2-ada-pytorch
`training/training_loop.py`: progress is counted in thousands of real images shown to D (kimg);
each minibatch runs a list of phases (G main, G regularisation, D main, D regularisation), each
with its own interval, so lazy regularisation is data; once per tick we log, draw the fixed-seed
sample grid, measure FID when due, save the full state when due and check for stop.

What differs between the architectures is a small `Recipe` (`lowshot.train.recipes`: networks,
losses, reference optimiser settings). Choices: lightweight uses the hinge loss and a pixel MSE
reconstruction loss on D's decoders (whole image + one quarter, as lucidrains; FastGAN's LPIPS
needs VGG weights we do not have offline); stylegan2 the non-saturating logistic loss, lazy R1
and path length with the interval-corrected Adam parameters; dcgan the logistic loss; wgan-gp
and resnet-wgan-gp the Wasserstein loss with Gulrajani et al.'s gradient penalty, taken in the
critic's own step on interpolates of the images D saw (so of the augmented images). Regularisation
phases and the gradient penalty run in fp32 even when the precision (`lowshot.precision`) autocasts
the main phases to bf16: they are a small share of the work (lazy), and their double backward (a
penalty on a gradient norm) is the most precision-sensitive part.

Critic steps: with `critic_steps` n (5 for the WGAN-GP baselines), a loop step is one D step on
its own minibatch of reals, and the G phases run on every n-th step (step % n == n - 1, before that
step's D phase), so every G step follows n D steps (the first one n - 1) and G sees one minibatch
of fakes per n minibatches of reals. kimg, and every cadence given in kimg (ticks, snapshots, FID,
the EMA half-life, ADA's speed), counts real images shown to D: `batch` per step, whatever n is,
as in the reference WGAN-GP code, where each critic iteration draws a new real batch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from lowshot.augment import AdaController, make_augment
from lowshot.fsutil import atomic_write_text, remove_stale_temps
from lowshot.images.grid import image_grid
from lowshot.images.folder import list_images
from lowshot.metrics.probe import MetricProbe
from lowshot.params import TrainParams
from lowshot.precision import FP32, Precision
from lowshot.runtime import seed_everything
from lowshot.train import checkpoint, distributed, losses
from lowshot.train.data import ImageDataset, InfiniteSampler, Source, sources_digest
from lowshot.train.ema import ema_beta, make_ema, update_ema
from lowshot.train.eta import RunClock
from lowshot.train.live import LiveLog
from lowshot.train.recipes import ModelConfig, Recipe, describe_optim, make_recipe

log = logging.getLogger(__name__)

# TrainParams keys that do not change what is learned: a resumed run may change them freely.
RUN_ONLY_KEYS = ("kimg", "tick_kimg", "snapshot_kimg", "keep_snapshots", "fid_every_kimg", "fid_images",
                 "grid_size", "resume_from", "workers")
LOSSES_FILE = "losses.jsonl"  # one line per minibatch: step, kimg and every loss computed


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; no state was written after the last good one."""


def raise_if_diverged(values: torch.Tensor, names: list[str], *, world: int, where: str, out_dir: Path) -> None:
    """TrainingDiverged when any process has a non-finite value; every process checks, so all stop."""
    finite = distributed.all_reduce_sum(torch.isfinite(values).all().float().reshape(1))
    if finite.item() >= world:
        return
    named = dict(zip(names, values.tolist()))
    bad = [k for k, v in named.items() if not math.isfinite(v)] or ["loss on another process"]
    last = checkpoint.latest_state(out_dir)
    raise TrainingDiverged(
        f"training diverged at {where}: non-finite {', '.join(bad)} {named}; nothing was saved after it: "
        + (f"the last good state is {last}" if last else "no state had been saved yet"))


def derive_seed(seed: int, *names: object) -> int:
    """A 63-bit seed derived from `seed` and names, so each random stream is independent."""
    digest = hashlib.sha256(":".join(map(str, (seed, *names))).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


# --- the phases of a minibatch --------------------------------------------------------------------


@dataclass
class Phase:
    """One optimisation step of `module` with `opt`, run on minibatches where step % interval == offset.
    `loss(batch)` returns (total to minimise, {scalar name: value to log})."""

    name: str
    module: nn.Module
    opt: torch.optim.Optimizer
    interval: int
    loss: Callable[[dict[str, Any]], tuple[torch.Tensor, dict[str, torch.Tensor]]]
    autocast: bool = True
    offset: int = 0

    def due(self, step: int) -> bool:
        return step % self.interval == self.offset


def run_phase(phase: Phase, batch: dict[str, Any], precision: Precision, device: torch.device, *, world: int,
              out_dir: Path, where: str) -> dict[str, float]:
    """One phase of a training step, as every loop runs it: the loss under the precision's autocast,
    the divergence check (every process checks, so all stop together, before any step or save), the
    backward, gradients averaged over processes, the optimiser step. Returns the phase's scalars."""
    phase.module.requires_grad_(True)
    phase.opt.zero_grad(set_to_none=True)
    with precision.autocast(device, phase.autocast):
        total, scalars = phase.loss(batch)
    values = torch.stack([v.detach().float() for v in (total, *scalars.values())])
    raise_if_diverged(values, ["total", *scalars], world=world, out_dir=out_dir, where=where)
    total.backward()
    distributed.average_gradients(phase.module.parameters())
    phase.module.requires_grad_(False)
    phase.opt.step()
    return dict(zip(scalars, values[1:].tolist()))


def make_phases(cfg: TrainParams, recipe: Recipe, G: nn.Module, D: nn.Module, augment: Callable,
                pl: losses.PathLengthPenalty, recon_gen: torch.Generator,
                penalty_gen: torch.Generator | None = None) -> list[Phase]:
    """G main, [G path length], D main, [D R1]: the phases of one minibatch, in order; the G phases
    every `critic_steps`-th minibatch. `penalty_gen` draws the gradient penalty's interpolation weights."""
    sg2, lw, n = recipe.arch == "stylegan2", recipe.arch == "lightweight", recipe.optim.critic_steps
    r1_gamma = (cfg.r1_gamma if cfg.r1_gamma is not None else 0.0002 * cfg.resolution**2 / cfg.batch) if sg2 else 0.0
    pl_weight = cfg.pl_weight if sg2 else 0.0
    g_reg = cfg.pl_interval if pl_weight > 0 else None  # in G steps
    d_reg = cfg.r1_interval if r1_gamma > 0 else None
    betas = recipe.optim.betas
    opt_g = torch.optim.Adam(G.parameters(), *losses.lazy_reg_adam_params(recipe.optim.lr_g, betas, g_reg), eps=1e-8)
    opt_d = torch.optim.Adam(D.parameters(), *losses.lazy_reg_adam_params(recipe.optim.lr_d, betas, d_reg), eps=1e-8)
    g_loss, d_loss = recipe.g_loss, recipe.d_loss

    def fakes(z: torch.Tensor, **kw: Any) -> Any:
        return G(z, style_mix_prob=cfg.style_mix_prob, **kw) if sg2 else G(z)

    def g_main(b: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss = g_loss(D(augment(fakes(b["z_g"]))))
        return loss, {"loss/G": loss}

    def g_pl(b: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        z = b["z_pl"]
        img, ws = fakes(z[:max(1, len(z) // cfg.pl_batch_shrink)], return_ws=True)
        penalty = pl(img, ws).mean()
        return penalty * pl_weight * cfg.pl_interval, {"loss/pl": penalty}

    def d_main(b: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.no_grad():
            fake = fakes(b["z_d"], update_w_avg=True) if sg2 else G(b["z_d"])
        fake_seen = augment(fake)
        fake_logits = D(fake_seen)
        real_seen = augment(b["real"])
        scalars: dict[str, torch.Tensor] = {}
        if lw and cfg.recon_weight > 0:
            real_logits, rec = D(real_seen, reconstruct=True, generator=recon_gen)
            recon = F.mse_loss(rec["whole"].float(), rec["whole_target"].float()) + \
                F.mse_loss(rec["part"].float(), rec["part_target"].float())
            scalars["loss/recon"] = recon
        else:
            real_logits = D(real_seen)
            recon = torch.zeros([], device=fake_logits.device)
        loss = d_loss(real_logits, fake_logits)
        scalars["loss/D"] = loss
        if recipe.critic:
            # A critic's outputs are defined up to a constant: ADA's sign(D(real)) is taken about the
            # midpoint of this batch's mean real and mean fake outputs.
            b["real_logits"] = losses.critic_margin(real_logits, fake_logits).detach()
            with torch.autocast(real_seen.device.type, enabled=False):
                x_hat = losses.interpolates(real_seen.detach().float(), fake_seen.detach().float(), penalty_gen)
                penalty = losses.gradient_penalty(x_hat, D(x_hat)).mean()
            scalars["loss/gp"] = penalty
            return loss + cfg.gp_weight * penalty, scalars
        b["real_logits"] = real_logits.detach()
        return loss + cfg.recon_weight * recon, scalars

    def d_r1(b: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        real = b["real"].detach().requires_grad_(True)
        penalty = losses.r1_penalty(real, D(augment(real))).mean()
        return penalty * (r1_gamma / 2) * cfg.r1_interval, {"loss/r1": penalty}

    phases = [Phase("G", G, opt_g, n, g_main, offset=n - 1)]
    if g_reg:
        phases.append(Phase("Greg", G, opt_g, g_reg * n, g_pl, autocast=False, offset=n - 1))
    phases.append(Phase("D", D, opt_d, 1, d_main))
    if d_reg:
        phases.append(Phase("Dreg", D, opt_d, d_reg, d_r1, autocast=False))
    return phases


def run_fingerprint(cfg: TrainParams, seed: int, data: str, model: ModelConfig | None = None) -> dict[str, Any]:
    """What identifies a run: the params that change what is learned (the optimiser settings as
    resolved, so a changed reference default is a new run), the network config, the seed and the
    training data (`data.sources_digest`)."""
    recipe = make_recipe(cfg, model)
    return checkpoint.params_fingerprint(
        {"train": {**cfg.model_dump(mode="json"), **recipe.optim.as_params()}, "model": recipe.config.to_dict(),
         "seed": seed, "data": data},
        exclude=[f"train.{k}" for k in RUN_ONLY_KEYS])


# --- helpers --------------------------------------------------------------------------------------


def _load_transfer(path: Path, recipe: Recipe, G: nn.Module, D: nn.Module) -> None:
    """Initialise G (and D, from a full state) from another run's checkpoint."""
    if not path.is_file():
        raise FileNotFoundError(f"train.resume_from {path} does not exist (a state-*.pt or generator.pt)")
    snap = checkpoint.load_state(path)
    if snap.get("arch") != recipe.arch or snap.get("config") != recipe.config.to_dict():
        raise ValueError(f"train.resume_from {path} holds a {snap.get('arch')} generator with config "
                         f"{snap.get('config')}, but this run builds {recipe.arch} with {recipe.config.to_dict()}")
    G.load_state_dict(snap["G"] if "G" in snap else snap["G_ema"])
    if "D" in snap:
        D.load_state_dict(snap["D"])
    log.info("initialised %s from %s (transfer learning; kimg starts at 0)", "G and D" if "D" in snap else "G", path)


@torch.no_grad()
def _samples(recipe: Recipe, G_ema: nn.Module, count: int, seed: int, device: torch.device,
             batch: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(count, recipe.latent_dim, generator=gen)
    return [recipe.sample(G_ema, z[i:i + batch].to(device)).float().cpu() for i in range(0, count, batch)]


def truncate_losses(path: Path, step: int) -> None:
    """Keep the per-step loss rows before `step` (a resumed run rewrites the rest)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] < step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            break  # a torn last line from a killed run
    atomic_write_text(path, "".join(line + "\n" for line in kept))


# --- the loop -------------------------------------------------------------------------------------


def train_gan(
    cfg: TrainParams,
    *,
    sources: Sequence[Source],
    out_dir: Path,
    live_dir: Path | None,
    device: torch.device | str,
    seed: int,
    precision: Precision = FP32,
    fid_reference: Path | None = None,
    metrics_cache: Path | None = None,
    model: ModelConfig | None = None,
    progress: bool = True,
    max_ticks: int | None = None,
    warn_hours: float | None = None,
) -> dict[str, float]:
    """Train `cfg.arch` on `sources` ((folder or files, repeat) pairs) for `cfg.kimg` thousand images.

    Writes to `out_dir`: `state-<kimg>.pt` (full state, every `snapshot_kimg` and at the end,
    newest `keep_snapshots` kept), `generator.pt` (G_ema for inference, see
    `checkpoint.load_generator`) and `losses.jsonl` (every minibatch's losses). Scalars and the
    sample grid go to dvclive in `live_dir` (None: not logged). Resumes from the newest state in
    `out_dir` when there is one (refusing changed params), else starts from `cfg.resume_from`
    when set (weights only). `model` overrides the architecture's default network config.
    `max_ticks` stops after that many ticks of this call (saving state). Main phases run under
    `precision`'s autocast (regularisation phases in fp32). After the first minibatches it logs the
    expected duration, and warns once when that exceeds `warn_hours` on a CPU. Returns the last tick's
    scalars (`loss/*`, `aug/*`, `progress/kimg`, and `metrics/fid`, `metrics/kid`, `metrics/mifid` when measured).
    Raises TrainingDiverged on a non-finite loss, FileNotFoundError when there are no images.
    """
    device = distributed.init_from_env(device)
    world, rank, main = distributed.world_size(), distributed.rank(), distributed.is_main()
    local_batch = distributed.local_batch(cfg.batch)
    out_dir = Path(out_dir)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(out_dir)

    # --- networks, optimisers, augmentation: identical on every process at start
    seed_everything(seed)
    recipe = make_recipe(cfg, model)
    if recipe.config.resolution != cfg.resolution:
        raise ValueError(f"model config resolution {recipe.config.resolution} != train.resolution {cfg.resolution}")
    log.info("optimiser: %s", describe_optim(cfg, recipe.arch, recipe.optim))
    G, D = (precision.prepare(m.to(device).train().requires_grad_(False)) for m in recipe.build())
    fingerprint = run_fingerprint(cfg, seed, sources_digest(sources), recipe.config)
    dataset = ImageDataset(sources, cfg.resolution, workers=max(1, cfg.workers))
    sampler = InfiniteSampler(len(dataset), seed=derive_seed(seed, "data"), mirror=cfg.mirror, rank=rank, world=world)

    z_gen = torch.Generator().manual_seed(derive_seed(seed, "z", rank))
    aug_gen = torch.Generator().manual_seed(derive_seed(seed, "augment", rank))
    recon_gen = torch.Generator().manual_seed(derive_seed(seed, "recon", rank))
    penalty_gen = torch.Generator().manual_seed(derive_seed(seed, "penalty", rank))
    generators = {"z": z_gen, "augment": aug_gen, "recon": recon_gen, "penalty": penalty_gen}
    torch.manual_seed(derive_seed(seed, "torch", rank))  # style mixing, noise inputs, path length noise
    a = cfg.aug
    augment = make_augment(a.kind, policy=a.policy, p=a.p if a.kind in ("ada", "fixed") else 0.0, generator=aug_gen)
    ada = AdaController(cfg.batch, p=a.p, target=a.target, speed_kimg=a.speed_kimg, interval=a.interval,
                        sync=distributed.all_reduce_sum) if a.kind == "ada" else None
    pl = losses.PathLengthPenalty()
    phases = make_phases(cfg, recipe, G, D, augment, pl, recon_gen, penalty_gen)
    opts = {"opt_G": phases[0].opt, "opt_D": next(p.opt for p in phases if p.name == "D")}

    # --- resume this run, or start (optionally from another run's weights)
    nimg = step = tick = 0
    stats: dict[str, float] = {}
    state_file = checkpoint.latest_state(out_dir)
    if state_file is not None:
        state = checkpoint.load_state(state_file)
        checkpoint.check_params(state["params"], fingerprint, source=str(state_file))
        G.load_state_dict(state["G"])
        D.load_state_dict(state["D"])
        for name, opt in opts.items():
            opt.load_state_dict(state[name])
        nimg, step, tick = (state["progress"][k] for k in ("nimg", "step", "tick"))
        sampler.load_state_dict(state["sampler"])
        if ada is not None:
            ada.load_state_dict(state["augment"]["controller"])
        if hasattr(augment, "p"):
            augment.p = state["augment"]["p"]
        pl.load_state_dict(state["pl"])
        stats = dict(state.get("stats", {}))
        rngs = state["rng"]
        if len(rngs) == world:
            checkpoint.set_rng_state(rngs[rank], generators)
        else:
            log.warning("state saved by %d processes, resumed by %d: random streams restart", len(rngs), world)
        log.info("resuming from kimg %.3f (%s)", nimg / 1000, state_file.name)
    elif cfg.resume_from:
        _load_transfer(Path(cfg.resume_from), recipe, G, D)
    G_ema = make_ema(G)
    if state_file is not None:
        G_ema.load_state_dict(state["G_ema"])
        del state
    if main and state_file is None:
        (out_dir / LOSSES_FILE).unlink(missing_ok=True)
    elif main:
        truncate_losses(out_dir / LOSSES_FILE, step)

    total_nimg = round(cfg.kimg * 1000)
    tick_nimg, snap_nimg = max(1, round(cfg.tick_kimg * 1000)), max(1, round(cfg.snapshot_kimg * 1000))
    fid_nimg = max(1, round(cfg.fid_every_kimg * 1000)) if cfg.fid_every_kimg else None
    reference = list_images(fid_reference) if fid_nimg and fid_reference is not None else []
    if fid_nimg and len(reference) < 2:
        why = "no reference folder given" if fid_reference is None else \
            f"reference {fid_reference} holds {len(reference)} image(s), needs >= 2"
        log.info("FID off: %s", why)
        fid_nimg = None
    probe = MetricProbe(reference, seed=derive_seed(seed, "fid"), device=device, cache=metrics_cache,
                        workers=cfg.workers, scratch=out_dir) if fid_nimg and main else None
    grid_seed = derive_seed(seed, "grid")

    def save(kimg: float) -> None:
        """Full state (every process's RNG streams) + the inference snapshot; rank 0 writes."""
        rngs = distributed.all_gather_object(checkpoint.rng_state(generators))
        if main:
            state = {
                "format": 1, "arch": recipe.arch, "config": recipe.config.to_dict(), "kimg": kimg,
                "optim": recipe.optim.as_params(),
                "params": fingerprint, "params_hash": checkpoint.params_hash(fingerprint),
                "G": G.state_dict(), "D": D.state_dict(), "G_ema": G_ema.state_dict(),
                **{name: opt.state_dict() for name, opt in opts.items()}, "scaler": None,
                "augment": {"p": float(getattr(augment, "p", 0.0)), "controller": ada.state_dict() if ada else None},
                "pl": pl.state_dict(), "progress": {"nimg": nimg, "step": step, "tick": tick},
                "sampler": sampler.state_dict(), "rng": rngs, "stats": stats,
            }
            path = checkpoint.save_state(out_dir, state, kimg=kimg, keep=cfg.keep_snapshots)
            checkpoint.save_generator(out_dir / checkpoint.GENERATOR_FILE, arch=recipe.arch,
                                      config=recipe.config.to_dict(), generator=G_ema, kimg=kimg)
            log.info("saved %s", path.name)
        distributed.barrier()

    if nimg >= total_nimg:
        log.info("already trained to kimg %.3f >= train.kimg %s; nothing to do", nimg / 1000, cfg.kimg)
        return stats

    live = LiveLog(live_dir, resume=state_file is not None, resume_step=tick)
    losses_log = open(out_dir / LOSSES_FILE, "a") if main else None
    bar = tqdm(total=total_nimg, initial=min(nimg, total_nimg), unit="img", desc=f"train {recipe.arch}",
               disable=not (progress and main))
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    rt_sum, rt_count = torch.zeros([], dtype=torch.float64), 0
    tick_start_nimg, tick_start_time, ticks_run = nimg, time.time(), 0
    clock = RunClock(total_nimg - nimg, unit="img", device=device, warn_hours=warn_hours if main else None)
    start_nimg = nimg
    try:
        while True:
            # --- one minibatch: every due phase, then the EMA
            entries, flips = sampler.next_batch(local_batch)
            batch = {"real": precision.inputs(dataset.batch(entries, flips).to(device))}
            for key in ("z_g", "z_pl", "z_d"):
                batch[key] = torch.randn(local_batch, recipe.latent_dim, generator=z_gen).to(device)
            row: dict[str, float] = {"step": step, "kimg": nimg / 1000}
            for phase in phases:
                if not phase.due(step):
                    continue
                scalars = run_phase(phase, batch, precision, device, world=world, out_dir=out_dir,
                                    where=f"step {step} (kimg {nimg / 1000:.3f}), phase {phase.name}")
                for name, v in scalars.items():
                    row[name] = v
                    sums[name] = sums.get(name, 0.0) + v
                    counts[name] = counts.get(name, 0) + 1
                if phase.name == "D":
                    rt_sum += batch["real_logits"].sign().sum(dtype=torch.float64).cpu()
                    rt_count += batch["real_logits"].numel()
                    if ada is not None:
                        ada.accumulate(batch["real_logits"])
            if ada is not None:
                augment.p = ada.step()
            for module in (G, D):
                distributed.broadcast_buffers(module)  # batch-norm statistics, tracked mean w
            update_ema(G_ema, G, ema_beta(cfg.batch, cfg.ema_kimg, nimg, cfg.ema_rampup))
            if losses_log is not None:
                losses_log.write(json.dumps(row) + "\n")
            prev_nimg, nimg, step = nimg, nimg + cfg.batch, step + 1
            bar.update(min(nimg, total_nimg) - min(prev_nimg, total_nimg))
            clock.tick(nimg - start_nimg)

            # --- once per tick: log, sample grid, FID, snapshot, stop?
            done = nimg >= total_nimg
            if not done and nimg // tick_nimg == prev_nimg // tick_nimg:
                continue
            ticks_run += 1
            stop = done or (max_ticks is not None and ticks_run >= max_ticks)
            train_time = time.time() - tick_start_time
            tick_kimg = (nimg - tick_start_nimg) / 1000
            means = torch.tensor([sums[k] / counts[k] for k in sorted(sums)] + [float(rt_sum), float(rt_count)],
                                 dtype=torch.float64)
            means = distributed.all_reduce_mean(means).tolist()
            stats = dict(zip(sorted(sums), means))
            if means[-1] > 0:
                stats["aug/rt"] = means[-2] / means[-1]
            stats["aug/p"] = float(getattr(augment, "p", 0.0))
            stats["progress/kimg"] = nimg / 1000
            stats["speed/sec_per_kimg"] = train_time / max(tick_kimg, 1e-9)
            stats["speed/kimg_per_hour"] = tick_kimg * 3600 / max(train_time, 1e-9)
            if live.enabled:
                grid = image_grid(torch.cat(_samples(recipe, G_ema, cfg.grid_size, grid_seed, device, local_batch)),
                                  ncols=math.ceil(math.sqrt(cfg.grid_size)))
                live.image(f"samples/{tick}.png", grid)  # dvclive's step-numbered slider layout
            if fid_nimg and (done or nimg // fid_nimg > prev_nimg // fid_nimg):
                if probe is not None:
                    stats.update(probe(_samples(recipe, G_ema, cfg.fid_images, derive_seed(seed, "fid"), device,
                                                local_batch)))
                distributed.barrier()
            live.log(tick, stats)
            log.info("tick %d kimg %.3f %s", tick, nimg / 1000,
                     " ".join(f"{k}={v:.4g}" for k, v in stats.items() if k != "progress/kimg"))
            bar.set_postfix({k.split("/")[-1]: f"{v:.3g}" for k, v in stats.items() if k.startswith("loss/")})
            tick += 1
            if stop or nimg // snap_nimg > prev_nimg // snap_nimg:
                if losses_log is not None:
                    losses_log.flush()
                save(nimg / 1000)
            sums, counts, rt_sum, rt_count = {}, {}, torch.zeros([], dtype=torch.float64), 0
            tick_start_nimg, tick_start_time = nimg, time.time()
            if stop:
                break
    finally:
        bar.close()
        live.close()
        if losses_log is not None:
            losses_log.close()
    return stats
