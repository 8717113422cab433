"""Training checkpoints: full resumable states, light inference snapshots, params fingerprints.

A full state is a plain dict the loop assembles (networks, optimizers, augmentation, counters,
data position, RNG states, params fingerprint, model configs); it is written atomically as
`state-<kimg>.pt` and the newest `keep` are kept. `generator.pt` holds only what inference needs.
Unlike NVlabs/stylegan2-ada-pytorch (which resets kimg and the ADA p on resume) and lucidrains
lightweight-gan (which drops optimizer state), resuming from a state continues the same run:
every random stream is restored, and a changed params fingerprint is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lowshot.fsutil import atomic_path

log = logging.getLogger(__name__)

STATE_GLOB = "state-*.pt"
_STATE_RE = re.compile(r"^state-(\d+(?:\.\d+)?)\.pt$")
GENERATOR_FILE = "generator.pt"
PHOTO2MONET_FILE = "photo2monet.pt"
TRANSLATOR_ARCHS = ("cyclegan", "cut", "fastcut")  # one ResNet generator, G_AB, in photo2monet.pt
PATCHES_ARCH = "patches"  # the paintings themselves (models.patch_transfer)


class ParamsMismatch(ValueError):
    """A run's saved params fingerprint differs from the current params."""


# --- files --------------------------------------------------------------------------------------


def state_path(directory: str | os.PathLike, kimg: float) -> Path:
    """`directory/state-<kimg>.pt`, kimg zero-padded to 3 decimals (e.g. state-000012.500.pt)."""
    return Path(directory) / f"state-{kimg:010.3f}.pt"


def list_states(directory: str | os.PathLike) -> list[Path]:
    """State files in `directory`, oldest (smallest kimg) first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(float(m.group(1)), p) for p in directory.iterdir() if (m := _STATE_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_state(directory: str | os.PathLike) -> Path | None:
    """The newest state file in `directory`, or None."""
    states = list_states(directory)
    return states[-1] if states else None


def save_state(directory: str | os.PathLike, state: Mapping[str, Any], *, kimg: float, keep: int) -> Path:
    """Write `state` atomically as `state-<kimg>.pt` and delete all but the newest `keep` states."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    path = state_path(directory, kimg)
    with atomic_path(path) as tmp:
        torch.save(dict(state), tmp)
    for old in list_states(directory)[:-keep]:
        old.unlink(missing_ok=True)
        log.debug("rotated out %s", old)
    return path


def load_state(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a file written by `save_state` / `save_generator` (tensors only: no arbitrary pickles)."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint {path} does not exist") from None
    except Exception as e:  # torch raises several types for a truncated or foreign file
        raise ValueError(f"checkpoint {path} is unreadable ({type(e).__name__}: {e})") from e


# --- params fingerprint -------------------------------------------------------------------------


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = list(value) if isinstance(value, tuple) else value
    return flat


def params_fingerprint(params: Mapping[str, Any], *, exclude: Iterable[str] = ()) -> dict[str, Any]:
    """`params` flattened to dotted keys (JSON values), without the keys in `exclude` (a key
    excludes its whole subtree). This dict, not only its hash, is stored in a state so a
    mismatch can name what changed."""
    excluded = tuple(exclude)
    flat = _flatten(params)
    kept = {k: v for k, v in flat.items() if not any(k == e or k.startswith(e + ".") for e in excluded)}
    return json.loads(json.dumps(kept, sort_keys=True, default=str))


def params_hash(fingerprint: Mapping[str, Any]) -> str:
    """sha256 of a fingerprint's canonical JSON."""
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()


def params_diff(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """'key: old -> new' for every key whose value differs between two fingerprints."""
    keys = sorted(set(saved) | set(current))
    return [f"{k}: {saved.get(k, '<absent>')!r} -> {current.get(k, '<absent>')!r}"
            for k in keys if saved.get(k, "<absent>") != current.get(k, "<absent>")]


def check_params(saved: Mapping[str, Any], current: Mapping[str, Any], *, source: str) -> None:
    """Raise ParamsMismatch naming every key whose value differs between two fingerprints."""
    if params_hash(saved) == params_hash(current):
        return
    diffs = params_diff(saved, current)
    raise ParamsMismatch(
        f"cannot resume from {source}: it was trained with different params ("
        + "; ".join(diffs)
        + "). Restore those values, or train into a fresh output folder."
    )


# --- one run folder per params fingerprint -------------------------------------------------------

RUNS_DIR = "runs"


def run_dir(root: str | os.PathLike, fingerprint: Mapping[str, Any]) -> Path:
    """`root/runs/<hash>`: where a run with these params keeps its states. A DVC experiment that
    changes a param trains in a new folder instead of tripping over the persisted states of the
    last one; going back to earlier params finds (and resumes or reuses) that run's folder."""
    return Path(root) / RUNS_DIR / params_hash(fingerprint)[:12]


def describe_other_runs(root: str | os.PathLike, current: Path, fingerprint: Mapping[str, Any]) -> list[str]:
    """One line per other run folder under `root`: how its params differ from `fingerprint`."""
    lines = []
    for other in sorted(p for p in (Path(root) / RUNS_DIR).glob("*") if p.is_dir() and p != Path(current)):
        state = latest_state(other)
        if state is None:
            continue
        try:
            saved = load_state(state)["params"]
        except (ValueError, KeyError):
            continue
        lines.append(f"{other.name} ({state.name}): " + "; ".join(params_diff(saved, fingerprint)))
    return lines


def publish_run(root: str | os.PathLike, run: Path, filename: str) -> list[Path]:
    """A finished run: copy its inference file `run/filename` to `root/filename` (atomically) and
    delete every other run folder under `root`. Returns the deleted folders."""
    with atomic_path(Path(root) / filename) as tmp:
        shutil.copyfile(Path(run) / filename, tmp)
    removed = []
    for other in (Path(root) / RUNS_DIR).glob("*"):
        if other.is_dir() and other != Path(run):
            shutil.rmtree(other)
            removed.append(other)
    return removed


# --- random number generators -------------------------------------------------------------------


def rng_state(generators: Mapping[str, torch.Generator] | None = None) -> dict[str, Any]:
    """States of Python's, NumPy's and torch's global RNGs (CPU, and CUDA when present) and of
    the named torch.Generators."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }
    return state


def set_rng_state(state: Mapping[str, Any], generators: Mapping[str, torch.Generator] | None = None) -> None:
    """Restore what `rng_state` captured; a named generator missing from `state` raises KeyError."""
    random.setstate(_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, g in (generators or {}).items():
        if name not in state["generators"]:
            raise KeyError(f"checkpoint holds no state for the random generator {name!r}")
        g.set_state(state["generators"][name])


def _tuples(x: Any) -> Any:
    """random.setstate wants tuples; a round trip may have turned them into lists."""
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


# --- the light inference snapshot ---------------------------------------------------------------


def _generator_classes(arch: str) -> tuple[type, type]:
    if arch == "stylegan2":
        from lowshot.models.stylegan2 import Generator, StyleGAN2Config

        return StyleGAN2Config, Generator
    if arch == "lightweight":
        from lowshot.models.lightweight_gan import Generator, LightweightGANConfig

        return LightweightGANConfig, Generator
    if arch in ("dcgan", "wgan-gp"):
        from lowshot.models.dcgan import DCGANConfig, Generator

        return DCGANConfig, Generator
    if arch == "resnet-wgan-gp":
        from lowshot.models.resnet_gan import Generator, ResNetGANConfig

        return ResNetGANConfig, Generator
    raise ValueError(f"unknown generator architecture {arch!r} "
                     "(known: lightweight, stylegan2, dcgan, wgan-gp, resnet-wgan-gp)")


def save_generator(path: str | os.PathLike, *, arch: str, config: Mapping[str, Any], generator: nn.Module,
                   kimg: float) -> None:
    """Write the inference snapshot {arch, config, G_ema weights, w_avg (stylegan2), kimg} atomically."""
    state = {k: v.detach().cpu() for k, v in generator.state_dict().items()}
    w_avg = state.get("mapping.w_avg")
    snapshot = {"arch": arch, "config": dict(config), "G_ema": state, "w_avg": w_avg, "kimg": float(kimg)}
    with atomic_path(path) as tmp:
        torch.save(snapshot, tmp)


def load_generator(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the generator of a `generator.pt` (or of a full state file) on `device`, in eval
    mode with gradients off. The returned module carries `.arch`, `.config_dict` and `.kimg`."""
    snap = load_state(path)
    if "arch" not in snap or "config" not in snap:
        raise ValueError(f"{path} is not a lowshot generator snapshot or training state (no arch/config)")
    arch = snap["arch"]
    config_cls, generator_cls = _generator_classes(arch)
    weights = snap.get("G_ema")
    if weights is None:
        raise ValueError(f"{path} holds no G_ema weights")
    net = generator_cls(config_cls.from_dict(snap["config"]))
    net.load_state_dict(weights)
    net.arch, net.config_dict, net.kimg = arch, dict(snap["config"]), float(snap.get("kimg", 0.0))
    return net.to(device).eval().requires_grad_(False)


def save_photo2monet(path: str | os.PathLike, *, arch: str, config: Mapping[str, Any], generator: nn.Module,
                     epoch: float) -> None:
    """Write the translator's inference snapshot {arch, config, G_AB weights, epoch} atomically."""
    weights = {k: v.detach().cpu() for k, v in generator.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"arch": arch, "config": dict(config), "G_AB": weights, "epoch": float(epoch)}, tmp)


def load_photo2monet(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """The photo -> Monet generator of a `photo2monet.pt` (or of a translator's state file) on
    `device`, in eval mode with gradients off, whatever the model (CycleGAN, CUT, FastCUT: one ResNet
    generator; from a state, the weights' moving average where it kept one; `patches`: its
    `PatchTransfer`). It maps (N, 3, H, W) in
    [-1, 1] (H, W multiples of 4) to the same shape. The module carries `.arch`, `.config_dict` and
    `.epoch`."""
    from lowshot.models.cyclegan import CycleGANConfig, ResnetGenerator

    snap = load_state(path)
    if snap.get("arch") == PATCHES_ARCH and "paintings" in snap:
        return _patch_translator(snap, device)
    if snap.get("arch") not in TRANSLATOR_ARCHS or "G_AB" not in snap:
        raise ValueError(f"{path} is not a lowshot translator snapshot or state (arch {snap.get('arch')!r})")
    G = ResnetGenerator.from_config(CycleGANConfig.from_dict(snap["config"]))
    G.load_state_dict(snap.get("G_ema", snap["G_AB"]))  # a state trained with an EMA translates with the average
    G.arch, G.config_dict, G.epoch = snap["arch"], dict(snap["config"]), float(snap["epoch"])
    return G.to(device).eval().requires_grad_(False)


def save_patch_translator(path: str | os.PathLike, *, config: Mapping[str, Any], paintings: torch.Tensor) -> None:
    """Write the `patches` translator's snapshot {arch, config, paintings (uint8 N x 3 x H x W), epoch 0} atomically."""
    with atomic_path(path) as tmp:
        torch.save({"arch": PATCHES_ARCH, "config": dict(config), "paintings": paintings.contiguous(), "epoch": 0.0}, tmp)


def _patch_translator(snap: Mapping[str, Any], device: str | torch.device) -> nn.Module:
    from lowshot.models.patch_transfer import PatchTransfer, PatchTransferConfig

    model = PatchTransfer(PatchTransferConfig.from_dict(snap["config"]), snap["paintings"])
    model.arch, model.config_dict, model.epoch = PATCHES_ARCH, dict(snap["config"]), float(snap["epoch"])
    return model.to(device).eval().requires_grad_(False)
