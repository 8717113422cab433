"""The quality yardstick: does the translator make photos look like Monets, measured on photos it never saw?

    python benchmarks/quality.py [--translator cut] [--minutes 60 | --steps N] [--recipe cpu]
        [--sources real,synthetic=DIR:0.5,singan=DIR] [--set cyclegan.KEY=VALUE ...] [--train-photos 2000]
        [--eval-photos 500] [--precision auto] [--name NAME] [--out DIR] [--seed 0]
        [--eval-every N [--eval-images 250] [--select best]] [--datasets DIR] [--train-only | --score-only]

The real chain at a fixed budget on ../shared/datasets: train the translator (`train_translator`, the
loop the `cyclegan` stage runs) on the first `--train-photos` of photos/ and on the Monet sources
(`real` = monet-train30; `synthetic`, `singan`, ... = folders given as NAME=DIR, each with an optional
:WEIGHT), translate the last `--eval-photos` of photos/ (never trained on) at 256 px as `translate`
does, and score them against monet-pool120 (never trained on) with KID (mean and std over subsets),
FID and MiFID, beside the same photos untranslated: the baseline a translator must beat. It writes
OUT/NAME/grid.png (16 held-out photos above their translations), OUT/NAME/result.json, and prints the
table of every result.json under OUT, so runs made one at a time (or side by side, one per CPU slot)
line up.

Budget: `--steps N`, or `--minutes M`: a 30-step (`--calibration-steps`) calibration run of the same configuration in this
process measures seconds per step, and the run gets as many steps as fit in M minutes (training only:
translation and scoring come on top). Either way the schedule is the params' (epochs at constant
learning rate, then decay_epochs of linear decay), with `epoch_images` set so that the epochs add up
to the step budget. `--recipe cpu` starts from the README's CPU recipe (`CPU_RECIPE` below) instead of
the params defaults (which suit a GPU); `--set` overrides any `cyclegan` key after that.

`--eval-every N` logs the loop's in-training KID / FID every N epochs, of `--eval-images` training photos
translated and scored against monet-train30 (the training Monets: monet-pool120 stays held out), into
result.json's `in_training`; `--select best` translates with the epoch of lowest in-training KID
(`cyclegan.select`) instead of the last, and scores the last epoch too (`last.*` in result.json,
OUT/NAME/grid-last.png). The in-training metrics' time counts in the training minutes.

Training on one machine and scoring on another (a GPU machine that lacks monet-pool120 or the Inception
weights): `--train-only` there writes OUT/NAME/run/photo2monet.pt and the training facts (steps, minutes,
device, params) in OUT/NAME/result.json; copy both into OUT/NAME here and `--score-only --name NAME` translates
(on this machine's device and precision, which result.json records beside the training's) and scores them.
`--datasets DIR` reads the images from DIR instead of ../shared/datasets.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from _measure import cpu_flags, live_metric

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
# The CPU recipe of the README: 128 px crops of the 256 px photos (the scale translate uses), a narrow
# ResNet-6 generator with resize-conv upsampling. Measured by this script; see the README for figures.
CPU_RECIPE: dict[str, Any] = {"size": 128, "load_size": 256, "g_blocks": 6, "ngf": 32, "ndf": 64,
                              "upsample": "resize", "epochs": 10, "decay_epochs": 10}
CALIBRATION_STEPS, CALIBRATION_WARMUP = 30, 5


def parse_sources(text: str, datasets: Path = DATASETS) -> list[tuple[str, Path, float]]:
    """'real,synthetic=DIR:0.5' -> [(name, folder, weight)]; real is `datasets`/monet-train30."""
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, _, rest = item.partition("=")
        path, weight = rest, 1.0
        if ":" in rest and re.fullmatch(r"[0-9.]+", rest.rsplit(":", 1)[1]):
            path, weight = rest.rsplit(":", 1)[0], float(rest.rsplit(":", 1)[1])
        if name == "real":
            folder = datasets / "monet-train30"
            if path and re.fullmatch(r"[0-9.]+", path):
                weight = float(path)
        elif not path:
            sys.exit(f"--sources: {name} needs a folder, e.g. {name}=/path/to/images[:weight]")
        else:
            folder = Path(path)
        if not folder.is_dir():
            sys.exit(f"--sources: {folder} is not a folder")
        if "monet-pool120" in str(folder.resolve()):
            sys.exit("--sources: monet-pool120 is the reference; never train on it")
        out.append((name, folder, weight))
    return out


def parse_set(pairs: list[str]) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.removeprefix("cyclegan.")
        if not key or not sep:
            sys.exit(f"--set {pair!r}: expected KEY=VALUE")
        out[key] = yaml.safe_load(value) if value.strip() else ""  # diffaugment= : off, not null
    return out


def build_params(args: argparse.Namespace, steps: int):
    from lowshot.params import CycleGANParams

    base = dict(CPU_RECIPE) if args.recipe == "cpu" else {}
    base.update(model=args.translator, eval_every=args.eval_every, eval_images=args.eval_images, workers=1)
    if args.select:
        base["select"] = args.select
    base.update(parse_set(args.set))
    cfg = CycleGANParams(**base)
    epochs = cfg.epochs + cfg.decay_epochs
    if epochs < 1:
        sys.exit("epochs + decay_epochs must be >= 1")
    return cfg.model_copy(update={"epoch_images": max(1, round(steps * cfg.batch / epochs))})


def calibrate(args: argparse.Namespace, train_photos: list[Path], monet: list, out: Path, device, precision) -> float:
    """Seconds per training step of this configuration, from a short run in a scratch folder."""
    from lowshot.train.translator_loop import train_translator

    cfg = build_params(args, 10_000).model_copy(update={"eval_every": None, "select": "last"})
    scratch = out / "calibration"

    def seconds(steps: int) -> float:
        shutil.rmtree(scratch, ignore_errors=True)
        start = time.perf_counter()
        train_translator(cfg, photos=train_photos, monet=monet, out_dir=scratch, live_dir=None, device=device,
                         seed=args.seed, precision=precision, progress=False, max_steps=steps)
        spent = time.perf_counter() - start
        shutil.rmtree(scratch, ignore_errors=True)
        return spent

    # A first, discarded run pays the process's one-time costs (kernel choices, allocator growth); then
    # both timed runs pay the same setup (data, networks), and their difference is the extra steps alone.
    # Without the discarded run, 7 calibrated minutes of CUT trained for 9.6 (the first run's one-time costs
    # were likely subtracted from the second's steps); the real run's per-epoch saves add a little more.
    # The table reports the minutes each run really trained.
    seconds(CALIBRATION_WARMUP)
    short = seconds(CALIBRATION_WARMUP)
    return (seconds(args.calibration_steps) - short) / (args.calibration_steps - CALIBRATION_WARMUP)


def grid(photos: list[Path], translated: list[Path], path: Path, per_row: int = 8) -> None:
    """Rows of `per_row` photos, each row above its translations."""
    import numpy as np
    import PIL.Image
    import torch

    from lowshot.images.grid import save_grid
    from lowshot.train.data import load_image

    rows = []
    for i in range(0, len(photos), per_row):
        rows += [load_image(p, 256) for p in photos[i:i + per_row]]
        rows += [np.asarray(PIL.Image.open(p).convert("RGB")).transpose(2, 0, 1) for p in translated[i:i + per_row]]
    save_grid(torch.from_numpy(np.stack(rows)).float() / 127.5 - 1, path, ncols=per_row)


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    """Train (unless --score-only), then translate and score (unless --train-only); OUT/NAME/result.json."""
    from lowshot.images.folder import list_images
    from lowshot.runtime import pick_device, pick_precision
    from lowshot.train.checkpoint import PHOTO2MONET_FILE

    photos = list_images(args.datasets / "photos")
    needed = (0 if args.score_only else args.train_photos) + (0 if args.train_only else args.eval_photos)
    if len(photos) < needed:
        sys.exit(f"{args.datasets / 'photos'} holds {len(photos)} photos, fewer than the {needed} this run needs")
    out = Path(args.out) / args.name
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(args.device)
    precision = pick_precision(args.precision, device, args.channels_last, stage="quality")
    result_file = out / "result.json"
    previous = json.loads(result_file.read_text()) if result_file.is_file() else {}
    if args.score_only:
        if not previous or not (out / "run" / PHOTO2MONET_FILE).is_file():
            sys.exit(f"--score-only: {out} holds no trained run (run/{PHOTO2MONET_FILE} and result.json, "
                     "as --train-only writes them)")
        trained, unchanged = previous, True
    else:
        trained, unchanged = train(args, photos[:args.train_photos], out, device, precision, previous)
        result_file.write_text(json.dumps(trained, indent=1))  # the training facts alone until the scores join them
        if args.train_only:
            return trained
    scores = score(args, photos[-args.eval_photos:], out, trained["select"], device, precision)
    if unchanged and "translate_img_per_s" in previous:  # a rescoring finds its JPEGs made: keep the speed they took
        scores |= {k: previous[k] for k in ("translate_img_per_s", "translate_threads") if k in previous}
    result = trained | scores
    result_file.write_text(json.dumps(result, indent=1))
    return result


def train(args: argparse.Namespace, train_photos: list[Path], out: Path, device, precision,
          previous: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Train the run's translator into OUT/NAME/run (resuming one killed part-way): its training facts, and
    whether the run had already finished (`previous`, its last result.json, then keeps its timings)."""
    import torch

    from lowshot.train.checkpoint import latest_state, load_state
    from lowshot.train.translator_loop import train_translator

    monet = [(folder, weight) for _, folder, weight in parse_sources(args.sources, args.datasets)]
    seconds_per_step = None
    if args.translator == "patches":
        args.steps = 0  # nothing to train: the paintings are the model
    if args.steps is None:
        seconds_per_step = calibrate(args, train_photos, monet, out, device, precision)
        args.steps = max(1, int(args.minutes * 60 / seconds_per_step))
        print(f"calibration: {seconds_per_step:.3f} s/step -> {args.steps} steps in {args.minutes:g} min", flush=True)
    cfg = build_params(args, args.steps)
    steps = 0 if cfg.model == "patches" else (cfg.epochs + cfg.decay_epochs) * cfg.epoch_images // cfg.batch
    # A rerun of a finished run only rescores it (say, after the scoring changed): keep the timings it trained with.
    state_file = latest_state(out / "run")
    finished = state_file is not None and previous.get("steps") == steps and \
        load_state(state_file)["progress"]["step"] >= steps
    live_dir = out / "live" if importlib.util.find_spec("dvclive") else None
    if live_dir is None:
        print("dvclive is not installed here: no dvclive logs (run/losses.jsonl still has every step)", flush=True)
    start = time.time()
    # In-training metrics (and `select: best`) measure against the training Monets: monet-pool120 stays
    # held out for the score.
    train_translator(cfg, photos=train_photos, monet=monet, out_dir=out / "run", live_dir=live_dir,
                     device=device, seed=args.seed, precision=precision, progress=args.progress,
                     eval_reference=args.datasets / "monet-train30", metrics_cache=Path(args.out) / "feature-cache")
    train_s = time.time() - start
    trained = {
        "name": args.name, "translator": cfg.model, "sources": args.sources, "steps": steps, "select": cfg.select,
        "in_training": in_training(out / "live"), "params": cfg.model_dump(mode="json"), "train_s": train_s,
        "s_per_step": train_s / max(steps, 1), "calibrated_s_per_step": seconds_per_step, "precision": precision.describe(),
        "threads": torch.get_num_threads(), "train_device": device_name(device),
    }
    if finished:
        trained |= {k: previous[k] for k in ("train_s", "s_per_step", "calibrated_s_per_step", "threads")}
    return trained, finished


def score(args: argparse.Namespace, eval_photos: list[Path], out: Path, select: str, device,
          precision) -> dict[str, Any]:
    """Translate the held-out photos with OUT/NAME/run/photo2monet.pt and score them (and the photos untranslated)
    against monet-pool120; with `select: best` and the run's states here, the last epoch too."""
    import torch

    from lowshot.metrics.evaluate import evaluate_sets
    from lowshot.train.checkpoint import PHOTO2MONET_FILE, latest_state, load_photo2monet
    from lowshot.translate import translate_photos

    G = precision.prepare(load_photo2monet(out / "run" / PHOTO2MONET_FILE, device))
    start = time.time()
    translated = translate_photos(G, out / "run" / PHOTO2MONET_FILE, eval_photos, out / "translated",
                                  batch_size=8, precision=precision, progress=False)
    translate_s = time.time() - start
    held_out = out.parent / f"photos-last{args.eval_photos}"
    if not held_out.is_dir():
        held_out.mkdir()
        for p in eval_photos:
            (held_out / p.name).symlink_to(p)
    sets = {"translated": out / "translated", "photos": held_out}
    grid(eval_photos[:16], translated[:16], out / "grid.png")
    last_file = latest_state(out / "run") if select == "best" else None
    if last_file is not None:  # the last epoch too, scored the same way: did picking an epoch pay?
        last = precision.prepare(load_photo2monet(last_file, device))
        last_translated = translate_photos(last, last_file, eval_photos, out / "translated-last",
                                           batch_size=8, precision=precision, progress=False)
        sets["last"] = out / "translated-last"
        grid(eval_photos[:16], last_translated[:16], out / "grid-last.png")
    metrics = evaluate_sets(sets, args.datasets / "monet-pool120", cache_dir=Path(args.out) / "feature-cache",
                            device=device, workers=1, progress=False, seed=args.seed)
    if last_file is not None:
        metrics["last.epoch"] = last.epoch
    return {
        "translated_epoch": G.epoch, "translate_img_per_s": len(eval_photos) / translate_s,
        "translate_precision": precision.describe(), "translate_threads": torch.get_num_threads(),
        "translate_device": device_name(device), "cpu_flags": cpu_flags(),
        "machine": platform.processor() or platform.machine(), "eval_photos": len(eval_photos), **metrics,
    }


def device_name(device) -> str:
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()


def in_training(live: Path) -> list[dict[str, float]]:
    """The in-training KID / FID against monet-train30 per evaluated epoch (dvclive's tables), if any."""
    base = live / "plots" / "metrics" / "metrics"
    kid, fid = live_metric(base / "kid.tsv"), live_metric(base / "fid.tsv")
    return [{"epoch": step + 1, "kid": kid[step], "fid": fid[step]} for step in sorted(kid)]


def table(out: Path) -> None:
    results = [json.loads(p.read_text()) for p in sorted(out.glob("*/result.json"))]
    results = [r for r in results if "translated.kid" in r]  # --train-only runs await their scores
    if not results:
        print(f"no results under {out}")
        return
    first = results[0]
    print(f"\n{first['eval_photos']} held-out photos (the last of photos/) translated at 256 px, scored against "
          f"monet-pool120 (120 Monets never trained on); CPU flags: {first['cpu_flags']}")
    print(f"{'run':<28} {'translator':<9} {'steps':>6} {'train min':>9} {'s/step':>7} {'thr':>3} "
          f"{'KID x1000':>14} {'FID':>7} {'MiFID':>7} {'img/s':>6}  trained on")
    print(f"{'photos, untranslated':<28} {'-':<9} {'-':>6} {'-':>9} {'-':>7} {'-':>3} "
          f"{1000 * first['photos.kid']:7.1f} ± {1000 * first['photos.kid_std']:4.1f} {first['photos.fid']:7.1f} "
          f"{first['photos.mifid']:7.1f} {'-':>6}")
    for r in results:
        print(f"{r['name']:<28} {r['translator']:<9} {r['steps']:>6} {r['train_s'] / 60:9.1f} {r['s_per_step']:7.3f} "
              f"{r['threads']:>3} {1000 * r['translated.kid']:7.1f} ± {1000 * r['translated.kid_std']:4.1f} "
              f"{r['translated.fid']:7.1f} {r['translated.mifid']:7.1f} {r['translate_img_per_s']:6.2f}  "
              f"{r.get('train_device', r['machine'])}")
        if "last.kid" in r:  # a select: best run, its last epoch scored beside the chosen one
            label = f"{r['name'][:20]} (last)"
            print(f"{label:<28} {'':<9} {'':>6} {'':>9} {'':>7} {'':>3} "
                  f"{1000 * r['last.kid']:7.1f} ± {1000 * r['last.kid_std']:4.1f} {r['last.fid']:7.1f} "
                  f"{r['last.mifid']:7.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--translator", default="cut", choices=("cyclegan", "cut", "fastcut", "patches"),
                    help="patches learns nothing (no budget: it only gathers the paintings)")
    budget = ap.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=60.0, help="training budget, calibrated to steps")
    budget.add_argument("--steps", type=int, help="training steps (instead of --minutes)")
    ap.add_argument("--calibration-steps", type=int, default=CALIBRATION_STEPS,
                    help="steps of the timed calibration run (more on a fast GPU, where 30 pass in a second)")
    ap.add_argument("--recipe", choices=("cpu", "defaults"), default="cpu")
    ap.add_argument("--sources", default="real", help="Monet sources: real (monet-train30), NAME=DIR[:WEIGHT], ...")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a cyclegan key")
    ap.add_argument("--train-photos", type=int, default=2000)
    ap.add_argument("--eval-photos", type=int, default=500)
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    ap.add_argument("--channels-last", default="off", choices=("auto", "on", "off"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", help="run folder name (default: translator and budget)")
    ap.add_argument("--out", default="/tmp/lowshot-quality")
    ap.add_argument("--eval-every", type=int, default=None,
                    help="in-training KID/FID of translated training photos against monet-train30 every N epochs")
    ap.add_argument("--eval-images", type=int, default=250, help="photos translated for each in-training metric")
    ap.add_argument("--select", choices=("last", "best"), default=None,
                    help="translate with the last epoch or the one of lowest in-training KID (needs --eval-every)")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--datasets", type=Path, default=DATASETS,
                    help="the folder holding photos/, monet-train30/ and monet-pool120/ (default: ../shared/datasets)")
    split = ap.add_mutually_exclusive_group()
    split.add_argument("--train-only", action="store_true",
                       help="train and stop: OUT/NAME/run/photo2monet.pt and the training facts in OUT/NAME/result.json "
                            "(monet-pool120 need not be there)")
    split.add_argument("--score-only", action="store_true",
                       help="translate and score OUT/NAME/run/photo2monet.pt (from --train-only, maybe on another "
                            "machine) without training")
    ap.add_argument("--table", action="store_true", help="only print the table of the runs under --out")
    args = ap.parse_args()
    if args.table:
        table(Path(args.out))
        return
    needed = ["photos"] + ([] if args.score_only else ["monet-train30"]) + ([] if args.train_only else ["monet-pool120"])
    if missing := [name for name in needed if not (args.datasets / name).is_dir()]:
        sys.exit(f"skipped: {', '.join(str(args.datasets / name) for name in missing)} absent")
    if args.calibration_steps <= CALIBRATION_WARMUP:
        sys.exit(f"--calibration-steps must exceed {CALIBRATION_WARMUP}")
    if args.score_only and not args.name:
        sys.exit("--score-only needs --name: the run folder under --out to score")
    args.name = args.name or (args.translator if args.translator == "patches" else
                              f"{args.translator}-{args.steps or f'{args.minutes:g}min'}")
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    r = run_one(args)
    if args.train_only:
        print(f"{r['name']}: {r['steps']} steps in {r['train_s'] / 60:.1f} min on {r['train_device']}; score it with "
              f"--score-only --name {r['name']}")
        return
    print(f"{r['name']}: KID {r['translated.kid']:.4f} ± {r['translated.kid_std']:.4f} (photos "
          f"{r['photos.kid']:.4f}), FID {r['translated.fid']:.1f} (photos {r['photos.fid']:.1f}), MiFID "
          f"{r['translated.mifid']:.1f}; {r['steps']} steps in {r['train_s'] / 60:.1f} min")
    table(Path(args.out))


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
