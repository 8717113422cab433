"""From per-image scores to a ranking: the scores table, the kept top N, and a contact sheet
for people to judge the ranking at a glance (the best and the worst, side by side)."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import PIL.Image
import PIL.ImageDraw
import PIL.ImageOps

from lowshot.fsutil import atomic_dir
from lowshot.images.grid import BACKGROUND, TEXT_COLOR, default_font, image_grid, save_image

log = logging.getLogger(__name__)

TITLE_PX = 22  # height of a section title strip in the contact sheet
TITLE_FONT_PX = 14


def rank_table(paths: Sequence[str | os.PathLike], scores: np.ndarray) -> pd.DataFrame:
    """Scores as a ranking: columns `id` (file stem), `path`, `score`, `rank` (1 = best).

    Rows are sorted by score, highest first; equal scores are ordered by id, then path, so the
    same inputs always give the same ranking. A NaN score raises ValueError naming its file.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(paths),):
        raise ValueError(f"got {scores.shape} scores for {len(paths)} images")
    bad = np.flatnonzero(~np.isfinite(scores))
    if len(bad):
        raise ValueError(f"{len(bad)} scores are not finite, e.g. for {paths[bad[0]]}")
    table = pd.DataFrame({
        "id": [Path(p).stem for p in paths],
        "path": [Path(p).as_posix() for p in paths],
        "score": scores,
    })
    table = table.sort_values(["score", "id", "path"], ascending=[False, True, True], kind="mergesort")
    table = table.reset_index(drop=True)
    table["rank"] = np.arange(1, len(table) + 1)
    return table


def write_top(table: pd.DataFrame, top_n: int, out_dir: str | os.PathLike) -> list[Path]:
    """Copy the `top_n` best-ranked images of `table` into `out_dir` under their own file names.

    The folder is replaced whole and atomically: a failure leaves the previous one untouched.
    Returns the copies' paths, best first.
    """
    if top_n < 1:
        raise ValueError(f"top_n must be >= 1, got {top_n}")
    if 0 < len(table) < top_n:
        log.warning("asked for the top %d images but only %d were ranked: keeping them all", top_n, len(table))
    rows = table.sort_values("rank").head(top_n)
    names = [Path(p).name for p in rows["path"]]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"top images share file names, so they cannot share {out_dir}: {dupes[:5]}")
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        for src, name in zip(rows["path"], names):
            shutil.copyfile(src, tmp / name)
    log.info("kept the top %d images in %s", len(names), out_dir)
    return [out_dir / n for n in names]


def _thumbnail(path: str, size: int) -> PIL.Image.Image:
    try:
        with PIL.Image.open(path) as im:
            return PIL.ImageOps.fit(im.convert("RGB"), (size, size), PIL.Image.Resampling.BICUBIC)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e


def _section(rows: pd.DataFrame, title: str, thumb: int, ncols: int, pad: int) -> PIL.Image.Image:
    """A titled image grid of `rows`, each thumbnail labelled '#rank score'."""
    grid = image_grid(
        [_thumbnail(p, thumb) for p in rows["path"]], ncols=ncols, pad=pad,
        labels=[f"#{r} {s:.3f}" for r, s in zip(rows["rank"], rows["score"])],
    )
    section = PIL.Image.new("RGB", (grid.width, TITLE_PX + grid.height), BACKGROUND)
    PIL.ImageDraw.Draw(section).text((pad + 1, 4), title, fill=TEXT_COLOR, font=default_font(TITLE_FONT_PX))
    section.paste(grid, (0, TITLE_PX))
    return section


def rank_sheet(
    table: pd.DataFrame, out_png: str | os.PathLike, *, top: int = 48, bottom: int = 16, thumb: int = 96,
    ncols: int = 8, pad: int = 2, empty_note: str = "nothing to rank",
) -> PIL.Image.Image:
    """Contact sheet of the `top` best and the `bottom` worst images of `table`, written atomically.

    Two sections stacked vertically, titled "top <n>" and "bottom <n>", each a grid of `ncols`
    columns of `thumb`-pixel thumbnails labelled with rank and score, in rank order. Sections
    never overlap: with fewer than top + bottom images the bottom one shrinks. An empty table gives
    a sheet of the width of one row that says `empty_note`. Returns the sheet.
    """
    if top < 1 or bottom < 0:
        raise ValueError(f"need top >= 1 and bottom >= 0, got top={top}, bottom={bottom}")
    if len(table) == 0:
        sheet = PIL.Image.new("RGB", (ncols * (thumb + pad) + pad, 2 * TITLE_PX), BACKGROUND)
        PIL.ImageDraw.Draw(sheet).text((pad + 1, TITLE_PX // 2), empty_note, fill=TEXT_COLOR,
                                       font=default_font(TITLE_FONT_PX))
        save_image(sheet, out_png)
        return sheet
    rows = table.sort_values("rank")
    n_top = min(top, len(rows))
    n_bottom = min(bottom, len(rows) - n_top)
    sections = [_section(rows.head(n_top), f"top {n_top}", thumb, ncols, pad)]
    if n_bottom > 0:
        sections.append(_section(rows.tail(n_bottom), f"bottom {n_bottom}", thumb, ncols, pad))
    sheet = PIL.Image.new("RGB", (sections[0].width, sum(s.height for s in sections)), BACKGROUND)
    y = 0
    for s in sections:
        sheet.paste(s, (0, y))
        y += s.height
    save_image(sheet, out_png)
    return sheet
