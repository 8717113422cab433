"""Can the translator's discriminator tell photos from Monets? D alone, on fixed photos as its fakes.

    python benchmarks/discriminator_probe.py [--steps 1500] [--eval-every 500] [--seed 0]
        [--variant NAME:KEY=VALUE,KEY=VALUE ...] [--precision auto] [--threads 2] [--out FILE.json]

A translator's generator learns only what its discriminator has learned. This trains the PatchGAN of
`benchmarks/quality.py`'s CPU recipe exactly as the translator loop does (the loop's augmentation, LSGAN
loss, Adam, 128 px crops of the 256 px images, mirror flips, one photo and one Monet a step) but with
untouched photos as the fakes: the easiest task D will ever face, since a generator can only make the fakes
harder to tell. Every `--eval-every` steps it prints D's training loss over the last window (LSGAN: 0.25 is
a D that answers 0.5 everywhere) and the AUC of the image-level mean output, whole 256 px images, with no
augmentation: held-out photos (the yardstick's last 200 of photos/) against held-out Monets (monet-pool120,
scored, never trained on), and against the 30 training Monets (monet-train30): the gap between the two is
memorisation. AUC 0.5 is chance, 1.0 a perfect ranking.

`--variant` adds a configuration to compare against `recipe` (the CPU recipe itself, always run first):
keys of `cyclegan` (lr, beta1, ndf, d_layers, antialias, diffaugment, batch, gan_loss) or the network's
`norm`; e.g. `--variant no-norm:norm=none --variant two-layers:d_layers=2`. Variants see the same images in
the same order (same seed). A few minutes a variant on 2 cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _measure import cpu_flags
from quality import CPU_RECIPE, DATASETS, parse_set

HELD_OUT_PHOTOS = 200
LSGAN_CHANCE = 0.25


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counted half: the Mann-Whitney AUC."""
    pos, neg = positive[:, None], negative[None, :]
    return float(((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (len(positive) * len(negative)))


def load_set(files: list[Path]) -> torch.Tensor:
    """uint8 (N, 3, 256, 256) as the translator loop loads them (`load_image` at 256 px)."""
    from lowshot.train.data import load_image

    return torch.from_numpy(np.stack([load_image(p, 256) for p in files]))


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """'NAME:KEY=VALUE,KEY=VALUE' -> (NAME, {KEY: VALUE}), values read as `quality.py --set` reads them."""
    name, _, items = text.partition(":")
    if not name or not items:
        sys.exit(f"--variant {text!r}: expected NAME:KEY=VALUE[,KEY=VALUE]")
    return name, parse_set(items.split(","))


def build(keys: dict[str, Any]) -> tuple[Any, Any]:
    """(params, network config) of the CPU recipe with `keys` applied; `norm` goes to the network."""
    from lowshot.params import CycleGANParams
    from lowshot.train.translator_loop import model_config

    norm = keys.get("norm")
    params = CycleGANParams(**{"model": "cut", **CPU_RECIPE, **{k: v for k, v in keys.items() if k != "norm"}})
    config = model_config(params)
    return params, (dataclasses.replace(config, norm=norm) if norm else config)


def probe(name: str, keys: dict[str, Any], sets: dict[str, torch.Tensor], args: argparse.Namespace,
          precision: Any) -> list[dict[str, Any]]:
    """Train one variant's D for `args.steps` steps; a row (loss, AUCs, seconds) every `args.eval_every`."""
    from lowshot.models.cyclegan import PatchDiscriminator
    from lowshot.train.translator_loop import discriminator_augmentation, discriminator_loss

    params, config = build(keys)
    torch.manual_seed(args.seed)
    D = precision.prepare(PatchDiscriminator.from_config(config))
    opt = torch.optim.Adam(D.parameters(), lr=params.lr, betas=(params.beta1, params.beta2))
    augment, _, _ = discriminator_augmentation(params, torch.Generator().manual_seed(args.seed + 1))
    draw = torch.Generator().manual_seed(args.seed + 2)
    side, crop = sets["train_photos"].shape[-1], params.size

    def batch(images: torch.Tensor) -> torch.Tensor:
        idx = torch.randint(len(images), (params.batch,), generator=draw)
        ij = torch.randint(side - crop + 1, (params.batch, 2), generator=draw)
        flip = torch.rand(params.batch, generator=draw) < 0.5
        out = torch.stack([images[k, :, i:i + crop, j:j + crop] for k, (i, j) in zip(idx.tolist(), ij.tolist())])
        out = torch.where(flip[:, None, None, None], out.flip(3), out)
        return precision.inputs(out.float() / 127.5 - 1)

    def scores(images: torch.Tensor) -> np.ndarray:
        out = []
        with torch.no_grad(), precision.autocast("cpu"):
            for i in range(0, len(images), 16):
                out.append(D(precision.inputs(images[i:i + 16].float() / 127.5 - 1)).float().mean((1, 2, 3)))
        return torch.cat(out).numpy()

    rows, window, start = [], [], time.perf_counter()
    for step in range(1, args.steps + 1):
        real, fake = batch(sets["train_monets"]), batch(sets["train_photos"])
        with precision.autocast("cpu"):
            loss = discriminator_loss(params.gan_loss, D, augment, real, fake)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        window.append(loss.item())
        if step % args.eval_every == 0 or step == args.steps:
            D.eval()
            photos = scores(sets["held_out_photos"])
            row = {"variant": name, "step": step, "d_loss": float(np.mean(window)),
                   "auc_held_out": auc(scores(sets["held_out_monets"]), photos),
                   "auc_train_monets": auc(scores(sets["train_monets"]), photos),
                   "seconds": time.perf_counter() - start}
            D.train()
            window = []
            rows.append(row)
            print(f"{name:<22} {step:>6} {row['d_loss']:>8.3f} {row['auc_held_out']:>9.3f} "
                  f"{row['auc_train_monets']:>10.3f} {row['seconds']:>8.0f}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variant", action="append", default=[], help="NAME:KEY=VALUE[,KEY=VALUE]")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 0)) or os.cpu_count())
    ap.add_argument("--train-photos", type=int, default=2000)
    ap.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = ap.parse_args()
    folders = {k: DATASETS / k for k in ("photos", "monet-train30", "monet-pool120")}
    missing = [str(p) for p in folders.values() if not p.is_dir()]
    if missing:
        sys.exit(f"needs the shared datasets; missing: {', '.join(missing)}")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    torch.set_num_threads(args.threads)

    from lowshot.images.folder import list_images
    from lowshot.precision import resolve_precision

    precision = resolve_precision(args.precision, "cpu")
    photos = list_images(folders["photos"])
    sets = {"train_photos": load_set(photos[:args.train_photos]),
            "held_out_photos": load_set(photos[-HELD_OUT_PHOTOS:]),
            "train_monets": load_set(list_images(folders["monet-train30"])),
            "held_out_monets": load_set(list_images(folders["monet-pool120"]))}
    variants = [("recipe", {})] + [parse_variant(v) for v in args.variant]
    print(f"D alone, untouched photos as fakes; {precision.describe()}; {args.threads} threads; "
          f"CPU flags: {cpu_flags()}")
    print(f"LSGAN loss {LSGAN_CHANCE} = a D that answers 0.5 everywhere; AUC 0.5 = chance")
    print(f"{'variant':<22} {'step':>6} {'D loss':>8} {'AUC held':>9} {'AUC train':>10} {'seconds':>8}")
    rows = [row for name, keys in variants for row in probe(name, keys, sets, args, precision)]
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
