"""Image decoding: any file in, an EXIF-oriented 8-bit RGB image out, or a rejection with a reason.

Follows Pillow's documented behaviour: `Image.open` sniffs the content (the extension is never trusted)
and reads only the header, so sizes are checked before any pixel is decoded; `Image.draft` asks libjpeg
for DCT-domain scaling (1/2, 1/4, 1/8) so large JPEGs decode fast; `ImageOps.exif_transpose` applies the
EXIF orientation tag. `ImageFile.LOAD_TRUNCATED_IMAGES` is left False, so a truncated file raises
instead of decoding half grey.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

# Formats we decode. Pillow's other plugins (EPS shells out to Ghostscript, ...) are no business of a
# folder of scraped paintings and photos, so they are not even offered the bytes.
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")  # JPEG includes MPO (multi-picture JPEG)
_ORIENTATION_TAG = 0x0112
_SWAPS_AXES = (5, 6, 7, 8)  # EXIF orientations that transpose the image
_WHITE = (255, 255, 255)
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_DECODE_ERRORS = (OSError, EOFError, SyntaxError, ValueError, struct.error, IndexError)


class ImageRejected(Exception):
    """A file that is not a usable image. `reason` is short and machine-friendly (it goes to rejects.csv):
    empty_file, unreadable, not_an_image, corrupt, truncated, too_small, decompression_bomb, unsupported_mode."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # oriented, 8-bit RGB; smaller than width x height when decoded with a draft
    width: int  # the original's size after EXIF orientation, pixels
    height: int
    format: str  # the sniffed format ("JPEG", "PNG", ...), whatever the file is called


def decode_rgb(data: bytes, *, min_side: int, max_pixels: int, draft_to: int | None = None) -> DecodedImage:
    """Decode image bytes to an oriented 8-bit RGB image, or raise ImageRejected.

    The header is checked before decoding: more than `max_pixels` pixels -> decompression_bomb, shorter
    side below `min_side` -> too_small. With `draft_to`, a JPEG is decoded at 1/2, 1/4 or 1/8 scale when
    its shorter side stays at least 2 * draft_to (the resize after it then has a clean 2x to work with).
    """
    if not data:
        raise ImageRejected("empty_file")
    im = _open_checked(data, max_pixels)
    width, height = im.size
    if min(width, height) < min_side:
        raise ImageRejected("too_small", f"{width}x{height}, shorter side < {min_side}")
    if draft_to:
        _draft(im, draft_to)
    try:
        im.load()
    except _DECODE_ERRORS as e:
        truncated = isinstance(e, EOFError) or "truncated" in str(e).lower()
        raise ImageRejected("truncated" if truncated else "corrupt", str(e)) from e
    orientation = _orientation(im)
    if orientation in _SWAPS_AXES:
        width, height = height, width
    fmt = im.format or "?"
    if orientation != 1:
        im = ImageOps.exif_transpose(im)
    return DecodedImage(to_rgb(im), width, height, fmt)


def load_rgb(path: str | os.PathLike, *, min_side: int, max_pixels: int, draft_to: int | None = None) -> Image.Image:
    """Open the image file at `path` as oriented 8-bit RGB (see `decode_rgb`); raise ImageRejected."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ImageRejected("unreadable", str(e)) from e
    return decode_rgb(data, min_side=min_side, max_pixels=max_pixels, draft_to=draft_to).image


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB. Transparency is flattened on white; 16-bit and 32-bit greyscale are
    scaled to 0..255 (Pillow's own convert clips them); CMYK with an ICC profile goes through it to sRGB."""
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return im
    if mode in _SIXTEEN_BIT or mode in ("I", "F"):
        return Image.fromarray(_scale_to_uint8(np.asarray(im), mode), "L").convert("RGB")
    if mode == "1":
        return im.convert("L").convert("RGB")
    if mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        out = Image.new("RGB", rgba.size, _WHITE)
        out.paste(rgba, mask=rgba.getchannel("A"))  # out = rgb * a + white * (1 - a)
        return out
    if mode == "CMYK" and im.info.get("icc_profile"):
        converted = _cmyk_via_profile(im)
        if converted is not None:
            return converted
    try:
        return im.convert("RGB")
    except ValueError as e:
        raise ImageRejected("unsupported_mode", mode) from e


def _open_checked(data: bytes, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # Our own max_pixels check below is the guard; Pillow's warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as e:
        raise ImageRejected("decompression_bomb", str(e)) from e
    except UnidentifiedImageError as e:
        raise ImageRejected("not_an_image", f"{len(data)} bytes, format not recognised") from e
    except _DECODE_ERRORS as e:
        raise ImageRejected("corrupt", str(e)) from e
    width, height = im.size
    if width <= 0 or height <= 0:
        raise ImageRejected("corrupt", f"size {width}x{height}")
    if width * height > max_pixels:
        raise ImageRejected("decompression_bomb", f"{width}x{height} > {max_pixels} pixels")
    return im


def _draft(im: Image.Image, draft_to: int) -> None:
    """Ask a JPEG for the largest DCT scale-down (8, 4, 2) that keeps the shorter side >= 2 * draft_to."""
    if im.format not in ("JPEG", "MPO"):
        return
    width, height = im.size
    for scale in (8, 4, 2):
        if min(width, height) // scale >= 2 * draft_to:
            # draft() picks the largest scale s in (8, 4, 2, 1) with s <= size // requested.
            im.draft(None, (width // scale, height // scale))
            return


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
    except Exception as e:  # a mangled EXIF block must not cost us the image
        log.debug("unreadable EXIF (%s); orientation ignored", e)
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _scale_to_uint8(a: np.ndarray, mode: str) -> np.ndarray:
    """Integer and float greyscale -> uint8 by scaling the value range, never clipping.

    16-bit modes span 0..65535 (-> / 257). Mode I and F say nothing of their range, so it is read off the
    data: values in 0..255 are kept, I in 0..65535 is taken as 16-bit, F in 0..1 as unit floats, anything
    else is stretched min..max.
    """
    a = a.astype(np.float64)
    if mode in _SIXTEEN_BIT:
        scaled = a / 257.0
    else:
        a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if mode == "F" and lo >= 0.0 and hi <= 1.0:
            scaled = a * 255.0
        elif lo >= 0.0 and hi <= 255.0:
            scaled = a
        elif mode == "I" and lo >= 0.0 and hi <= 65535.0:
            scaled = a / 257.0
        else:
            scaled = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _cmyk_via_profile(im: Image.Image) -> Image.Image | None:
    try:
        from PIL import ImageCms

        src = ImageCms.ImageCmsProfile(io.BytesIO(im.info["icc_profile"]))
        return ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except Exception as e:  # no LittleCMS, or a broken profile: the plain conversion is still an image
        log.debug("CMYK ICC conversion failed (%s); plain conversion used", e)
        return None
