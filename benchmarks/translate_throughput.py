"""`translate` end to end against the generator's forward pass alone: does translation run at the model's speed?

    python benchmarks/translate_throughput.py [--count 1000] [--ngf 32] [--g-blocks 6] [--batch 16]
        [--workers 1] [--precision auto] [--model photo2monet.pt]

Rows, all on the same `--count` photos of ../shared/datasets/photos (256x256 JPEGs), in one process:
- `forward only`: G_AB on photos decoded beforehand into one tensor, batch `--batch`, under the
  precision's autocast: the ceiling.
- `translate_photos`: the translate stage's engine end to end: decoding in `--workers` DataLoader
  processes, the network, JPEG encoding and atomic writes in a writer thread.
- `serial loop (baseline)`: decode a batch, run it, encode and write it, in one thread, as the stage did
  before (what the overlap buys).
Each row gives images/s, its share of `forward only`, and the forward's GFLOP/s (FlopCounterMode) beside
fp32 and bf16 1024^2 matmul GFLOP/s measured in the same run (the ceiling of the hardware).
Without `--model`, a generator of the given widths with random weights is used (the speed is the same).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import PIL.Image
import torch
from torch.utils.flop_counter import FlopCounterMode

from _measure import cpu_flags, matmul
from lowshot.images.folder import list_images
from lowshot.models.cyclegan import CycleGANConfig, ResnetGenerator
from lowshot.precision import resolve_precision
from lowshot.train.checkpoint import load_photo2monet
from lowshot.translate import translate_photos

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"


def decode(path: Path) -> torch.Tensor:
    with PIL.Image.open(path) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB")).transpose(2, 0, 1).copy())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--ngf", type=int, default=32)
    ap.add_argument("--g-blocks", type=int, default=6)
    ap.add_argument("--upsample", default="resize")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    ap.add_argument("--model", help="a photo2monet.pt (default: random weights of the given widths)")
    args = ap.parse_args()
    if not (DATASETS / "photos").is_dir():
        sys.exit(f"skipped: {DATASETS} is absent")
    photos = list_images(DATASETS / "photos")[:args.count]
    precision = resolve_precision(args.precision, torch.device("cpu"))
    if args.model:
        G = load_photo2monet(args.model)
        model_file = Path(args.model)
    else:
        torch.manual_seed(0)
        G = ResnetGenerator.from_config(CycleGANConfig(ngf=args.ngf, g_blocks=args.g_blocks, upsample=args.upsample))
        G.eval().requires_grad_(False)
        tmp_model = Path(tempfile.mkdtemp()) / "g.pt"
        torch.save(G.state_dict(), tmp_model)
        model_file = tmp_model
    flags = cpu_flags()
    f32 = matmul(1024, 5, torch.device("cpu"))
    b16 = matmul(1024, 5, torch.device("cpu"), torch.bfloat16)
    print(f"{len(photos)} photos at 256 px; generator ngf {G.config_dict['ngf'] if hasattr(G, 'config_dict') else args.ngf}, "
          f"threads {torch.get_num_threads()}, {precision.describe()}; CPU flags: {flags}")
    print(f"matmul 1024^2: fp32 {f32[0] / f32[1] / 1e9:.0f} GFLOP/s, bf16 {b16[0] / b16[1] / 1e9:.0f} GFLOP/s")

    x = torch.stack([decode(p) for p in photos])
    with FlopCounterMode(display=False) as counter, torch.inference_mode(), precision.autocast("cpu"):
        G(x[:1].float() / 127.5 - 1)
    flops_per_image = counter.get_total_flops()

    def forward_only() -> None:
        with torch.inference_mode():
            for i in range(0, len(x), args.batch):
                with precision.autocast("cpu"):
                    G(x[i:i + args.batch].float() / 127.5 - 1).float()

    def engine() -> None:
        out = Path(tempfile.mkdtemp())
        translate_photos(G, model_file, photos, out, batch_size=args.batch, precision=precision,
                         workers=args.workers, progress=False)
        shutil.rmtree(out)

    def serial() -> None:
        out = Path(tempfile.mkdtemp())
        with torch.inference_mode():
            for i in range(0, len(photos), args.batch):
                chunk = photos[i:i + args.batch]
                batch = torch.stack([decode(p) for p in chunk]).float() / 127.5 - 1
                with precision.autocast("cpu"):
                    y = G(batch).float()
                for image, p in zip(y, chunk):
                    pixels = ((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
                    buf = io.BytesIO()
                    PIL.Image.fromarray(pixels).save(buf, format="JPEG", quality=95)
                    (out / f"{p.stem}.jpg").write_bytes(buf.getvalue())
        shutil.rmtree(out)

    forward_only()  # warm-up: kernel choices, allocations
    rows = []
    for name, fn in (("forward only", forward_only), ("translate_photos", engine),
                     ("serial loop (baseline)", serial)):
        start = time.perf_counter()
        fn()
        seconds = time.perf_counter() - start
        rows.append((name, len(photos) / seconds, flops_per_image * len(photos) / seconds / 1e9))
    ceiling = rows[0][1]
    print(f"{'run':<24} {'img/s':>7} {'of forward':>10} {'GFLOP/s':>8}")
    for name, rate, gflops in rows:
        print(f"{name:<24} {rate:7.2f} {100 * rate / ceiling:9.0f}% {gflops:8.1f}")


if __name__ == "__main__":
    main()
