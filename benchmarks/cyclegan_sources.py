"""Acceptance of the photo -> Monet issue: does adding synthetic paintings to domain B help?

CycleGAN at `--size` (128) for the same budget with domain B = monet-train30 only, and = monet-train30 +
synthetic paintings (a folder, or drawn here from a trained generator.pt), both on the same photos
(../shared/datasets/photos, the first `--train-photos`). Each run translates `--eval-photos` held-out
photos (the last ones) to 256 px and prints MiFID, FID and KID against monet-pool120. The baseline is
`real-only`. Runs go side by side in child processes (one thread each). Translations: OUT/<run>/translated.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
RUNS = ("real-only", "real+synthetic")


def synthetic_folder(args: argparse.Namespace) -> Path:
    """args.synthetic if it is a folder of images, else draw `--synthetic-count` from the generator file."""
    src = Path(args.synthetic)
    if src.is_dir():
        return src
    from lowshot.train.checkpoint import load_generator
    from lowshot.train.samples import latent_dim, seed_latents, synthesize, write_images

    out = Path(args.out) / "synthetic"
    if out.is_dir() and len(list(out.glob("*.png"))) == args.synthetic_count:
        return out
    out.mkdir(parents=True, exist_ok=True)
    G = load_generator(src)
    z = seed_latents(range(args.synthetic_count), latent_dim(G))
    done = 0
    for batch in synthesize(G, z, batch_size=32):
        write_images(batch, [f"seed{done + i:06d}.png" for i in range(len(batch))], out)
        done += len(batch)
    return out


def train_one(name: str, args: argparse.Namespace) -> None:
    import torch

    from lowshot.images.folder import list_images
    from lowshot.metrics.evaluate import evaluate_sets
    from lowshot.params import CycleGANParams
    from lowshot.train.cyclegan_loop import PHOTO2MONET_FILE, load_photo2monet, train_cyclegan
    from lowshot.translate import translate_photos

    torch.set_num_threads(args.threads)
    photos = list_images(DATASETS / "photos")
    train_photos, eval_photos = photos[:args.train_photos], photos[-args.eval_photos:]
    monet = [(DATASETS / "monet-train30", 1.0)]
    if name == "real+synthetic":
        monet.append((Path(args.synthetic_dir), args.synthetic_weight))
    cfg = CycleGANParams(size=args.size, g_blocks=args.g_blocks, ngf=args.ngf, ndf=args.ndf, epochs=args.epochs,
                         decay_epochs=args.decay_epochs, epoch_images=args.epoch_images, eval_every=None,
                         grid_size=8, workers=1)
    out = Path(args.out) / name
    start = time.time()
    train_cyclegan(cfg, photos=train_photos, monet=monet, out_dir=out / "run", live_dir=out / "live", device="cpu",
                   seed=args.seed, progress=False)
    train_s = time.time() - start
    G = load_photo2monet(out / "run" / PHOTO2MONET_FILE)
    start = time.time()
    translate_photos(G, out / "run" / PHOTO2MONET_FILE, eval_photos, out / "translated", batch_size=8, progress=False)
    translate_s = time.time() - start
    metrics = evaluate_sets({name: out / "translated"}, DATASETS / "monet-pool120",
                            cache_dir=Path(args.out) / "feature-cache", device="cpu", workers=1, progress=False)
    metrics.update({"train_s": train_s, "translate_img_per_s": len(eval_photos) / translate_s})
    (out / "result.json").write_text(json.dumps(metrics, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/lowshot-cyclegan-sources")
    ap.add_argument("--synthetic", default="/tmp/lowshot-augmentation/diffaugment/run/generator.pt",
                    help="a folder of synthetic paintings, or a generator.pt to draw them from")
    ap.add_argument("--synthetic-count", type=int, default=300)
    ap.add_argument("--synthetic-weight", type=float, default=1.0, help="domain-B weight of the synthetic set vs the real 30")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--g-blocks", type=int, default=6)
    ap.add_argument("--ngf", type=int, default=32)
    ap.add_argument("--ndf", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--decay-epochs", type=int, default=2)
    ap.add_argument("--epoch-images", type=int, default=300)
    ap.add_argument("--train-photos", type=int, default=2000)
    ap.add_argument("--eval-photos", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=RUNS, help=argparse.SUPPRESS)
    ap.add_argument("--synthetic-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.only:
        train_one(args.only, args)
        return
    if not (DATASETS / "photos").is_dir():
        sys.exit(f"skipped: {DATASETS} is absent")
    from lowshot.images.folder import list_images

    synthetic = synthetic_folder(args)
    start = time.time()
    children = [subprocess.Popen([sys.executable, __file__, *sys.argv[1:], "--only", name,
                                  "--synthetic-dir", str(synthetic)],
                                 env={**os.environ, "OMP_NUM_THREADS": str(args.threads)}) for name in RUNS]
    codes = [c.wait() for c in children]
    print(f"trained {RUNS} in {time.time() - start:.0f} s; exit codes {codes}")
    steps = (args.epochs + args.decay_epochs) * args.epoch_images
    print(f"\nCycleGAN {args.size} px, g_blocks {args.g_blocks}, ngf {args.ngf}, {steps} steps of batch 1; "
          f"{args.eval_photos} held-out photos translated at 256 px vs monet-pool120; "
          f"synthetic: {len(list_images(synthetic))} images from {args.synthetic}")
    print(f"{'domain B':>16} {'MiFID':>9} {'FID':>9} {'KID x1000':>10} {'train s':>8} {'translate img/s':>16}")
    for name in RUNS:
        path = Path(args.out) / name / "result.json"
        if not path.is_file():
            print(f"{name:>16}  (failed)")
            continue
        m = json.loads(path.read_text())
        print(f"{name:>16} {m[name + '.mifid']:9.1f} {m[name + '.fid']:9.1f} {1000 * m[name + '.kid']:10.2f} "
              f"{m['train_s']:8.0f} {m['translate_img_per_s']:16.2f}")


if __name__ == "__main__":
    main()
