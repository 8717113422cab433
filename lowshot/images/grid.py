"""Image grids: the one helper that lays images out in rows, optionally labelled, for sample
grids during training and for the rank contact sheet (`lowshot.rank.ranking.rank_sheet`).

Layout, so callers and tests can reason about pixel positions: cells of the images' own size
(all images must share one size), each followed by a LABEL_PX-high white strip when labels are
given, with `pad` pixels of background between cells and around the border. Columns are always
`ncols`; cells past the last image stay background.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
import torch

from lowshot.fsutil import atomic_path

BACKGROUND = (255, 255, 255)
TEXT_COLOR = (0, 0, 0)
FONT_PX = 10  # PIL's default font at its default size
LABEL_PX = FONT_PX + 4  # height of the strip under each cell that holds its label


def default_font(size: int = FONT_PX) -> PIL.ImageFont.ImageFont | PIL.ImageFont.FreeTypeFont:
    """PIL's built-in font (no font files needed), `size` pixels high."""
    return PIL.ImageFont.load_default(size=size)


def to_pil_images(images: Sequence[PIL.Image.Image] | torch.Tensor) -> list[PIL.Image.Image]:
    """PIL images as RGB, or a (N, 3, H, W) tensor in [-1, 1] as RGB PIL images (values clamped)."""
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected an image tensor of shape (N, 3, H, W), got {tuple(images.shape)}")
        pixels = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        array = pixels.permute(0, 2, 3, 1).cpu().numpy()
        return [PIL.Image.fromarray(np.ascontiguousarray(a), "RGB") for a in array]
    return [im if im.mode == "RGB" else im.convert("RGB") for im in images]


def image_grid(
    images: Sequence[PIL.Image.Image] | torch.Tensor, *, ncols: int, pad: int = 2,
    labels: Sequence[str] | None = None,
) -> PIL.Image.Image:
    """Lay `images` out row by row in `ncols` columns; return one RGB PIL image.

    `images`: PIL images of one size, or a (N, 3, H, W) tensor in [-1, 1]. `labels`, when given,
    one per image, are drawn in a strip under each cell with PIL's default font.
    """
    pil = to_pil_images(images)
    if not pil:
        raise ValueError("image_grid needs at least one image")
    if ncols < 1 or pad < 0:
        raise ValueError(f"need ncols >= 1 and pad >= 0, got ncols={ncols}, pad={pad}")
    sizes = {im.size for im in pil}
    if len(sizes) != 1:
        raise ValueError(f"all images of a grid must have one size, got {sorted(sizes)}")
    if labels is not None and len(labels) != len(pil):
        raise ValueError(f"got {len(labels)} labels for {len(pil)} images")

    w, h = pil[0].size
    cell_h = h + (LABEL_PX if labels is not None else 0)
    nrows = -(-len(pil) // ncols)
    grid = PIL.Image.new("RGB", (ncols * w + (ncols + 1) * pad, nrows * cell_h + (nrows + 1) * pad), BACKGROUND)
    draw = PIL.ImageDraw.Draw(grid)
    font = default_font()
    for i, im in enumerate(pil):
        row, col = divmod(i, ncols)
        x, y = pad + col * (w + pad), pad + row * (cell_h + pad)
        grid.paste(im, (x, y))
        if labels is not None:
            draw.text((x + 1, y + h + 2), labels[i], fill=TEXT_COLOR, font=font)
    return grid


def save_image(image: PIL.Image.Image, path: str | os.PathLike) -> None:
    """Write a PIL image atomically, in the format its suffix names (.png, .jpg, ...)."""
    path = Path(path)
    fmt = PIL.Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot tell the image format of {path} from its suffix")
    with atomic_path(path) as tmp:
        image.save(tmp, format=fmt)


def save_grid(
    images: Sequence[PIL.Image.Image] | torch.Tensor, path: str | os.PathLike, *, ncols: int, pad: int = 2,
    labels: Sequence[str] | None = None,
) -> PIL.Image.Image:
    """`image_grid(...)` written atomically to `path`; returns the grid."""
    grid = image_grid(images, ncols=ncols, pad=pad, labels=labels)
    save_image(grid, path)
    return grid
