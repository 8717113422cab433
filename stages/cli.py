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

from lowshot.params import ParamsError, load_params

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="lowshot: a few dozen Monet paintings -> a Monet-style photo translator (DVC pipeline).")
log = logging.getLogger("lowshot")

PARAMS = typer.Option(Path("params.yaml"), "--params", "-p", help="params file to read (validated first)")
QUIET = typer.Option(False, "--quiet", "-q", help="no progress bars; warnings only")


def _run_stage(name: str, params_path: Path, quiet: bool, **kwargs) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        params = load_params(params_path)
    except ParamsError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    stage = importlib.import_module(f"stages.{name}")
    with logging_redirect_tqdm():
        try:
            result = stage.run(params, progress=not quiet, **kwargs)
        except (OSError, ValueError, RuntimeError) as e:
            log.debug("stage %s failed", name, exc_info=True)
            typer.echo(f"error: {name}: {e}", err=True)
            raise typer.Exit(1) from None
    if result is not None and hasattr(result, "describe"):
        typer.echo(f"{name}: {result.describe()}")


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
def translate(params: Path = PARAMS, quiet: bool = QUIET) -> None:
    """Translate the photos (params `translate`) into data/translated/ and submission/images.zip."""
    _run_stage("translate", params, quiet)


@app.command()
def evaluate(params: Path = PARAMS, quiet: bool = QUIET) -> None:
    """FID, KID and MiFID of every image set against the reference (params `evaluate`)."""
    _run_stage("evaluate", params, quiet)


if __name__ == "__main__":
    app()
