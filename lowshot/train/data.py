"""Training images: folders (or file lists) with per-source repeat counts, held in memory, and
infinite, seeded, resumable samplers.

A few hundred images at <= 256 px fit in memory as uint8, so images are decoded once (in
`workers` threads) instead of once per epoch; batches are then gathered by index. Images may be
stored at a load size above the training resolution and randomly cropped per draw (CycleGAN's
"resize_and_crop": load 286, crop 256, junyanz/pytorch-CycleGAN-and-pix2pix `data/base_dataset.py`).

A sampler is a pure function of (seed, position): epoch e is a permutation of the repeated index
list drawn from seed and e, with one horizontal-flip bit (and one crop offset) per entry, so a
resumed run sees the identical sequence, and each of several processes takes every world-th entry
of that one global stream. `WeightedSampler` mixes several such streams by sampling weight.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch

from lowshot.fsutil import sha256_file
from lowshot.images.folder import list_images
from lowshot.images.resize import resize_to_square

log = logging.getLogger(__name__)

ImageSource = Sequence[str | os.PathLike] | str | os.PathLike  # a folder or a list of image files
Source = tuple[ImageSource, int]  # (folder or files, repeat count)


def source_files(source: ImageSource) -> tuple[str, list[Path]]:
    """(description, image files) of a folder or an explicit list of files; a missing folder has none."""
    if isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        return str(folder), list_images(folder) if folder.is_dir() else []
    files = [Path(p) for p in source]
    return f"a list of {len(files)} files", files


def sources_digest(sources: Sequence[tuple[ImageSource, float]]) -> str:
    """sha256 over every source's weight (or repeat count) and its files' names and contents: the
    training data's identity, part of a run's fingerprint, so new data never resumes an old run."""
    digest = hashlib.sha256()
    for source, weight in sources:
        _, files = source_files(source)
        digest.update(f"source {float(weight)!r} {len(files)}\n".encode())
        for path in files:
            digest.update(f"{path.name} {sha256_file(path)}\n".encode())
    return digest.hexdigest()


def load_image(path: Path, resolution: int) -> np.ndarray:
    """One image as (3, R, R) uint8, resized (center-cropped if not square) only when needed."""
    try:
        with PIL.Image.open(path) as im:
            rgb = im.convert("RGB")
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read training image {path}: {e}") from e
    if rgb.size != (resolution, resolution):
        rgb, _ = resize_to_square(rgb, resolution, "center_crop")
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1).copy()


class ImageDataset(torch.utils.data.Dataset):
    """Images of several sources at one resolution, each source repeated `repeat` times per epoch.

    `sources`: (folder or list of files, repeat) pairs; repeat 0 leaves a source out. Raises
    FileNotFoundError naming every source when no image is found. Images are held at `load_size`
    (default: `resolution`) and cropped to `resolution` when gathered. `dataset[i]` is entry i of
    the repeated list as a float tensor (3, R, R) in [-1, 1] (centre crop);
    `dataset.batch(entries, flips, offsets)` gathers several, mirrored where `flips` is set.
    """

    def __init__(self, sources: Sequence[Source], resolution: int, *, load_size: int | None = None,
                 workers: int = 2) -> None:
        load_size = resolution if load_size is None else load_size
        if load_size < resolution:
            raise ValueError(f"load size {load_size} is smaller than the crop {resolution}")
        self.resolution, self.load_size = resolution, load_size
        files: list[Path] = []
        entries: list[int] = []
        described = []
        for source, repeat in sources:
            if repeat < 0:
                raise ValueError(f"repeat count of a training source must be >= 0, got {repeat}")
            what, found = source_files(source)
            described.append(f"{what} ({len(found)} images, x{repeat})")
            if repeat == 0 or not found:
                continue
            start = len(files)
            files.extend(found)
            entries.extend(list(range(start, len(files))) * repeat)
        if not entries:
            raise FileNotFoundError("no training images found in: " + "; ".join(described))
        self.files = files
        self.entries = np.asarray(entries, dtype=np.int64)  # entry -> image index
        with ThreadPoolExecutor(max(1, workers)) as pool:
            arrays = list(pool.map(lambda p: load_image(p, load_size), files))
        self.images = torch.from_numpy(np.stack(arrays))  # (N, 3, L, L) uint8
        log.info("training images: %d files, %d entries per epoch, %s", len(files), len(entries), "; ".join(described))

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, entry: int) -> torch.Tensor:
        return self.batch(torch.tensor([entry]))[0]

    @property
    def crop_range(self) -> int:
        """Largest crop offset along each axis: load size - resolution (0: no cropping)."""
        return self.load_size - self.resolution

    def batch(self, entries: torch.Tensor, flips: torch.Tensor | None = None,
              offsets: torch.Tensor | None = None) -> torch.Tensor:
        """Entries (B,) -> float images (B, 3, R, R) in [-1, 1], mirrored where `flips` (B,) is true.

        `offsets` (B, 2): (top, left) of each crop in [0, crop_range]; None: centre crops.
        """
        images = self.images[torch.as_tensor(self.entries)[entries]]
        if self.crop_range:
            if offsets is None:
                offsets = torch.full((len(images), 2), self.crop_range // 2)
            r = self.resolution
            images = torch.stack([im[:, y:y + r, x:x + r] for im, (y, x) in zip(images, offsets.tolist())])
        x = images.float() / 127.5 - 1.0
        if flips is not None and bool(flips.any()):
            x = torch.where(flips.view(-1, 1, 1, 1), x.flip(3), x)
        return x


@dataclass
class SamplerState:
    epoch: int = 0
    position: int = 0  # entries of this epoch already drawn, over all processes

    def as_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}


Items = tuple[np.ndarray, np.ndarray, np.ndarray]  # entries (n,), flips (n,), crop offsets (n, 2)


def _shard(items: Items, rank: int, world: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Process `rank`'s items (every world-th, from `rank`) of a global stream slice, as tensors."""
    mine = slice(rank, None, world)
    return tuple(torch.from_numpy(a[mine].copy()) for a in items)  # type: ignore[return-value]


class InfiniteSampler:
    """Endless stream of (entry, flip, crop offset) over `length` entries: each epoch a fresh
    permutation drawn from (seed, epoch); flips drawn alongside when `mirror`, then (top, left)
    crop offsets uniform in [0, crop] when `crop` > 0 (drawn last, so the crop option leaves the
    order and flips of a stream unchanged). With `world` processes, process `rank` takes stream
    items rank, rank + world, ... . `next_batch(n)` returns this process's next n (entries, flips),
    `next_items(n)` the offsets too, advancing the shared position by n * world; `state_dict` /
    `load_state_dict` save and restore that position, so a resumed stream continues identically.
    """

    def __init__(self, length: int, *, seed: int, mirror: bool, crop: int = 0, rank: int = 0,
                 world: int = 1) -> None:
        if length < 1:
            raise ValueError("sampler needs at least one entry")
        if crop < 0:
            raise ValueError(f"crop range must be >= 0, got {crop}")
        self.length, self.seed, self.mirror, self.crop, self.rank, self.world = length, seed, mirror, crop, rank, world
        self.state = SamplerState()
        self._epoch_cache: tuple[int, Items] | None = None

    def _epoch(self, epoch: int) -> Items:
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(self.length)
            flips = rng.integers(0, 2, self.length).astype(bool) if self.mirror else np.zeros(self.length, bool)
            offsets = rng.integers(0, self.crop + 1, (self.length, 2)) if self.crop else \
                np.zeros((self.length, 2), np.int64)
            self._epoch_cache = (epoch, (order, flips, offsets))
        return self._epoch_cache[1]

    def take(self, count: int) -> Items:
        """The next `count` items of the global stream (all processes' share)."""
        parts: list[Items] = []
        while count > 0:
            epoch = self._epoch(self.state.epoch)
            a = self.state.position
            b = min(self.length, a + count)
            parts.append(tuple(x[a:b] for x in epoch))  # type: ignore[arg-type]
            count -= b - a
            self.state.position = b
            if b == self.length:
                self.state = SamplerState(self.state.epoch + 1, 0)
        if not parts:
            return np.zeros(0, np.int64), np.zeros(0, bool), np.zeros((0, 2), np.int64)
        return tuple(np.concatenate(x) for x in zip(*parts))  # type: ignore[return-value]

    def next_items(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This process's next `n` (entries, flips, offsets): int64 (n,), bool (n,), int64 (n, 2)."""
        return _shard(self.take(n * self.world), self.rank, self.world)

    def next_batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's next `n` (entries, flips), as int64 and bool tensors."""
        entries, flips, _ = self.next_items(n)
        return entries, flips

    def state_dict(self) -> dict[str, int]:
        return self.state.as_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.state = SamplerState(int(state["epoch"]), int(state["position"]))


class WeightedSampler:
    """Endless stream over several sources laid end to end (source i holds entries
    starts[i] .. starts[i] + sizes[i] - 1): each item picks source i with probability
    weights[i] / sum(weights), then takes the next item of that source's own InfiniteSampler,
    so every source is still walked in seeded permutations. Source choices are drawn in blocks of
    BLOCK from (seed, block), a pure function of the position like the sources' streams.
    Sharding (`rank`, `world`), `next_items` and `state_dict` work as in InfiniteSampler.
    """

    BLOCK = 1024

    def __init__(self, sizes: Sequence[int], weights: Sequence[float], *, seed: int, mirror: bool,
                 crop: int = 0, rank: int = 0, world: int = 1) -> None:
        if len(sizes) != len(weights) or not sizes:
            raise ValueError(f"need one weight per source, got {len(sizes)} sizes and {len(weights)} weights")
        w = np.asarray(weights, np.float64)
        if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"source weights must be finite, >= 0 and not all 0, got {list(weights)}")
        self.p = w / w.sum()
        self.starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        seeds = np.random.SeedSequence(seed).generate_state(len(sizes) + 1, np.uint64) >> np.uint64(1)
        self.choice_seed = int(seeds[0])
        self.sources = [InfiniteSampler(n, seed=int(s), mirror=mirror, crop=crop) for n, s in zip(sizes, seeds[1:])]
        self.rank, self.world = rank, world
        self.drawn = 0  # items of the global stream drawn so far
        self._block: tuple[int, np.ndarray] | None = None

    def _choices(self, start: int, count: int) -> np.ndarray:
        """Source indices of global items start .. start + count - 1."""
        parts = []
        while count > 0:
            block, at = divmod(start, self.BLOCK)
            if self._block is None or self._block[0] != block:
                rng = np.random.default_rng([self.choice_seed, block])
                self._block = (block, rng.choice(len(self.p), self.BLOCK, p=self.p))
            n = min(count, self.BLOCK - at)
            parts.append(self._block[1][at:at + n])
            start, count = start + n, count - n
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def take(self, count: int) -> Items:
        """The next `count` items of the global stream; entries index the sources laid end to end."""
        choices = self._choices(self.drawn, count)
        self.drawn += count
        entries = np.empty(count, np.int64)
        flips = np.zeros(count, bool)
        offsets = np.zeros((count, 2), np.int64)
        for i, sampler in enumerate(self.sources):
            mask = choices == i
            e, f, o = sampler.take(int(mask.sum()))
            entries[mask], flips[mask], offsets[mask] = e + self.starts[i], f, o
        return entries, flips, offsets

    def next_items(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This process's next `n` (entries, flips, offsets), as in InfiniteSampler.next_items."""
        return _shard(self.take(n * self.world), self.rank, self.world)

    def source_of(self, entries: np.ndarray | torch.Tensor) -> np.ndarray:
        """The source index of each entry."""
        return np.searchsorted(self.starts, np.asarray(entries), side="right") - 1

    def state_dict(self) -> dict[str, Any]:
        return {"drawn": self.drawn, "sources": [s.state_dict() for s in self.sources]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        sources = state["sources"]
        if len(sources) != len(self.sources):
            raise ValueError(f"sampler state holds {len(sources)} sources, this sampler has {len(self.sources)}")
        self.drawn = int(state["drawn"])
        for sampler, s in zip(self.sources, sources):
            sampler.load_state_dict(s)
