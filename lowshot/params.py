"""Typed schema of params.yaml: the one place every knob, its default, its unit and its range live.

Each stage validates the whole file before any work (a wrong key anywhere is a stale experiment waiting to
happen), then reads its own section. Unknown keys, wrong types and out-of-range values fail with a message
naming the key, e.g. `scrape.rate_limit.requests must be > 0, got -1`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_PARAMS = Path("params.yaml")


class ParamsError(ValueError):
    """params.yaml is missing, unreadable or invalid; the message names every bad key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


# --- scrape -------------------------------------------------------------------------------------------


class RateLimit(Section):
    requests: int = Field(10, gt=0, description="at most this many request starts ...")
    per_seconds: float = Field(5.0, gt=0, description="... in any window of this many seconds (all workers)")


class ScrapeParams(Section):
    base_url: str = Field("https://www.wikiart.org", description="the only place WikiArt's address lives")
    movements: list[str] = Field(["impressionism"], min_length=1, description="art-movement slugs")
    born_after: int = Field(1800, description="keep artists born in or after this year")
    died_before: int = Field(1950, description="keep artists who died before this year (living: dropped)")
    exclude_artists: list[str] = Field(["claude-monet"], description="artist slugs never scraped")
    genres: list[str] = Field(["landscape"], description="keep these genres; empty = any genre")
    public_domain_only: bool = Field(True, description="keep only paintings marked 'Public domain'")
    image_size: Literal["Large", "HD", "original"] = Field("Large", description="WikiArt size suffix")
    image_hosts: list[str] = Field(["*.wikiart.org"], description="glob patterns of hosts images may come from")
    max_paintings: int | None = Field(2000, gt=0, description="stop after keeping this many; null = no cap")
    max_image_mb: float = Field(20.0, gt=0, description="reject image bodies larger than this, in MiB")
    rate_limit: RateLimit = RateLimit()
    retries: int = Field(5, ge=0, description="retries per request on timeouts, resets, 429 and 5xx")
    timeout_s: float = Field(30.0, gt=0, description="per-request timeout, seconds")
    backoff_s: float = Field(1.0, gt=0, description="first retry delay, doubled each retry (with jitter)")
    max_backoff_s: float = Field(60.0, gt=0, description="cap on one retry delay, unless Retry-After asks more")
    workers: int = Field(4, ge=1, le=32, description="concurrent requests (all under the one rate limit)")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"must be an http(s) URL, got {v!r}")
        return v.rstrip("/")


# --- fetch --------------------------------------------------------------------------------------------

MONET2PHOTO_URL = "https://efrosgans.eecs.berkeley.edu/cyclegan/datasets/monet2photo.zip"


class Source(Section):
    source: str = Field(description="http(s) URL of a zip, or a local folder of images")
    sha256: str | None = Field(None, description="expected sha256 of the downloaded zip (hex)")
    subdirs: list[str] | None = Field(None, description="folders inside the zip/folder to take images from")

    @field_validator("sha256")
    @classmethod
    def _hex64(cls, v: str | None) -> str | None:
        if v is not None and (len(v) != 64 or any(c not in "0123456789abcdefABCDEF" for c in v)):
            raise ValueError(f"must be 64 hex characters, got {v!r}")
        return v.lower() if v else v


class FetchParams(Section):
    photos: Source = Source(source=MONET2PHOTO_URL, subdirs=["monet2photo/trainB", "monet2photo/testB"])
    monet: Source = Source(source=MONET2PHOTO_URL, subdirs=["monet2photo/trainA", "monet2photo/testA"])
    retries: int = Field(5, ge=0, description="retries per request; a dropped download resumes where it was")
    timeout_s: float = Field(60.0, gt=0, description="per-request timeout, seconds")


# --- preprocess ---------------------------------------------------------------------------------------

ResizeMode = Literal["hybrid", "center_crop", "pad", "squeeze"]


class PreprocessParams(Section):
    size: int = Field(256, ge=16, le=2048, description="output side, pixels (square)")
    mode: ResizeMode = Field("hybrid", description="scraped paintings: hybrid = crop to the set's mean aspect, squeeze")
    photos_mode: ResizeMode = Field("center_crop", description="photos")
    monet_mode: ResizeMode = Field("center_crop", description="real Monet paintings")
    min_side: int = Field(128, ge=1, description="reject images whose shorter side is below this, pixels")
    max_megapixels: float = Field(180.0, gt=0, description="reject larger images (decompression bombs)")
    dedupe_distance: int | None = Field(4, ge=0, le=64, description="pHash Hamming distance of near-duplicates; null = off")
    monet_train_count: int = Field(30, ge=1, description="real Monets in the low-shot training set; the rest = reference")
    workers: int = Field(2, ge=1, le=64, description="worker processes")


# --- the file -----------------------------------------------------------------------------------------


class Params(Section):
    seed: int = Field(0, ge=0, description="every random draw comes from this")
    device: str = Field("auto", description="auto (CUDA if present, else CPU), cpu, cuda, cuda:N")
    scrape: ScrapeParams = ScrapeParams()
    fetch: FetchParams = FetchParams()
    preprocess: PreprocessParams = PreprocessParams()

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        raise ValueError(f"must be auto, cpu, cuda or cuda:N, got {v!r}")


_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def _describe(err: dict[str, Any]) -> str:
    key = ".".join(str(p) for p in err["loc"])
    kind, ctx, value = err["type"], err.get("ctx", {}), err.get("input")
    if kind in _BOUNDS:
        bound = next(iter(ctx.values()))
        return f"{key} must be {_BOUNDS[kind]} {bound}, got {value!r}"
    if kind == "extra_forbidden":
        return f"{key} is not a known key"
    if kind == "missing":
        return f"{key} is required"
    if kind == "value_error":
        return f"{key} {str(ctx.get('error', err['msg']))}"
    return f"{key}: {err['msg'][0].lower() + err['msg'][1:]}, got {value!r}"


def parse_params(data: dict[str, Any] | None, origin: str = "params") -> Params:
    """Validate a params mapping; raise ParamsError listing every bad key."""
    try:
        return Params.model_validate(data or {})
    except ValidationError as e:
        lines = [_describe(err) for err in e.errors()]
        raise ParamsError(f"invalid {origin}:\n  " + "\n  ".join(lines)) from None


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    """Read and validate params.yaml."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file {path} not found (run from the project root or pass --params)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ParamsError(f"{path} is not valid YAML: {e}") from None
    if data is not None and not isinstance(data, dict):
        raise ParamsError(f"{path} must hold a mapping of sections, got {type(data).__name__}")
    return parse_params(data, origin=str(path))


def default_params_yaml() -> str:
    """params.yaml text with every default (used to write and to check the shipped params.yaml)."""
    return yaml.safe_dump(Params().model_dump(mode="json"), sort_keys=False)
