"""History buffer of generated images for the discriminator (Shrivastava et al. 2017, as used by
CycleGAN: junyanz/pytorch-CycleGAN-and-pix2pix `util/image_pool.py`).

D is trained on a mix of the newest fakes and older ones, which damps oscillation. Unlike the
reference, the pool can draw from its own RNG and saves its images and RNG state, so a resumed
run continues with the same pool and the same draws.
"""

from __future__ import annotations

import random
from typing import Any

import torch

Rng = random.Random | torch.Generator | None


class ImagePool:
    """Keeps up to `size` past generated images; `size=0` disables the pool (passthrough).

    `rng` (a `random.Random` or a CPU `torch.Generator`) makes the draws reproducible; without it
    the global `random` module is used and its state is not part of `state_dict()`.
    """

    def __init__(self, size: int = 50, rng: Rng = None) -> None:
        if size < 0:
            raise ValueError(f"ImagePool size must be >= 0, got {size}")
        self.size = size
        self.rng = rng
        self.images: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.images)

    def _uniform(self) -> float:
        if isinstance(self.rng, torch.Generator):
            return float(torch.rand((), generator=self.rng))
        return (self.rng or random).random()

    def _index(self) -> int:
        if isinstance(self.rng, torch.Generator):
            return int(torch.randint(self.size, (), generator=self.rng))
        return (self.rng or random).randrange(self.size)

    @torch.no_grad()
    def query(self, images: torch.Tensor) -> torch.Tensor:
        """Return a detached batch shaped like `images`, drawn image by image: while the pool
        fills, the new image (and it is stored); once full, with probability 1/2 a stored image
        (replaced in the pool by the new one), else the new image. Size 0 returns `images`."""
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif self._uniform() > 0.5:
                i = self._index()
                out.append(self.images[i].to(device=images.device, dtype=images.dtype))
                self.images[i] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict[str, Any]:
        """Size, stored images (CPU tensors) and, when the pool has its own RNG, its state."""
        images = [im.detach().cpu().clone() for im in self.images]
        state: dict[str, Any] = {"size": self.size, "images": images}
        if isinstance(self.rng, torch.Generator):
            state["rng_state"] = self.rng.get_state()
        elif isinstance(self.rng, random.Random):
            state["rng_state"] = self.rng.getstate()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore images (kept on CPU until returned) and, if saved and this pool has an RNG of
        the same kind, the RNG state."""
        if state["size"] != self.size:
            raise ValueError(f"ImagePool state has size {state['size']}, this pool has size {self.size}")
        if len(state["images"]) > self.size:
            n = len(state["images"])
            raise ValueError(f"ImagePool state holds {n} images, more than its size {self.size}")
        self.images = [im.clone() for im in state["images"]]
        rng_state = state.get("rng_state")
        if rng_state is None:
            return
        if isinstance(self.rng, torch.Generator) and isinstance(rng_state, torch.Tensor):
            self.rng.set_state(rng_state)
        elif isinstance(self.rng, random.Random) and isinstance(rng_state, tuple):
            self.rng.setstate(rng_state)
        else:
            raise ValueError("ImagePool state holds an RNG state of another kind than this pool's rng")
