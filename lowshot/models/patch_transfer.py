"""Example-based texture transfer: a photo given the brush strokes of the paintings' own patches.

No network and no training: the "model" is the paintings. A photo's colours are first moved towards the
paintings' (each YCbCr channel's histogram, by `colour`). The photo then keeps what a Gaussian blur of sigma
`detail` keeps (its layout, shading and palette) and `photo_detail` of what is finer (edges, thin things),
and the strokes come from the paintings: every `patch` x `patch` window of the photo (at half-patch stride)
is matched to the most similar painting patch, compared as `descriptor` x `descriptor` block averages
(colour and coarse layout), and that patch's texture (the painting minus its own blur: strokes, canvas,
broken colour) is laid over the blurred photo, `texture` times as strong as in the paintings. The window
picks among its `choices` nearest patches by a fixed pseudo-random pattern over its position, so that a flat
sky is not one patch repeated on a grid. Overlapping textures are added under a Hann window normalised by
the root of its summed squares, not its sum: unrelated textures averaged keep the paintings' contrast
instead of washing out (Heitz & Neyret's variance-preserving blend, 2018). It is the texture transfer of
Efros & Freeman's image quilting (2001) with a soft blend instead of a minimum-error cut.

The bank is every patch of the paintings (and their mirror images) at `bank_stride`. It is searched
coarse to fine: a scan of the patches at `COARSE_STRIDE` (squared L2 on the descriptors projected on their
`COARSE_DIMS` principal axes) finds each window's `COARSE_CANDIDATES` nearest, then every bank patch in those
patches' cells of the coarse grid is compared on its whole descriptor, and the nearest of these are the
window's choices. Neighbouring patches' block averages differ little and a few axes hold most of their
variance, so this finds what the exact search over the whole bank finds at a fraction of its cost (a 4 px
bank is scanned at 8 px, on half of the descriptor: an eighth of the work). Queries and bank go in
chunks so that memory stays bounded.
`PatchTransfer` maps (N, 3, H, W) in [-1, 1] to the same shape, like the translators' generators, so
`translate` runs it as it runs them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# RGB -> YCbCr (JPEG's, full range): luma and two colour differences, so that the colour step moves
# brightness and colour apart.
_YCC = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
# Ranks at which the paintings' colour histograms are tabulated for the colour match.
QUANTILES = 1025
# Distances computed at once: QUERY_CHUNK windows x BANK_CHUNK bank patches in float32 is 16 MiB, whatever the
# batch (the scan is bound by writing its distances to memory; smaller blocks stay nearer the cores).
QUERY_CHUNK, BANK_CHUNK = 512, 8192
# The coarse-to-fine search: the bank is scanned at this stride (px; at bank_stride when that is coarser)...
COARSE_STRIDE = 8
# ...for each window's this many nearest, whose cells of the coarse grid are then searched at bank_stride.
COARSE_CANDIDATES = 16
# The scan compares descriptors projected on the bank's this many principal axes (99.9% of the 30 Monets'
# descriptor variance at 16 px / 8 x 8; 48 axes hold 98% and cost 0.7 KID on 200 held-out photos); the
# refinement compares them whole.
COARSE_DIMS = 96
# Windows whose candidate cells are compared at once (each cell holds (COARSE_STRIDE / bank_stride)^2 patches).
REFINE_CHUNK = 256


@dataclass(frozen=True)
class PatchTransferConfig:
    """The translator's settings (`cyclegan.patch_*` in params.yaml); see the module docstring."""

    patch: int = 16
    bank_stride: int = 4
    descriptor: int = 8
    colour: float = 0.5
    detail: float = 5.0
    texture: float = 2.0
    choices: int = 4
    photo_detail: float = 0.7

    def __post_init__(self) -> None:
        if self.patch < 2 or self.patch % 2:
            raise ValueError(f"patch must be an even number >= 2, got {self.patch}")
        if self.descriptor < 1 or self.patch % self.descriptor:
            raise ValueError(f"descriptor ({self.descriptor}) must divide patch ({self.patch})")
        if self.bank_stride < 1:
            raise ValueError(f"bank_stride must be >= 1, got {self.bank_stride}")
        if not 0.0 <= self.colour <= 1.0:
            raise ValueError(f"colour must be in [0, 1], got {self.colour}")
        if self.detail <= 0:
            raise ValueError(f"detail must be > 0, got {self.detail}")
        if self.texture < 0:
            raise ValueError(f"texture must be >= 0, got {self.texture}")
        if self.choices < 1:
            raise ValueError(f"choices must be >= 1, got {self.choices}")
        if not 0.0 <= self.photo_detail <= 1.0:
            raise ValueError(f"photo_detail must be in [0, 1], got {self.photo_detail}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PatchTransferConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def to_ycc(rgb: Tensor) -> Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> YCbCr."""
    return torch.einsum("ij,njhw->nihw", _YCC.to(rgb), rgb)


def from_ycc(ycc: Tensor) -> Tensor:
    return torch.einsum("ij,njhw->nihw", torch.linalg.inv(_YCC.double()).to(ycc), ycc)


def descriptors(images: Tensor, patch: int, descriptor: int, stride: int) -> Tensor:
    """Block-average descriptors of every `patch` window at `stride`: (N * L, 3 * descriptor^2), windows in
    F.unfold's order (image, then row, then column)."""
    cell = patch // descriptor
    pooled = F.avg_pool2d(images, cell, stride=1)  # pooled[y, x] = mean of the cell whose corner is (y, x)
    cols = F.unfold(pooled, descriptor, dilation=cell, stride=stride)  # (N, 3 * d^2, L)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def gaussian_blur(patches: Tensor, sigma: float) -> Tensor:
    """Each image (or patch) blurred on its own (reflected at its edges), radius 3 sigma capped at its side - 1."""
    radius = min(int(3 * sigma), patches.shape[-1] - 1, patches.shape[-2] - 1)
    taps = torch.exp(-torch.arange(-radius, radius + 1, dtype=patches.dtype, device=patches.device) ** 2
                     / (2 * sigma ** 2))
    taps = taps / taps.sum()
    channels = patches.shape[1]
    out = F.pad(patches, (radius,) * 4, mode="reflect")
    out = F.conv2d(out, taps.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(out, taps.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def channel_quantiles(images: Tensor) -> Tensor:
    """(C, QUANTILES): each channel's values over all `images` at QUANTILES evenly spaced ranks, min to max."""
    count = images.numel() // images.shape[1]
    at = torch.arange(QUANTILES, device=images.device) * (count - 1) // (QUANTILES - 1)  # exact in int64
    # a channel at a time: sorting all at once holds every value three times over (and its sort indices)
    return torch.stack([channel.flatten().sort().values[at] for channel in images.transpose(0, 1)])


def principal_axes(desc: Tensor, dims: int) -> tuple[Tensor | None, Tensor | None]:
    """The mean of `desc` (N, D) and its `dims` principal axes (D, dims), largest variance first; (None, None)
    when `dims` >= D: all of them keep the distances, and skipping the rotation keeps them exactly."""
    if dims >= desc.shape[1]:
        return None, None
    centre = desc.mean(0)
    centred = (desc - centre).double()
    _, vectors = torch.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
    return centre, vectors[:, -dims:].flip(1).to(desc.dtype)


def hann_window(patch: int) -> Tensor:
    """A separable Hann window (plus a floor, so that the borders, covered once, are never divided by zero)."""
    w = torch.hann_window(patch, periodic=True, dtype=torch.float64) + 1e-3
    return (w[:, None] * w[None, :]).float()


def blend_textures(textures: Tensor, n: int, size: tuple[int, int]) -> Tensor:
    """Overlap-add zero-mean `textures` ((n * L, C, p, p), windows at half-patch stride in F.unfold's order
    over images of `size`) under a Hann window w, divided by sqrt(sum w^2): where the overlapping
    textures are unrelated, the sum keeps their variance wherever the windows fall."""
    p, channels = textures.shape[-1], textures.shape[1]
    window = hann_window(p).to(textures)
    cols = (textures * window).reshape(n, -1, channels * p * p).transpose(1, 2)
    squares = (window ** 2).flatten().repeat(channels)[None, :, None].expand(n, -1, cols.shape[-1])
    return F.fold(cols, size, p, stride=p // 2) / F.fold(squares, size, p, stride=p // 2).sqrt()


def windows_at(source: Tensor, image: Tensor, y: Tensor, x: Tensor, offsets: Tensor) -> Tensor:
    """source[image, :, y + offsets, x + offsets] for every (image, y, x) of equal-shaped index tensors:
    (..., C, len(offsets), len(offsets))."""
    channel = torch.arange(source.shape[1], device=source.device)[:, None, None]
    return source[image[..., None, None, None], channel, y[..., None, None, None] + offsets[:, None],
                  x[..., None, None, None] + offsets]


def choice_pattern(windows: int, choices: int) -> Tensor:
    """Which of its `choices` nearest patches each of an image's `windows` takes: a fixed pseudo-random
    pattern, the same for every image and batch, so a translation depends on nothing but its photo."""
    return torch.randint(0, choices, (windows,), generator=torch.Generator().manual_seed(0))


class PatchTransfer(nn.Module):
    """Rebuilds photos from the patches of `paintings` (uint8 (N, 3, H, W), mirrored copies added here)."""

    def __init__(self, config: PatchTransferConfig, paintings: Tensor) -> None:
        super().__init__()
        if paintings.dtype != torch.uint8 or paintings.ndim != 4 or paintings.shape[1] != 3:
            raise ValueError(f"paintings must be uint8 (N, 3, H, W), got {paintings.dtype} {tuple(paintings.shape)}")
        if min(paintings.shape[-2:]) < config.patch:
            raise ValueError(f"paintings ({tuple(paintings.shape[-2:])}) are smaller than a patch ({config.patch})")
        self.config = config
        self.register_buffer("paintings", paintings, persistent=False)
        ycc = to_ycc(torch.cat([paintings, paintings.flip(-1)]).float() / 255)
        self.register_buffer("bank_texture", ycc - gaussian_blur(ycc, config.detail), persistent=False)
        self.register_buffer("quantiles", channel_quantiles(ycc[:len(paintings)]), persistent=False)
        stride, cell = config.bank_stride, config.patch // config.descriptor
        self.ratio = max(1, COARSE_STRIDE // stride)  # bank patches per coarse step, along each axis
        h, w = ycc.shape[-2:]
        self.grid = ((h - config.patch) // stride + 1, (w - config.patch) // stride + 1)
        coarse = stride * self.ratio
        self.coarse_grid = ((h - config.patch) // coarse + 1, (w - config.patch) // coarse + 1)
        desc = descriptors(ycc, config.patch, config.descriptor, coarse)
        centre, basis = principal_axes(desc, COARSE_DIMS if self.ratio > 1 else desc.shape[1])
        self.register_buffer("coarse_centre", centre, persistent=False)
        self.register_buffer("coarse_basis", basis, persistent=False)
        desc = self.project(desc)
        self.register_buffer("coarse_bank", desc, persistent=False)  # the coarse grid's patches, scanned first
        self.register_buffer("coarse_sq", (desc * desc).sum(1), persistent=False)
        self.register_buffer("pooled", F.avg_pool2d(ycc, cell, stride=1), persistent=False)  # any patch's descriptor
        self.bank_size = len(ycc) * self.grid[0] * self.grid[1]
        if self.bank_size < config.choices:
            raise ValueError(f"the paintings hold {self.bank_size} patches, fewer than choices ({config.choices})")

    def nearest(self, queries: Tensor, k: int = 1) -> Tensor:
        """Indices into the bank (its patches at bank_stride, image by image, row by row) of each query
        descriptor's `k` nearest patches by the coarse-to-fine search, nearest first: (Q, k)."""
        return torch.cat([self._nearest(queries[i:i + QUERY_CHUNK], k) for i in range(0, len(queries), QUERY_CHUNK)])

    def project(self, desc: Tensor) -> Tensor:
        """Descriptors as the coarse scan compares them: on the bank's principal axes (the identity, unless
        the search is coarse to fine and the descriptors are longer than COARSE_DIMS)."""
        return desc if self.coarse_basis is None else (desc - self.coarse_centre) @ self.coarse_basis

    def _nearest(self, queries: Tensor, k: int) -> Tensor:
        if self.ratio == 1:  # the coarse grid is the bank: the scan is the whole search, exact
            return self._scan(queries, k)
        cells = self._scan(self.project(queries), max(k, COARSE_CANDIDATES))
        return torch.cat([self._refine(queries[i:i + REFINE_CHUNK], cells[i:i + REFINE_CHUNK], k)
                          for i in range(0, len(queries), REFINE_CHUNK)])

    def _scan(self, queries: Tensor, k: int) -> Tensor:
        """The `k` nearest coarse-grid patches of each (projected) query, by a scan in chunks of the bank."""
        k = min(k, len(self.coarse_bank))
        best = torch.full((len(queries), k), float("inf"), device=queries.device)
        index = torch.zeros(len(queries), k, dtype=torch.long, device=queries.device)
        for start in range(0, len(self.coarse_bank), BANK_CHUNK):
            bank, bank_sq = self.coarse_bank[start:start + BANK_CHUNK], self.coarse_sq[start:start + BANK_CHUNK]
            dist, at = torch.addmm(bank_sq[None, :], queries, bank.T, alpha=-2).topk(min(k, len(bank)), dim=1,
                                                                                   largest=False)
            best, order = torch.cat([best, dist], 1).topk(k, dim=1, largest=False)  # candidates kept in order
            index = torch.cat([index, at + start], 1).gather(1, order)
        return index

    def _refine(self, queries: Tensor, cells: Tensor, k: int) -> Tensor:
        """The `k` nearest bank patches of each query among those in the cells (coarse-grid patches, whose
        cell is the bank patches nearer to it than to any other coarse patch) of its `cells`."""
        r, (gh, gw), (ch, cw) = self.ratio, self.grid, self.coarse_grid
        image, rest = cells // (ch * cw), cells % (ch * cw)
        steps = torch.arange(-(r // 2), r - r // 2, device=cells.device)
        rows = ((rest // cw) * r)[..., None, None] + steps[:, None]  # (Q, C, r, r) in bank rows and columns
        cols = ((rest % cw) * r)[..., None, None] + steps[None, :]
        rows, cols = torch.broadcast_tensors(rows, cols)
        image = image[..., None, None].expand_as(rows)
        inside = (rows >= 0) & (rows < gh) & (cols >= 0) & (cols < gw)
        rows, cols = rows.clamp(0, gh - 1), cols.clamp(0, gw - 1)
        dist = (self._descriptors(image, rows, cols) - queries[:, None, None, None, :]).square().sum(-1)
        dist = dist.masked_fill(~inside, float("inf")).flatten(1)
        order = dist.topk(k, dim=1, largest=False).indices
        return (image * (gh * gw) + rows * gw + cols).flatten(1).gather(1, order)

    def _descriptors(self, image: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
        """The descriptors of the bank patches at (image, row, col) of the bank's grid: (..., 3 * d^2), in
        `descriptors`' order."""
        d, cell, stride = self.config.descriptor, self.config.patch // self.config.descriptor, self.config.bank_stride
        taps = torch.arange(d, device=image.device) * cell
        return windows_at(self.pooled, image, rows * stride, cols * stride, taps).flatten(-3)

    def patches(self, index: Tensor) -> Tensor:
        """The texture of the bank patches at `index`: (Q, 3, patch, patch), YCbCr minus its blur."""
        per_image, stride = self.grid[0] * self.grid[1], self.config.bank_stride
        image, rest = index // per_image, index % per_image
        offsets = torch.arange(self.config.patch, device=index.device)
        return windows_at(self.bank_texture, image, (rest // self.grid[1]) * stride, (rest % self.grid[1]) * stride,
                          offsets)

    def colour_match(self, ycc: Tensor) -> Tensor:
        """Each image's per-channel histogram moved `colour` of the way to the paintings': every value goes
        towards the paintings' value at its rank (ties share their middle rank, so flat areas stay flat)."""
        n, channels = ycc.shape[:2]
        values = ycc.reshape(n * channels, -1)
        ordered = values.sort(-1).values
        ranks = (torch.searchsorted(ordered, values) + torch.searchsorted(ordered, values, right=True) - 1) / 2
        at = ranks / max(values.shape[-1] - 1, 1) * (QUANTILES - 1)
        low = at.floor().long().clamp(max=QUANTILES - 2)
        table = self.quantiles.repeat(n, 1)
        matched = torch.lerp(table.gather(1, low), table.gather(1, low + 1), at - low)
        return torch.lerp(values, matched, self.config.colour).reshape(ycc.shape)

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        p, config = self.config.patch, self.config
        with torch.autocast(x.device.type, enabled=False):  # the search in float32 whatever the stage's precision
            ycc = self.colour_match(to_ycc((x.float() + 1) / 2))
            height, width = ycc.shape[-2:]
            # half a patch of margin all round, plus what makes the windows at half-patch stride cover the image
            padded = F.pad(ycc, (p // 2, p // 2 + (-width) % (p // 2), p // 2, p // 2 + (-height) % (p // 2)),
                           mode="reflect")
            n = len(padded)
            queries = descriptors(padded, p, config.descriptor, p // 2)
            nearest = self.nearest(queries, config.choices)
            pick = choice_pattern(len(queries) // n, config.choices).to(x.device).repeat(n)
            textures = self.patches(nearest.gather(1, pick[:, None])[:, 0])
            texture = blend_textures(textures, n, padded.shape[-2:])[..., p // 2:p // 2 + height, p // 2:p // 2 + width]
            blurred = gaussian_blur(ycc, config.detail)
            out = blurred + config.texture * texture + config.photo_detail * (ycc - blurred)
            return (from_ycc(out).clamp(0, 1) * 2 - 1).to(x.dtype)
