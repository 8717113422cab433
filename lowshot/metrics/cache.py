"""On-disk cache of image features, keyed by file content and by the extractor.

Layout (the whole directory is safe to delete at any time):

    <cache_dir>/<sha256(extractor.id)[:16]>/extractor.txt      the extractor id, for people
    <cache_dir>/<sha256(extractor.id)[:16]>/set-<digest>.npz   one per image set seen

A pack `set-<digest>.npz` holds `sha256` (N,) and `features` (N, D) float32 for the distinct
contents of one set; `digest` hashes the sorted content hashes, so file names and order do not
matter and an unchanged set is one file read. A changed set reuses every row any pack already
holds and extracts only the new contents, then writes its own pack. Writes are atomic, as in
edm's `fid.py` reference statistics: computed once, reused.
"""

from __future__ import annotations

import hashlib
import logging
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from lowshot.fsutil import atomic_path, atomic_write_text, sha256_file

log = logging.getLogger(__name__)


class Extractor(Protocol):
    id: str

    def extract(self, paths: Sequence[Path], *, batch_size: int, workers: int, progress: bool) -> np.ndarray: ...


def _extractor_dir(cache_dir: Path, extractor_id: str) -> Path:
    root = cache_dir / hashlib.sha256(extractor_id.encode()).hexdigest()[:16]
    if not (root / "extractor.txt").is_file():
        atomic_write_text(root / "extractor.txt", extractor_id + "\n")
    return root


def _read_pack(path: Path, *, with_features: bool = True) -> tuple[np.ndarray, np.ndarray | None] | None:
    """(sha256, features) of a pack, or None (logged) when it is unreadable."""
    try:
        with np.load(path, allow_pickle=False) as pack:
            shas = pack["sha256"]
            feats = pack["features"] if with_features else None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        log.warning("ignoring unreadable feature cache %s: %s", path, e)
        return None
    if feats is not None and len(feats) != len(shas):
        log.warning("ignoring inconsistent feature cache %s", path)
        return None
    return shas, feats


def _write_pack(path: Path, shas: Sequence[str], feats: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: np.savez would append ".npz"
        np.savez(f, sha256=np.asarray(shas, dtype="U64"), features=feats.astype(np.float32))


def cached_features(
    paths: Sequence[str | os.PathLike], *, cache_dir: str | os.PathLike, extractor: Extractor,
    batch_size: int = 64, workers: int = 2, progress: bool = True,
) -> np.ndarray:
    """Features of the image files `paths`, in order, (N, D) float32, extracting only contents not cached.

    Files are identified by their sha256, so a renamed or moved file is a cache hit and a file
    whose bytes change is extracted again. Identical files are extracted once.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        return extractor.extract([], batch_size=batch_size, workers=workers, progress=False)
    shas = [sha256_file(p) for p in paths]
    unique = sorted(set(shas))
    root = _extractor_dir(Path(cache_dir), extractor.id)
    digest = hashlib.sha256("\n".join(unique).encode()).hexdigest()[:32]
    pack_path = root / f"set-{digest}.npz"

    pack = _read_pack(pack_path) if pack_path.is_file() else None
    if pack is not None and set(pack[0].tolist()) == set(unique):
        row = {s: i for i, s in enumerate(pack[0].tolist())}
        log.info("features of %d images from cache %s", len(paths), pack_path)
        return pack[1][[row[s] for s in shas]]

    # Reuse rows from other packs; extract only the contents none of them holds.
    found: dict[str, np.ndarray] = {}
    wanted = set(unique)
    for other in sorted(root.glob("set-*.npz")):
        listing = _read_pack(other, with_features=False)
        if listing is None or wanted.isdisjoint(listing[0].tolist()):
            continue
        full = _read_pack(other)
        if full is None:
            continue
        for s, f in zip(full[0].tolist(), full[1]):
            if s in wanted and s not in found:
                found[s] = f
    missing = [s for s in unique if s not in found]
    if missing:
        first_path = {}
        for p, s in zip(paths, shas):
            first_path.setdefault(s, p)
        new = extractor.extract([first_path[s] for s in missing], batch_size=batch_size, workers=workers, progress=progress)
        found.update(zip(missing, new))
    log.info("features of %d images: %d cached, %d extracted", len(paths), len(unique) - len(missing), len(missing))

    table = np.stack([found[s] for s in unique]).astype(np.float32)
    _write_pack(pack_path, unique, table)
    row = {s: i for i, s in enumerate(unique)}
    return table[[row[s] for s in shas]]
