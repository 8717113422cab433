"""Typed schema of params.yaml: the one place every knob, its default, its unit and its range live.

Each stage validates the whole file before any work (a wrong key anywhere is a stale experiment waiting to
happen), then reads its own section. Unknown keys, wrong types and out-of-range values fail with a message
naming the key, e.g. `scrape.rate_limit.requests must be > 0, got -1`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

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
    local_dir: str | None = Field(None, description="a folder of your own paintings used instead of WikiArt (no request made)")
    movements: list[str] = Field(["impressionism"], min_length=1, description="art-movement slugs")
    born_after: int = Field(1800, description="keep artists born in or after this year")
    died_before: int = Field(1950, description="keep artists who died before this year (living: dropped)")
    exclude_artists: list[str] = Field(["claude-monet"], description="artist slugs never scraped")
    genres: list[str] = Field(["landscape"], description="keep these genres; empty = any genre")
    public_domain_only: bool = Field(True, description="keep only paintings marked 'Public domain'")
    image_size: Literal["Large", "HD", "original"] = Field("Large", description="WikiArt size suffix")
    image_hosts: list[str] = Field(["*.wikiart.org"], description="glob patterns of hosts images may come from")
    max_paintings: int | None = Field(2000, ge=0, description="stop after keeping this many; 0 = none (real Monets only: no request, local_dir unread); null = no cap")
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


# --- rank / evaluate ----------------------------------------------------------------------------------


class RankParams(Section):
    method: Literal["clip", "exemplar"] = Field("clip", description="clip: similarity to prompts; exemplar: to the real Monets")
    model: str = Field("ViT-B-32", description="open_clip model name")
    pretrained: str | None = Field("openai", description="open_clip pretrained tag (downloaded, cached) or a local checkpoint path")
    prompts: list[str] = Field(["monet painting"], min_length=1, description="score = mean cosine similarity to these ...")
    negative_prompts: list[str] = Field([], description="... minus the mean similarity to these")
    features: Literal["clip", "inception", "inception_style"] = Field(
        "clip", description="exemplar space: clip; inception (FID pool3); inception_style (channel means and stds "
                            "of three Inception blocks: the best offline ranker, no CLIP weights needed)")
    top_k: int = Field(5, ge=1, description="exemplar score = mean of the top-k similarities to the real Monets")
    center: bool = Field(True, description="exemplar similarities measured around the corpus mean feature")
    top_n: int = Field(400, ge=1, description="keep the best N scraped paintings")
    batch_size: int = Field(64, ge=1, description="images per forward pass")
    workers: int = Field(2, ge=0, le=64, description="decoding worker processes")


class EvaluateParams(Section):
    reference: str = Field("data/processed/monet_ref", description="folder of the reference Monets")
    mifid_eps: float = Field(0.1, gt=0, le=1, description="MiFID memorisation threshold on the mean min cosine distance")
    kid_subsets: int = Field(100, ge=1, description="KID: number of random subsets")
    kid_subset_size: int = Field(1000, ge=2, description="KID: images per subset (clipped to the set sizes)")
    batch_size: int = Field(64, ge=1, description="Inception batch size")
    workers: int = Field(2, ge=0, le=64, description="decoding worker processes")


# --- train (the GAN) / generate -----------------------------------------------------------------------


DIFFAUGMENT_OPS = ("color", "translation", "cutout")


def _check_policy(policy: str, what: str = "") -> str:
    """A DiffAugment policy with its ops checked (ValueError naming an unknown one), normalised."""
    ops = [op.strip() for op in policy.split(",") if op.strip()]
    bad = [op for op in ops if op not in DIFFAUGMENT_OPS]
    if bad:
        raise ValueError(f"{what}has unknown ops {bad} (known: {', '.join(DIFFAUGMENT_OPS)})")
    return ",".join(ops)


class AugParams(Section):
    kind: Literal["ada", "diffaugment", "fixed", "none"] = Field("diffaugment", description="augmentation of D's inputs")
    policy: str = Field("color,translation,cutout", description="DiffAugment ops (kind diffaugment)")
    p: float = Field(0.2, ge=0, le=1, description="ADA probability: fixed value (kind fixed), initial value (kind ada)")
    target: float = Field(0.6, gt=0, lt=1, description="ADA: target of r_t = E[sign(D(real))]")
    speed_kimg: float = Field(500, gt=0, description="ADA: p can move 0 -> 1 in this many thousand images")
    interval: int = Field(4, ge=1, description="ADA: adjust p every this many minibatches")


BASELINE_ARCHS = ("dcgan", "wgan-gp", "resnet-wgan-gp")  # the classic baselines: 32-128 px


class TrainParams(Section):
    arch: Literal["lightweight", "stylegan2", "dcgan", "wgan-gp", "resnet-wgan-gp"] = Field(
        "lightweight", description="lightweight-GAN (FastGAN), StyleGAN2, or the baselines DCGAN, DCGAN-shaped "
        "WGAN-GP and residual WGAN-GP (32-128 px)")
    resolution: int = Field(128, description="image side, pixels: 32, 64, 128 or 256 (the baselines: up to 128)")
    batch: int = Field(16, ge=1, description="images per minibatch (all GPUs together)")
    kimg: float = Field(50.0, gt=0, description="training length, thousands of real images shown to D (0.5 = 500)")
    lr_g: float | None = Field(None, gt=0, description="generator learning rate (two time-scale rule: set lr_d "
                               "apart); null = the arch's reference: stylegan2 0.0025, lightweight and dcgan "
                               "0.0002, wgan-gp and resnet-wgan-gp 0.0001")
    lr_d: float | None = Field(None, gt=0, description="discriminator learning rate; null = the arch's reference (as lr_g)")
    betas: tuple[float, float] | None = Field(None, description="Adam (beta1, beta2) of G and D; null = the arch's "
                                              "reference: stylegan2 [0, 0.99], lightweight and dcgan [0.5, 0.999], "
                                              "wgan-gp and resnet-wgan-gp [0, 0.9]")
    critic_steps: int | None = Field(None, ge=1, description="D (critic) steps per G step, each on its own real "
                                     "minibatch; null = the arch's reference: 5 for wgan-gp and resnet-wgan-gp, else 1")
    ema_kimg: float = Field(5.0, ge=0, description="half-life of the generator EMA, thousands of images (0 = no EMA)")
    ema_rampup: float | None = Field(0.05, ge=0, description="EMA half-life ramp-up as a fraction of images seen (null = off)")
    r1_gamma: float | None = Field(None, ge=0, description="R1 weight (stylegan2); null = 0.0002 * resolution^2 / batch")
    r1_interval: int = Field(16, ge=1, description="lazy R1 every this many D steps (stylegan2)")
    pl_weight: float = Field(2.0, ge=0, description="path length regularisation weight (stylegan2; 0 = off)")
    pl_interval: int = Field(4, ge=1, description="lazy path length every this many G steps (stylegan2)")
    pl_batch_shrink: int = Field(2, ge=1, description="the path length penalty runs on batch / this many latents "
                                                      "(stylegan2; NVlabs' pl_batch_shrink, 2)")
    style_mix_prob: float = Field(0.9, ge=0, le=1, description="style mixing probability (stylegan2)")
    recon_weight: float = Field(1.0, ge=0, description="D's self-supervised reconstruction loss weight (lightweight)")
    gp_weight: float = Field(10.0, ge=0, description="gradient penalty weight lambda (wgan-gp, resnet-wgan-gp)")
    channels: int | None = Field(None, ge=8, description="network width: lightweight ngf=ndf, stylegan2 channel_max, "
                                 "dcgan and wgan-gp ngf=ndf, resnet-wgan-gp dim (null = 32 / 128 / 64 / 64)")
    aug: AugParams = AugParams()
    monet_repeat: int = Field(5, ge=0, description="times each real Monet appears per epoch beside the ranked paintings")
    mirror: bool = Field(True, description="random horizontal flips of the training images")
    tick_kimg: float = Field(1.0, gt=0, description="log, check and save state every this many thousand images")
    snapshot_kimg: float = Field(5.0, gt=0, description="full-state checkpoint every this many thousand images")
    keep_snapshots: int = Field(3, ge=1, description="full-state checkpoints kept (older ones rotated out)")
    fid_every_kimg: float | None = Field(10.0, gt=0, description="FID against monet_ref every this many kimg (null = off)")
    fid_images: int = Field(500, ge=2, description="generated images per FID measurement")
    grid_size: int = Field(16, ge=1, description="images in the fixed-seed sample grid")
    resume_from: str | None = Field(None, description="checkpoint of another run to start from (transfer learning; kimg restarts)")
    workers: int = Field(2, ge=0, le=64, description="data-loading worker processes")

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, v: int, info: ValidationInfo) -> int:
        if v not in (32, 64, 128, 256):
            raise ValueError(f"must be 32, 64, 128 or 256, got {v}")
        arch = info.data.get("arch")
        if arch in BASELINE_ARCHS and v > 128:
            raise ValueError(f"must be 32, 64 or 128 for train.arch {arch}, got {v}")
        return v

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not all(0 <= b < 1 for b in v):
            raise ValueError(f"must be two numbers in [0, 1), got {list(v)}")
        return v

    @field_validator("aug")
    @classmethod
    def _policy(cls, v: AugParams) -> AugParams:
        _check_policy(v.policy, "policy ")
        return v


class GenerateParams(Section):
    count: int = Field(1000, ge=1, description="images drawn from G_ema")
    keep: int = Field(300, ge=1, description="best images kept after scoring with the rank scorer")
    truncation: float = Field(1.0, ge=0, le=2, description="psi toward the tracked mean w (stylegan2; 1 = none)")
    batch_size: int = Field(32, ge=1, description="images per forward pass")


# --- singan (ConSinGAN: one model per painting) ---------------------------------------------------


class SinGANParams(Section):
    paintings: int | list[str] = Field(5, description="paintings of monet_train to learn: a count (drawn by seed) or file names")
    samples: int = Field(20, ge=1, description="variations written per painting")
    size: int = Field(256, ge=16, le=2048, description="side of the written variations, pixels (square)")
    upscale: Literal["resize", "noise"] = Field("resize", description="variations reach `size` from the training size by resizing the drawn image, or by drawing with scaled noise maps")
    stages: int = Field(6, ge=1, le=16, description="pyramid levels = generator stages (the paper: 6)")
    min_size: int = Field(25, ge=8, description="shorter side of the coarsest level, pixels (the paper: 25)")
    max_size: int = Field(128, ge=8, description="longer side of the finest level, pixels (the paper: 250)")
    iterations: int | list[int] = Field(200, description="iterations of every stage, or one count per stage, coarsest first (the paper: 2000)")
    concurrent: int = Field(3, ge=1, description="newest stages trained together")
    lr_scale: float = Field(0.1, gt=0, le=1, description="learning rate factor per stage below the newest")
    lr_g: float = Field(0.0005, gt=0, description="generator learning rate (newest stage)")
    lr_d: float = Field(0.0005, gt=0, description="discriminator learning rate")
    beta1: float = Field(0.5, ge=0, lt=1, description="Adam beta1 (beta2 0.999)")
    lr_decay_at: float = Field(0.8, gt=0, le=1, description="learning rates drop at this fraction of each stage's iterations")
    lr_decay: float = Field(0.1, gt=0, le=1, description="... by this factor")
    d_steps: int = Field(3, ge=1, description="discriminator steps per iteration")
    g_steps: int = Field(3, ge=1, description="generator Adam steps per iteration (on one gradient, as the reference)")
    gp_weight: float = Field(0.1, ge=0, description="WGAN gradient penalty weight")
    recon_weight: float = Field(10.0, ge=0, description="reconstruction MSE weight (fixed noise -> the painting)")
    noise_amp: float = Field(0.1, gt=0, description="a stage's noise amplitude = this x the reconstruction RMSE before it trains")
    channels: int = Field(64, ge=4, description="conv channels of every stage and of the discriminator")
    layers: int = Field(3, ge=1, le=8, description="convs per generator stage (and in the discriminator's body)")
    snapshot_iters: int = Field(100, ge=1, description="full-state checkpoint (and dvclive row) every this many iterations")
    keep_snapshots: int = Field(2, ge=1, description="full-state checkpoints kept per painting while it trains")

    @field_validator("paintings")
    @classmethod
    def _paintings(cls, v: int | list[str]) -> int | list[str]:
        if isinstance(v, int) and v < 1:
            raise ValueError(f"must be a count >= 1 or a list of file names, got {v}")
        if isinstance(v, list):
            if not v:
                raise ValueError("must name at least one painting")
            bad = [n for n in v if not n or "/" in n or "\\" in n]
            if bad or len(set(v)) != len(v):
                raise ValueError(f"must be distinct file names of data/processed/monet_train (no folders), got {v}")
        return v

    @field_validator("iterations")
    @classmethod
    def _iterations(cls, v: int | list[int]) -> int | list[int]:
        if min(v if isinstance(v, list) else [v], default=0) < 1:
            raise ValueError(f"must be a count >= 1 or a list of counts >= 1, got {v}")
        return v

    @model_validator(mode="after")
    def _sizes(self) -> SinGANParams:
        if self.min_size >= self.max_size:
            raise ValueError(f"min_size ({self.min_size}) must be below max_size ({self.max_size})")
        if isinstance(self.iterations, list) and len(self.iterations) != self.stages:
            raise ValueError(f"iterations lists {len(self.iterations)} counts for {self.stages} stages")
        return self


MonetSource = Literal["real", "ranked", "synthetic", "singan"]
TranslatorModel = Literal["cyclegan", "cut", "fastcut", "patches"]

# Reference values of the keys left null, per translator (junyanz CycleGAN; taesungp CUT / FastCUT).
TRANSLATOR_DEFAULTS: dict[str, dict[str, Any]] = {
    "cyclegan": {"antialias": False, "pool_size": 50, "lambda_nce": 0.0, "nce_idt": False,
                 "flip_equivariance": False, "init": "normal"},
    "cut": {"antialias": True, "pool_size": 0, "lambda_nce": 1.0, "nce_idt": True, "flip_equivariance": False,
            "init": "xavier"},
    "fastcut": {"antialias": True, "pool_size": 0, "lambda_nce": 10.0, "nce_idt": False, "flip_equivariance": True,
                "init": "xavier"},
    # no networks: the paintings are the model (models.patch_transfer); the training keys are unused
    "patches": {"antialias": False, "pool_size": 0, "lambda_nce": 0.0, "nce_idt": False, "flip_equivariance": False,
                "init": "normal"},
}


class CycleGANParams(Section):
    model: TranslatorModel = Field(
        "patches", description="patches (the default: no training, each photo given the strokes of the paintings' "
                               "own patches; the patch_* keys; it scores best on a CPU and a GPU, README: Training "
                               "on a CPU), or cut / fastcut (one generator, PatchNCE loss), or cyclegan (two "
                               "generators, cycle loss)")
    patch_size: int = Field(16, ge=2, description="patches: side of the patches a photo is rebuilt from, pixels at "
                                                  "256 px (even; neighbours overlap by half)")
    patch_stride: int = Field(4, ge=1, description="patches: stride of the bank's patches over the paintings "
                                                   "(smaller: more patches to choose from, slower)")
    patch_descriptor: int = Field(8, ge=1, description="patches: patches are compared as this x this block "
                                                       "averages (divides patch_size; smaller keeps less of the photo)")
    patch_colour: float = Field(0.5, ge=0, le=1, description="patches: how far each photo's colour histograms (per "
                                                             "YCbCr channel) move to the paintings' (0 = kept, 1 = "
                                                             "matched: every photo gets the Monets' one palette)")
    patch_detail: float = Field(5.0, gt=0, description="patches: the photo keeps what a Gaussian blur of this sigma "
                                                       "(px) keeps; what is finer is the paintings' strokes (plus "
                                                       "patch_photo_detail of the photo's own)")
    patch_texture: float = Field(2.0, ge=0, description="patches: strength of the paintings' strokes laid "
                                                         "over the blurred photo (1 = their contrast in the paintings; "
                                                         "0 = none: the photo's blur and patch_photo_detail of its "
                                                         "detail)")
    patch_choices: int = Field(4, ge=1, description="patches: each window takes one of its this many nearest "
                                                    "patches, by a fixed pattern (1 = the nearest; more breaks the "
                                                    "grid a flat sky would repeat)")
    patch_photo_detail: float = Field(0.7, ge=0, le=1, description="patches: how much of the photo's own detail "
                                                                   "finer than the blur (edges, thin things) stays "
                                                                   "under the strokes (0 = none, 1 = all of it)")
    size: int = Field(256, description="training crop side, pixels (256; 128 for quick runs)")
    load_size: int | None = Field(
        None, description="side images are resized to before the random crop (null: 286/256 x size, the paper's "
                          "load 286 / crop 256); the photos' own size (256) trains at the scale translate uses")
    monet_sources: dict[MonetSource, float] = Field(
        {"real": 1.0, "ranked": 1.0, "synthetic": 0.0, "singan": 0.0},
        description="domain B: sampling weight of real (monet_train), ranked (data/ranked/top), synthetic (data/synthetic), "
                    "singan (data/singan); 0 = unused (patches: every painting of a source above 0 is in the bank). "
                    "synthetic and singan are 0 by default: both made every translator measured score worse")
    g_blocks: Literal[6, 9] = Field(9, description="ResNet blocks in each generator")
    ngf: int = Field(64, ge=8, description="generator base width")
    ndf: int = Field(64, ge=8, description="PatchGAN discriminator base width")
    d_layers: int = Field(3, ge=1, le=5, description="PatchGAN strided layers (3 = 70x70 receptive field)")
    upsample: Literal["transpose", "resize"] = Field(
        "transpose", description="generator upsampling: transposed convs (the paper) or bilinear resize + conv")
    residual: bool = Field(
        False, description="generators predict a change to the photo (tanh(atanh(photo) + h)), the identity at "
                           "the start of training, instead of a new image")
    antialias: bool | None = Field(
        None, description="blur-pooled downsampling in the generator's encoder and the discriminator instead of "
                          "stride-2 convs (null: cut/fastcut on, as their reference; cyclegan off)")
    gan_loss: Literal["lsgan", "vanilla", "hinge"] = Field("lsgan", description="adversarial loss")
    lambda_cycle: float = Field(10.0, ge=0, description="cyclegan: cycle-consistency weight")
    lambda_identity: float = Field(0.5, ge=0, description="cyclegan: identity loss weight, times lambda_cycle")
    lambda_nce: float | None = Field(None, ge=0, description="cut/fastcut: PatchNCE weight (null: cut 1, fastcut 10)")
    lambda_colour: float = Field(
        0.0, ge=0, description="weight of the colour anchor: L1 between photo and translation, both averaged over "
                               "colour_pool x colour_pool blocks, so the photo keeps its colours and light at that "
                               "scale and the generator changes what is finer; 0 = off (on, it scored worse: README, "
                               "Training on a CPU)")
    colour_pool: int = Field(8, ge=1, description="colour anchor: side of the averaged blocks, pixels")
    nce_idt: bool | None = Field(
        None, description="cut/fastcut: PatchNCE identity loss on Monets, G(monet) vs monet (null: cut on, fastcut off)")
    nce_patches: int = Field(256, ge=1, description="cut/fastcut: patch positions sampled per encoder layer")
    nce_temperature: float = Field(0.07, gt=0, description="cut/fastcut: PatchNCE temperature")
    nce_width: int = Field(256, ge=8, description="cut/fastcut: width of the two-layer MLP head per encoder layer")
    flip_equivariance: bool | None = Field(
        None, description="cut/fastcut: photos flipped at random, features flipped back (null: fastcut on, cut off)")
    lr: float = Field(0.0002, gt=0, description="Adam learning rate of generators and discriminators")
    beta1: float = Field(0.5, ge=0, lt=1, description="Adam beta1")
    beta2: float = Field(0.999, ge=0, lt=1, description="Adam beta2")
    batch: int = Field(1, ge=1, description="images per minibatch and domain (all GPUs together)")
    epochs: int = Field(5, ge=0, description="epochs at the constant learning rate")
    decay_epochs: int = Field(5, ge=0, description="epochs of linear decay of the learning rate to zero")
    epoch_images: int | None = Field(1000, ge=1, description="photos per epoch (null = every photo once)")
    pool_size: int | None = Field(
        None, ge=0, description="history of generated images shown to D, 0 = none (null: cyclegan 50, cut/fastcut 0)")
    diffaugment: str = Field("translation,cutout", description="DiffAugment policy on D's inputs (empty = off); "
                                                              "no color: D must judge the palette")
    ada_target: float | None = Field(
        None, gt=0, lt=1, description="adaptive augmentation (ADA, the bgc pipeline) of D's inputs before "
                                      "DiffAugment, its probability p tuned so that E[sign(D(real) - midpoint)] "
                                      "stays at this target (0.6 in the paper); null = off")
    ada_kimg: float = Field(4.0, gt=0, description="ADA: p can move from 0 to 1 in this many thousand Monets seen "
                                                   "(the paper's 500 suits its millions of images, not our thousands)")
    ema_kimg: float = Field(0.0, ge=0, description="half-life of an exponential moving average of the photo -> Monet "
                                                  "generator, thousands of photos; photo2monet.pt, the grid and the "
                                                  "metrics use the average (0 = off: the trained weights)")
    ema_rampup: float | None = Field(0.05, ge=0, description="EMA half-life capped at this fraction of the photos seen "
                                                             "so far (null = off)")
    mirror: bool = Field(True, description="random horizontal flips")
    eval_every: int | None = Field(1, ge=1, description="FID/MiFID of translated photos every this many epochs (null = off)")
    eval_images: int = Field(250, ge=2, description="photos translated (at 256 px, as translate does) for each FID/MiFID")
    select: Literal["last", "best"] = Field(
        "last", description="which epoch photo2monet.pt holds: the last, or the one with the lowest in-training KID "
                            "(needs eval_every; measured against evaluate.reference, so the evaluate stage's "
                            "score of that epoch is no longer held out)")
    grid_size: int = Field(8, ge=1, description="fixed photos shown with their translations each epoch")
    keep_snapshots: int = Field(2, ge=1, description="full-state checkpoints kept (one per epoch; older rotated out)")
    workers: int = Field(2, ge=0, le=64, description="data-loading worker processes")

    @field_validator("size")
    @classmethod
    def _size(cls, v: int) -> int:
        if v < 32 or v > 256 or v % 4:
            raise ValueError(f"must be a multiple of 4 in 32..256, got {v}")
        return v

    @field_validator("diffaugment")
    @classmethod
    def _policy(cls, v: str) -> str:
        return _check_policy(v)

    @field_validator("monet_sources")
    @classmethod
    def _sources(cls, v: dict[str, float]) -> dict[str, float]:
        if any(w < 0 for w in v.values()) or not any(w > 0 for w in v.values()):
            raise ValueError(f"needs non-negative weights with at least one > 0, got {v}")
        return v

    @model_validator(mode="after")
    def _select(self) -> CycleGANParams:
        if self.select == "best" and not self.eval_every:
            raise ValueError("cyclegan.select: best picks the epoch by its in-training KID; set cyclegan.eval_every")
        return self

    @model_validator(mode="after")
    def _patches(self) -> CycleGANParams:
        if self.patch_size % 2 or self.patch_size % self.patch_descriptor:
            raise ValueError(f"cyclegan.patch_size ({self.patch_size}) must be even and a multiple of "
                             f"cyclegan.patch_descriptor ({self.patch_descriptor})")
        return self

    @model_validator(mode="after")
    def _load_size(self) -> CycleGANParams:
        if self.load_size is not None and self.load_size < self.size:
            raise ValueError(f"cyclegan.load_size ({self.load_size}) must be >= cyclegan.size ({self.size}), the crop")
        return self

    def resolved(self) -> CycleGANParams:
        """A copy with every null key set to the chosen model's reference value (TRANSLATOR_DEFAULTS)."""
        defaults = TRANSLATOR_DEFAULTS[self.model]
        fill = {k: v for k, v in defaults.items() if k in type(self).model_fields and getattr(self, k) is None}
        return self.model_copy(update=fill)

    @property
    def init(self) -> str:
        """Weight init of the model's networks: normal (CycleGAN) or xavier (CUT)."""
        return TRANSLATOR_DEFAULTS[self.model]["init"]


class TranslateParams(Section):
    count: int | None = Field(None, ge=1, description="photos translated (null = all)")
    batch_size: int = Field(16, ge=1, description="photos per forward pass")
    quality: int = Field(95, ge=50, le=100, description="JPEG quality of the translated images")
    workers: int = Field(1, ge=0, le=64, description="photo-decoding worker processes (0 = in the main process)")
    tile: int = Field(1024, ge=32, description="photos larger than this many pixels on a side are translated in "
                                               "overlapping tiles (lowshot translate --input): memory stays bounded")
    tile_overlap: int = Field(64, ge=0, description="overlap of neighbouring tiles, pixels, blended with linear ramps")

    @model_validator(mode="after")
    def _tiles(self) -> TranslateParams:
        if self.tile % 4 or self.tile_overlap % 4 or self.tile_overlap >= self.tile:
            raise ValueError(f"translate.tile ({self.tile}) and translate.tile_overlap ({self.tile_overlap}) must be "
                             "multiples of 4, the overlap smaller than the tile")
        return self


# --- the file -----------------------------------------------------------------------------------------


class Params(Section):
    seed: int = Field(0, ge=0, description="every random draw comes from this")
    device: str = Field("auto", description="auto (CUDA if present, else CPU), cpu, cuda, cuda:N")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="autocast of forward passes in train, generate, cyclegan, translate and CLIP ranking; "
                            "auto = bf16 only where the device runs it natively and fast (measured once per machine)")
    channels_last: Literal["auto", "on", "off"] = Field(
        "off", description="channels_last memory format for the networks; auto = only where measured to win")
    warn_hours: float = Field(12.0, gt=0, description="a training stage whose expected duration on a CPU exceeds "
                                                        "this many hours warns once (see the README's CPU recipe)")
    scrape: ScrapeParams = ScrapeParams()
    fetch: FetchParams = FetchParams()
    preprocess: PreprocessParams = PreprocessParams()
    rank: RankParams = RankParams()
    train: TrainParams = TrainParams()
    generate: GenerateParams = GenerateParams()
    singan: SinGANParams = SinGANParams()
    cyclegan: CycleGANParams = CycleGANParams()
    translate: TranslateParams = TranslateParams()
    evaluate: EvaluateParams = EvaluateParams()

    @field_validator("channels_last", mode="before")
    @classmethod
    def _yaml_switch(cls, v: object) -> object:
        # YAML 1.1 reads a bare on/off as a boolean, and `dvc exp run -S` rewrites params.yaml unquoted.
        return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        raise ValueError(f"must be auto, cpu, cuda or cuda:N, got {v!r}")


_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def _describe(err: dict[str, Any]) -> str:
    key = ".".join(str(p) for p in err["loc"] if p != "[key]")
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
