"""The `patches` translator's settings, compared on the yardstick's held-out photos in minutes instead of a quarter of an hour.

    python benchmarks/patch_sweep.py NAME [--set KEY=VALUE ...] [--extra DIR] [--photos 200] [--out /tmp/patch-sweep]

Builds `PatchTransfer` from the 30 Monets of monet-train30 (plus every image in `--extra`, e.g. the
`generate` stage's synthetic paintings) with the translator's defaults and `--set` overrides
(params.yaml's `cyclegan.patch_*` keys, e.g. `patch_texture=1.5`, or `PatchTransferConfig`'s fields),
translates the first `--photos` of the yardstick's 500 held-out photos (the last 500 of photos/) as
`translate` does, and scores them and the same photos untranslated against monet-pool120 (never in the
bank) with KID x1000, FID and MiFID. Every run is one line in OUT/results.jsonl; the table of all of them
is printed, the untranslated photos first: on the same photos the rows pair up, so differences smaller
than the yardstick's 500-photo spread still rank settings. `quality.py --translator patches` is the
yardstick itself (500 photos, through the `cyclegan` stage's code).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from _measure import cpu_flags

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pydantic import ValidationError  # noqa: E402

from lowshot.models.patch_transfer import PatchTransfer, PatchTransferConfig  # noqa: E402
from lowshot.params import CycleGANParams  # noqa: E402
from lowshot.train.translator_loop import patch_config  # noqa: E402

DATASETS = ROOT.parent / "shared" / "datasets"


def parse_set(pairs: list[str]) -> tuple[dict[str, str], PatchTransferConfig]:
    """`--set KEY=VALUE` pairs (a `cyclegan.patch_*` param, validated as params.yaml's, or a config field)
    -> the pairs and the translator's config."""
    fields = PatchTransferConfig.__dataclass_fields__
    params = [k for k in CycleGANParams.model_fields if k.startswith("patch_")]
    raw = dict(pair.partition("=")[::2] for pair in pairs)
    for key in raw:
        if key not in params and key not in fields:
            raise SystemExit(f"--set {key}: not one of {', '.join(params)} (params.yaml) or {', '.join(fields)}")
    try:
        config = patch_config(CycleGANParams(**{k: v for k, v in raw.items() if k in params}))
        return raw, replace(config, **{k: (int if fields[k].type == "int" else float)(v)
                                       for k, v in raw.items() if k not in params})
    except (ValueError, ValidationError) as e:
        raise SystemExit(f"--set: {e}") from None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("name")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--extra", type=Path, help="a folder of more paintings for the bank")
    ap.add_argument("--photos", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path("/tmp/patch-sweep"))
    ap.add_argument("--datasets", type=Path, default=DATASETS)
    args = ap.parse_args()

    from lowshot.images.folder import list_images
    from lowshot.metrics.evaluate import evaluate_sets
    from lowshot.train.data import load_image
    from lowshot.translate import translate_photos

    overrides, config = parse_set(args.set)
    files = list_images(args.datasets / "monet-train30") + (list_images(args.extra) if args.extra else [])
    paintings = torch.from_numpy(np.stack([load_image(f, 256) for f in files]))
    model = PatchTransfer(config, paintings)
    photos = list_images(args.datasets / "photos")[-500:][:args.photos]
    held_out = args.out / f"photos-{args.photos}"
    if not held_out.is_dir():
        held_out.mkdir(parents=True)
        for p in photos:
            (held_out / p.name).symlink_to(p)
    run = args.out / args.name
    run.mkdir(parents=True, exist_ok=True)
    mark = run / "settings.json"  # translate keeps JPEGs only while this file (the settings) is unchanged
    mark.write_text(json.dumps({"config": model.config.to_dict(), "paintings": [f.name for f in files]}))
    start = time.time()
    translate_photos(model, mark, photos, run / "translated", batch_size=8, progress=False)
    seconds = time.time() - start
    metrics = evaluate_sets({"translated": run / "translated", "photos": held_out}, args.datasets / "monet-pool120",
                            cache_dir=args.out / "feature-cache", device="cpu", workers=1, progress=False)
    row = {"name": args.name, "set": overrides, "paintings": len(files), "bank": model.bank_size,
           "photos": len(photos), "img_per_s": len(photos) / seconds, "cpu_flags": cpu_flags(),
           "threads": torch.get_num_threads(), **metrics}
    with open(args.out / "results.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    table(args.out / "results.jsonl")


def table(results: Path) -> None:
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    print(f"CPU flags: {rows[-1]['cpu_flags'] or 'none'}; KID x1000 against monet-pool120")
    print("| run | settings | bank | photos/s | KID | FID | MiFID |\n|---|---|---:|---:|---:|---:|---:|")
    first = rows[0]
    print(f"| photos, untranslated | - | - | - | {first['photos.kid'] * 1e3:.1f} ± {first['photos.kid_std'] * 1e3:.1f} "
          f"| {first['photos.fid']:.1f} | {first['photos.mifid']:.1f} |")
    for r in rows:
        settings = ", ".join(f"{k}={v}" for k, v in r["set"].items()) or "defaults"
        print(f"| {r['name']} | {settings} | {r['bank']:,} | {r['img_per_s']:.2f} | {r['translated.kid'] * 1e3:.1f} ± "
              f"{r['translated.kid_std'] * 1e3:.1f} | {r['translated.fid']:.1f} | {r['translated.mifid']:.1f} |")


if __name__ == "__main__":
    main()
