"""Folders of images: which files count as images, listed in a stable order."""

from __future__ import annotations

import os
from pathlib import Path

# Candidates by name only; the content is sniffed when the file is opened (`lowshot.images.io`).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})


def list_images(directory: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Image files in `directory` (by extension, any case), sorted by path; hidden and temporary
    files (names starting with '.') are skipped. A missing directory raises FileNotFoundError."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"image folder {directory} does not exist")
    found = directory.rglob("*") if recursive else directory.iterdir()
    files = [
        p for p in found
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    ]
    # Sort on the POSIX form so the order does not depend on the filesystem or the OS.
    return sorted(files, key=lambda p: p.relative_to(directory).as_posix())
