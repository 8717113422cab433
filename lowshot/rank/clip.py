"""CLIP scoring of image files against text prompts, with open_clip.

CLIP: Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
Supervision"; the implementation and weights come from mlfoundations/open_clip (models built
with `create_model_and_transforms`, images through the model's own eval preprocess, texts
through `get_tokenizer`). A painting's score is its mean cosine similarity to the prompts minus
its mean similarity to the negative prompts, the usual zero-shot CLIP ranking.

The scorer is built once and reused: the `rank` stage scores scraped paintings with it and the
`generate` stage filters synthetic paintings with it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import open_clip
import PIL.Image
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from lowshot.precision import FP32, Precision

log = logging.getLogger(__name__)

WEIGHTS_HINT = (
    "Supply the weights another way: download the checkpoint once on a machine with network access and "
    "set rank.pretrained to its local file path, or rank without CLIP weights with "
    "rank.method: exemplar and rank.features: inception_style."
)


class ClipWeightsError(RuntimeError):
    """The CLIP checkpoint is missing, cannot be downloaded, or does not fit the model."""


# --- tiny config (tests and benchmarks only) ------------------------------------------------------

TINY_MODEL = "lowshot-tiny-clip"
# A 2-layer ViT on 32 px inputs and a 2-layer text transformer; ~1.7M parameters, almost all in the
# token embedding (the tokenizer's full 49,408-entry vocabulary). Random weights only: its scores
# mean nothing; it exists so tests and benchmarks can exercise the real open_clip code offline.
TINY_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "mlp_ratio": 2.0, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2, "mlp_ratio": 2.0},
}


def register_tiny_config() -> str:
    """Register TINY_CONFIG with open_clip (idempotent) and return its model name.

    For tests and benchmarks only: build it with `ClipScorer(register_tiny_config(), None, ...)`.
    """
    if TINY_MODEL not in open_clip.list_models():
        # open_clip reads model configs from JSON files; the registry keeps the parsed config after
        # the file is gone, so a throwaway directory is enough.
        with tempfile.TemporaryDirectory(prefix="lowshot-clip-") as tmp:
            path = Path(tmp) / f"{TINY_MODEL}.json"
            path.write_text(json.dumps(TINY_CONFIG))
            open_clip.add_model_config(path)
    return TINY_MODEL


# --- images ---------------------------------------------------------------------------------------


class _ImageFiles(Dataset):
    """Image files decoded and preprocessed (open_clip's eval transform) in DataLoader workers."""

    def __init__(self, paths: Sequence[Path], transform):
        self.paths = paths
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        try:
            with PIL.Image.open(self.paths[i]) as im:
                return self.transform(im.convert("RGB"))
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read image {self.paths[i]}: {e}") from e


# --- the scorer -----------------------------------------------------------------------------------


def _load_model(model: str, pretrained: str | None, device: torch.device):
    """(model, eval preprocess) from open_clip, with every weights failure as a ClipWeightsError."""
    if model not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model {model!r} (open_clip.list_models() names the known ones)")
    if pretrained is None:
        log.warning("CLIP model %s has random weights: its scores are meaningless (tests and benchmarks only)", model)
        with torch.random.fork_rng(devices=[]):  # the same random weights every time, whatever ran before
            torch.manual_seed(0)
            net, _, preprocess = open_clip.create_model_and_transforms(model, pretrained=None, device=device)
        return net, preprocess

    tag_cfg = open_clip.get_pretrained_cfg(model, pretrained)
    if not tag_cfg and not Path(pretrained).is_file():
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model)) or "none"
        raise ClipWeightsError(
            f"CLIP weights {pretrained!r} for model {model} are neither an open_clip pretrained tag "
            f"(tags for {model}: {tags}) nor an existing checkpoint file. {WEIGHTS_HINT}"
        )
    try:
        # Tags trained with QuickGELU (OpenAI's) need it in the model too, or the features drift.
        net, _, preprocess = open_clip.create_model_and_transforms(
            model, pretrained=pretrained, device=device, force_quick_gelu=bool(tag_cfg.get("quick_gelu")),
        )
    except Exception as e:  # download errors, unpickling errors, state-dict mismatches: all one story
        where = "download" if tag_cfg else "load"
        first_line = next(iter(str(e).splitlines()), "")
        raise ClipWeightsError(
            f"could not {where} CLIP weights {pretrained!r} for model {model} "
            f"({type(e).__name__}: {first_line}). {WEIGHTS_HINT}"
        ) from e
    log.info("CLIP model %s with weights %s on %s", model, pretrained, device)
    return net, preprocess


class ClipScorer:
    """An open_clip model and its preprocessing, ready to embed images and texts on `device`.

    `pretrained`: an open_clip pretrained tag (downloaded and cached by open_clip), a local
    checkpoint file, or None for random weights (tests and benchmarks only). Raises
    ClipWeightsError when the weights cannot be had, ValueError for an unknown model name.
    """

    def __init__(
        self, model: str = "ViT-B-32", pretrained: str | None = "openai", *,
        device: str | torch.device, batch_size: int = 64, workers: int = 2, precision: Precision = FP32,
    ):
        if batch_size < 1 or workers < 0:
            raise ValueError(f"need batch_size >= 1 and workers >= 0, got {batch_size}, {workers}")
        self.model_name = model
        self.pretrained = pretrained
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.workers = workers
        self.precision = precision  # autocast of the forward passes (ranking order, not a metric)
        self.model, self.preprocess = _load_model(model, pretrained, self.device)
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(model)
        self.dim = int(open_clip.get_model_config(model)["embed_dim"])

    def encode_images(self, paths: Sequence[str | os.PathLike], *, progress: bool = True) -> np.ndarray:
        """L2-normalised image embeddings of the files `paths`, in order: (N, D) float32.

        Files are decoded and preprocessed in `workers` DataLoader processes (0: in this one);
        an unreadable file raises ValueError naming it.
        """
        paths = [Path(p) for p in paths]
        out = np.empty((len(paths), self.dim), dtype=np.float32)
        if not paths:
            return out
        loader = DataLoader(
            _ImageFiles(paths, self.preprocess), batch_size=self.batch_size, num_workers=self.workers,
            pin_memory=self.device.type == "cuda", prefetch_factor=2 if self.workers > 0 else None,
        )
        done = 0
        with torch.inference_mode(), tqdm(total=len(paths), unit="img", desc="clip", disable=not progress) as bar:
            for batch in loader:
                with self.precision.autocast(self.device):
                    emb = self.model.encode_image(batch.to(self.device, non_blocking=True), normalize=True)
                out[done:done + len(batch)] = emb.float().cpu().numpy()
                done += len(batch)
                bar.update(len(batch))
        return out

    def encode_texts(self, prompts: Sequence[str]) -> np.ndarray:
        """L2-normalised text embeddings of `prompts`, in order: (P, D) float32."""
        if not prompts:
            return np.empty((0, self.dim), dtype=np.float32)
        tokens = self.tokenizer(list(prompts)).to(self.device)
        with torch.inference_mode(), self.precision.autocast(self.device):
            return self.model.encode_text(tokens, normalize=True).float().cpu().numpy()

    def score_features(
        self, image_features: np.ndarray, prompts: Sequence[str], negative_prompts: Sequence[str] = (),
    ) -> np.ndarray:
        """`score` for image embeddings already computed with `encode_images`: (N,) float32."""
        if not prompts:
            raise ValueError("CLIP scoring needs at least one prompt")
        texts = self.encode_texts([*prompts, *negative_prompts])
        sims = image_features @ texts.T  # unit vectors: cosine similarities, (N, P + Q)
        score = sims[:, :len(prompts)].mean(axis=1)
        if negative_prompts:
            score = score - sims[:, len(prompts):].mean(axis=1)
        return score.astype(np.float32)

    def score(
        self, paths: Sequence[str | os.PathLike], prompts: Sequence[str], negative_prompts: Sequence[str] = (),
        *, progress: bool = True,
    ) -> np.ndarray:
        """Per image: mean cosine similarity to `prompts` minus mean similarity to `negative_prompts`
        (0 when there are none). Returns (N,) float32, in the order of `paths`."""
        if not prompts:
            raise ValueError("CLIP scoring needs at least one prompt")
        return self.score_features(self.encode_images(paths, progress=progress), prompts, negative_prompts)
