"""The `lowshot` command: one subcommand per DVC stage, each reading ./params.yaml (or --params)."""

from __future__ import annotations

import os

# Before torch loads OpenMP: idle threads sleep instead of spinning. On a CPU shared with other work,
# spin-waiting made a training minibatch 3-4x slower (benchmarks/train_throughput.py, --omp-wait).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import importlib
import logging
from pathlib import Path

import typer
from tqdm.contrib.logging import logging_redirect_tqdm

from lowshot.params import Params, ParamsError, load_params

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="lowshot: a few dozen Monet paintings -> a Monet-style photo translator (DVC pipeline).")
log = logging.getLogger("lowshot")

PARAMS = typer.Option(Path("params.yaml"), "--params", "-p", help="params file to read (validated first)")
QUIET = typer.Option(False, "--quiet", "-q", help="no progress bars; warnings only")


def _run_stage(name: str, params_path: Path, quiet: bool, *, optional_params: bool = False, entry: str = "run",
               **kwargs) -> None:
    """Validate the params, run `stages.<name>.<entry>`, print its summary; exit 2 on bad params, 1 on an error
    (or when the summary says something `failed`). `optional_params`: a missing params file means the defaults."""
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        params = Params() if optional_params and not params_path.is_file() else load_params(params_path)
    except ParamsError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    stage = importlib.import_module(f"stages.{name}")
    with logging_redirect_tqdm():
        try:
            result = getattr(stage, entry)(params, progress=not quiet, **kwargs)
        except (OSError, ValueError, RuntimeError) as e:
            log.debug("stage %s failed", name, exc_info=True)
            typer.echo(f"error: {name}: {e}", err=True)
            raise typer.Exit(1) from None
    if result is not None and hasattr(result, "describe"):
        typer.echo(f"{name}: {result.describe()}")
    if getattr(result, "failed", False):
        raise typer.Exit(1)


@app.command()
def scrape(params: Path = PARAMS, quiet: bool = QUIET) -> None:
    """Scrape WikiArt paintings (params `scrape`) into data/scraped/."""
    _run_stage("scrape", params, quiet)


@app.command()
def fetch(params: Path = PARAMS, quiet: bool = QUIET) -> None:
    """Fetch the photo domain and the real Monets (params `fetch`) into data/external/."""
    _run_stage("fetch", params, quiet)


@app.command()
def preprocess(params: Path = PARAMS, quiet: bool = QUIET) -> None:
    """Resize every image set to `preprocess.size` px (params `preprocess`) into data/processed/."""
    _run_stage("preprocess", params, quiet)


@app.command()
def rank(params: Path = PARAMS, quiet: bool = QUIET) -> None:
    """Score the processed paintings (params `rank`); keep the best in data/ranked/top/."""
    _run_stage("rank", params, quiet)


@app.command()
def train(
    params: Path = PARAMS, quiet: bool = QUIET,
    max_ticks: int = typer.Option(None, "--max-ticks", help="stop (saving state) after this many ticks"),
) -> None:
    """Train the low-shot GAN (params `train`) into models/gan/; resumes automatically.

    On several GPUs: torchrun --nproc_per_node N -m stages.cli train
    """
    _run_stage("train", params, quiet, max_ticks=max_ticks)


@app.command()
def generate(
    params: Path = PARAMS, quiet: bool = QUIET,
    interpolate: int = typer.Option(None, "--interpolate", min=2,
                                    help="only write reports/interpolation.png: strips of N images between seeds"),
) -> None:
    """Draw paintings from the trained GAN, keep the most Monet-like (params `generate`) in data/synthetic/."""
    _run_stage("generate", params, quiet, interpolate_steps=interpolate)


def _size(value: str | None) -> tuple[int, int] | None:
    """'WxH' -> (width, height)."""
    if value is None:
        return None
    try:
        width, height = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"expected WIDTHxHEIGHT such as 512x256, got {value!r}") from None
    if not (8 <= width <= 4096 and 8 <= height <= 4096):
        raise typer.BadParameter(f"width and height must be 8..4096 px, got {value!r}")
    return width, height


@app.command()
def singan(
    params: Path = PARAMS, quiet: bool = QUIET,
    size: str = typer.Option(None, "--size", help="draw the variations at WxH (e.g. 512x256) by scaled noise maps, "
                                                  "into data/singan_WxH/ and reports/singan_sheet_WxH.png"),
    max_iters: int = typer.Option(None, "--max-iters", min=1, help="stop (saving state) after this many iterations"),
) -> None:
    """Learn single paintings with ConSinGAN (params `singan`) into models/singan/; draw variations into
    data/singan/. Resumes automatically; trains only paintings whose params changed."""
    _run_stage("singan", params, quiet, size=_size(size), max_iters=max_iters)


@app.command()
def cyclegan(
    params: Path = PARAMS, quiet: bool = QUIET,
    max_steps: int = typer.Option(None, "--max-steps", help="stop (saving state) after this many steps"),
) -> None:
    """Train the photo -> Monet CycleGAN (params `cyclegan`) into models/cyclegan/; resumes automatically.

    On several GPUs: torchrun --nproc_per_node N -m stages.cli cyclegan
    """
    _run_stage("cyclegan", params, quiet, max_steps=max_steps)


@app.command()
def translate(
    params: Path = PARAMS, quiet: bool = QUIET,
    input: Path = typer.Option(None, "--input", "-i", help="a photo or a folder of photos to translate (outside the pipeline)"),
    output: Path = typer.Option(None, "--output", "-o", help="folder for the translations of --input"),
    size: int = typer.Option(256, "--size", min=4, help="with --input: long side of the translations, pixels"),
    keep_size: bool = typer.Option(False, "--keep-size", help="with --input: translate at each photo's own size"),
    fmt: str = typer.Option("jpg", "--format", help="with --input: jpg or png"),
    model: Path = typer.Option(None, "--model", help="with --input: a photo2monet.pt (default: models/cyclegan/)"),
) -> None:
    """Translate the photos (params `translate`) into data/translated/ and submission/images.zip.

    With --input PATH --output DIR: translate your own photo or folder of photos instead, at --size
    (long side, default 256) or --keep-size; large photos are tiled. params.yaml is optional then.
    """
    if input is None:
        if output is not None or model is not None:
            typer.echo("error: translate: --output and --model go with --input", err=True)
            raise typer.Exit(2)
        _run_stage("translate", params, quiet)
        return
    if output is None:
        typer.echo("error: translate: --input needs --output DIR", err=True)
        raise typer.Exit(2)
    _run_stage("translate", params, quiet, optional_params=True, entry="run_paths", source=input, output=output,
               size=None if keep_size else size, fmt=fmt, model=model)


@app.command()
def evaluate(params: Path = PARAMS, quiet: bool = QUIET) -> None:
    """FID, KID and MiFID of every image set against the reference (params `evaluate`)."""
    _run_stage("evaluate", params, quiet)


if __name__ == "__main__":
    app()
