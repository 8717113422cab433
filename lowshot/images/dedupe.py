"""Perceptual hashing and near-duplicate removal.

The DCT hash follows pHash (Zauner, "Implementation and Benchmarking of Perceptual Image Hash Functions",
2010; phash.org `ph_dct_imagehash`): greyscale, 32x32, 2-D DCT, the 8x8 block of lowest frequencies just
past the DC row and column, each bit = coefficient > the block's median. Skipping the DC term (mean
brightness) keeps every one of the 64 bits informative; a brightness or contrast change moves no bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.fft
from PIL import Image

HASH_SAMPLE = 32  # side of the greyscale thumbnail the DCT runs on, pixels
_CHUNK_ROWS = 256  # rows of the distance matrix computed at once: 256 x 10k uint64 = 20 MB


def phash(img: Image.Image) -> int:
    """64-bit DCT perceptual hash of `img` (any mode) as an unsigned int; the first coefficient is the
    most significant bit. Similar images differ in few bits (see `hamming`)."""
    grey = img.convert("L").resize((HASH_SAMPLE, HASH_SAMPLE), Image.Resampling.LANCZOS, reducing_gap=2.0)
    coeffs = scipy.fft.dctn(np.asarray(grey, dtype=np.float64), type=2, norm="ortho")
    block = coeffs[1:9, 1:9]
    bits = (block > np.median(block)).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hamming(a: int, b: int) -> int:
    """Number of differing bits of two hashes."""
    return (a ^ b).bit_count()


def duplicate_of(hashes: Sequence[int], max_distance: int) -> dict[int, int]:
    """Map each near-duplicate index to the index it duplicates (Hamming distance <= max_distance).

    Greedy in list order: an image is kept unless an earlier kept image is within `max_distance`, and
    then points at the first such one. Put the image you prefer to keep first (e.g. the largest).
    """
    if max_distance < 0:
        raise ValueError(f"max_distance must be >= 0, got {max_distance}")
    h = _as_uint64(hashes)
    n = len(h)
    dropped: dict[int, int] = {}
    for start in range(0, n, _CHUNK_ROWS):
        rows = np.arange(start, min(start + _CHUNK_ROWS, n))
        # Only later columns matter: i can drop j > i. Distances of the block against them, at once.
        dist = np.bitwise_count(h[rows, None] ^ h[None, start:])
        close = (dist <= max_distance) & (np.arange(start, n)[None, :] > rows[:, None])
        for r in np.flatnonzero(close.any(axis=1)):
            i = int(rows[r])
            if i in dropped:
                continue
            for j in (np.flatnonzero(close[r]) + start).tolist():
                dropped.setdefault(j, i)
    return dict(sorted(dropped.items()))


def near_duplicates(hashes: list[int], max_distance: int) -> set[int]:
    """Indices to drop so that no two kept hashes are within `max_distance`; the first of each cluster
    in list order is kept (see `duplicate_of`)."""
    return set(duplicate_of(hashes, max_distance))


def matches(hashes: Sequence[int], references: Sequence[int], max_distance: int) -> dict[int, int]:
    """Map each index of `hashes` within `max_distance` of some reference to the first such reference."""
    h, ref = _as_uint64(hashes), _as_uint64(references)
    found: dict[int, int] = {}
    if not len(h) or not len(ref):
        return found
    for start in range(0, len(h), _CHUNK_ROWS):
        close = np.bitwise_count(h[start:start + _CHUNK_ROWS, None] ^ ref[None, :]) <= max_distance
        for r in np.flatnonzero(close.any(axis=1)):
            found[start + int(r)] = int(np.argmax(close[r]))
    return found


def _as_uint64(hashes: Sequence[int]) -> np.ndarray:
    return np.array([int(x) for x in hashes], dtype=np.uint64).reshape(-1)
