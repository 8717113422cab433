"""Manifests: CSV tables with one row per image, read and written the same way by every stage.

One path convention: every path a manifest holds (`path`, `source`) is relative to the project root
(the working directory a stage runs in), with '/' separators, e.g. `data/scraped/images/1a2b.jpg` or
`data/processed/paintings/1a2b.png`; a file outside the root is written as an absolute path. Manifests
written before this convention held `path` relative to the manifest's own folder (`images/1a2b.jpg`,
`paintings/1a2b.png`): `read_manifest` recognises such a path (missing under the root, present beside
the manifest) and rewrites it, so an old manifest keeps working and the next run writes the new form.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from lowshot.fsutil import atomic_path

log = logging.getLogger(__name__)

PATH_COLUMNS = ("path", "source")


def relative_path(path: str | os.PathLike, root: str | os.PathLike = ".") -> str:
    """`path` as a manifest stores it: relative to `root` with '/' separators, or absolute when outside it."""
    absolute, base = Path(os.path.abspath(path)), Path(os.path.abspath(root))
    try:
        return absolute.relative_to(base).as_posix()
    except ValueError:
        return absolute.as_posix()


def to_relative(frame: pd.DataFrame, root: str | os.PathLike = ".") -> pd.DataFrame:
    """A copy of `frame` with its path columns in the manifest convention (empty cells stay empty)."""
    frame = frame.copy()
    for column in PATH_COLUMNS:
        if column in frame.columns:
            frame[column] = [relative_path(p, root) if isinstance(p, str) and p else p for p in frame[column]]
    return frame


def read_manifest(csv: str | os.PathLike, root: str | os.PathLike = ".") -> pd.DataFrame | None:
    """A manifest as strings (no NaN: empty cells are ''), paths in the current convention; None when the
    file does not exist. ValueError naming the file when it is not a readable CSV."""
    csv = Path(csv)
    if not csv.is_file():
        return None
    try:
        frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise ValueError(f"manifest {csv} is unreadable: {e}") from e
    if "path" in frame.columns:
        old = [_old_convention(p, csv.parent, Path(root)) for p in frame["path"]]
        if any(o is not None for o in old):
            log.info("%s lists paths relative to its own folder (the old convention): read relative to %s",
                     csv, csv.parent)
            frame["path"] = [relative_path(o, root) if o is not None else p for o, p in zip(old, frame["path"])]
    return frame


def write_manifest(frame: pd.DataFrame, csv: str | os.PathLike) -> None:
    """Write a manifest atomically (its paths must already follow the convention: see `to_relative`)."""
    with atomic_path(csv) as tmp:
        frame.to_csv(tmp, index=False)


def _old_convention(path: str, folder: Path, root: Path) -> Path | None:
    """The file an old-convention `path` names (relative to the manifest's folder), or None."""
    if not path or Path(path).is_absolute() or (root / path).exists():
        return None
    beside = folder / path
    return beside if beside.exists() else None
