"""Training images for the GAN: folders (or file lists) with per-source repeat counts, held in
memory at the training resolution, and an infinite, seeded, resumable sampler.

A few hundred images at <= 256 px fit in memory as uint8, so images are decoded once (in
`workers` threads) instead of once per epoch; batches are then gathered by index. The sampler is
a pure function of (seed, position): epoch e is a permutation of the repeated index list drawn
from seed and e, with one horizontal-flip bit per entry, so a resumed run sees the identical
sequence, and each of several processes takes every world-th entry of that one global stream.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from lowshot.images.folder import list_images
from lowshot.images.resize import resize_to_square

log = logging.getLogger(__name__)

Source = tuple[Sequence[str | os.PathLike] | str | os.PathLike, int]  # (folder or files, repeat count)


def _source_files(source: Sequence[str | os.PathLike] | str | os.PathLike) -> tuple[str, list[Path]]:
    """(description, image files) of a folder or an explicit list of files."""
    if isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        return str(folder), list_images(folder) if folder.is_dir() else []
    files = [Path(p) for p in source]
    return f"a list of {len(files)} files", files


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
    FileNotFoundError naming every source when no image is found. `dataset[i]` is entry i of the
    repeated list as a float tensor (3, R, R) in [-1, 1]; `dataset.batch(entries, flips)` gathers
    several, mirrored where `flips` is set.
    """

    def __init__(self, sources: Sequence[Source], resolution: int, *, workers: int = 2) -> None:
        self.resolution = resolution
        files: list[Path] = []
        entries: list[int] = []
        described = []
        for source, repeat in sources:
            if repeat < 0:
                raise ValueError(f"repeat count of a training source must be >= 0, got {repeat}")
            what, found = _source_files(source)
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
            arrays = list(pool.map(lambda p: load_image(p, resolution), files))
        self.images = torch.from_numpy(np.stack(arrays))  # (N, 3, R, R) uint8
        log.info("training images: %d files, %d entries per epoch, %s", len(files), len(entries), "; ".join(described))

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, entry: int) -> torch.Tensor:
        return self.batch(torch.tensor([entry]))[0]

    def batch(self, entries: torch.Tensor, flips: torch.Tensor | None = None) -> torch.Tensor:
        """Entries (B,) -> float images (B, 3, R, R) in [-1, 1], mirrored where `flips` (B,) is true."""
        x = self.images[torch.as_tensor(self.entries)[entries]].float() / 127.5 - 1.0
        if flips is not None and bool(flips.any()):
            x = torch.where(flips.view(-1, 1, 1, 1), x.flip(3), x)
        return x


@dataclass
class SamplerState:
    epoch: int = 0
    position: int = 0  # entries of this epoch already drawn, over all processes

    def as_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}


class InfiniteSampler:
    """Endless stream of (entry, flip) over `length` entries: each epoch a fresh permutation drawn
    from (seed, epoch); flips drawn alongside when `mirror`. With `world` processes, process
    `rank` takes stream items rank, rank + world, ... . `next_batch(n)` returns this process's
    next n items, advancing the shared position by n * world; `state_dict` / `load_state_dict`
    save and restore that position, so a resumed stream continues identically.
    """

    def __init__(self, length: int, *, seed: int, mirror: bool, rank: int = 0, world: int = 1) -> None:
        if length < 1:
            raise ValueError("sampler needs at least one entry")
        self.length, self.seed, self.mirror, self.rank, self.world = length, seed, mirror, rank, world
        self.state = SamplerState()
        self._epoch_cache: tuple[int, np.ndarray, np.ndarray] | None = None

    def _epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(self.length)
            flips = rng.integers(0, 2, self.length).astype(bool) if self.mirror else np.zeros(self.length, bool)
            self._epoch_cache = (epoch, order, flips)
        return self._epoch_cache[1], self._epoch_cache[2]

    def _take(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The next `count` items of the global stream."""
        entries, flips = [], []
        while count > 0:
            order, flip = self._epoch(self.state.epoch)
            a = self.state.position
            b = min(self.length, a + count)
            entries.append(order[a:b])
            flips.append(flip[a:b])
            count -= b - a
            self.state.position = b
            if b == self.length:
                self.state = SamplerState(self.state.epoch + 1, 0)
        return np.concatenate(entries), np.concatenate(flips)

    def next_batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's next `n` (entries, flips), as int64 and bool tensors."""
        entries, flips = self._take(n * self.world)
        mine = slice(self.rank, None, self.world)
        return torch.from_numpy(entries[mine].copy()), torch.from_numpy(flips[mine].copy())

    def state_dict(self) -> dict[str, int]:
        return self.state.as_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.state = SamplerState(int(state["epoch"]), int(state["position"]))
