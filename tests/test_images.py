"""lowshot.images: decoding awkward files, resize modes and crop boxes, pHash and near-duplicates."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from conftest import shared_dataset
from lowshot.images.dedupe import duplicate_of, hamming, near_duplicates, phash
from lowshot.images.folder import list_images
from lowshot.images.io import ImageRejected, decode_rgb, load_rgb
from lowshot.images.resize import crop_box, mean_aspect, resize_to_square

BIG = 10**8


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height, with no pixel data at all."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def scene(seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """A smooth random 'landscape': low-frequency structure, like a photo at thumbnail scale."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    return small.resize(size, Image.Resampling.BICUBIC)


def rgb(data: bytes, **kw) -> np.ndarray:
    decoded = decode_rgb(data, min_side=kw.pop("min_side", 1), max_pixels=kw.pop("max_pixels", BIG), **kw)
    return np.asarray(decoded.image)


def reason(data: bytes, **kw) -> str:
    with pytest.raises(ImageRejected) as err:
        decode_rgb(data, min_side=kw.pop("min_side", 1), max_pixels=kw.pop("max_pixels", BIG), **kw)
    return err.value.reason


# --------------------------------------------------------------------------- decoding


def test_truncated_jpeg_is_rejected_not_half_grey():
    data = encode(scene(0, (400, 300)), "JPEG", quality=90)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert reason(data[: len(data) * 2 // 3]) == "truncated"
    assert rgb(data).shape == (300, 400, 3)  # the whole file is fine


def test_empty_text_and_header_only_files():
    assert reason(b"") == "empty_file"
    assert reason(b"this is a text file named photo.jpg\n") == "not_an_image"
    # 10^10 pixels: rejected before any decoding (Pillow's own guard or ours, same reason)
    assert reason(png_header_only(100000, 100000)) == "decompression_bomb"
    # below Pillow's limit, over ours: our header check must catch it
    assert reason(png_header_only(3000, 3000), max_pixels=1_000_000) == "decompression_bomb"


def test_too_small_is_judged_on_the_shorter_side():
    data = encode(scene(1, (300, 40)), "PNG")
    assert reason(data, min_side=64) == "too_small"
    assert rgb(data, min_side=40).shape == (40, 300, 3)


def test_extension_is_never_trusted(tmp_path: Path):
    path = tmp_path / "actually_a_png.jpg"
    path.write_bytes(encode(scene(2), "PNG"))
    assert load_rgb(path, min_side=1, max_pixels=BIG).size == (160, 120)
    with pytest.raises(ImageRejected) as err:
        load_rgb(tmp_path / "missing.jpg", min_side=1, max_pixels=BIG)
    assert err.value.reason == "unreadable"


def test_cmyk_jpeg_becomes_rgb():
    red_in_cmyk = Image.new("CMYK", (64, 64), (0, 255, 255, 0))
    out = rgb(encode(red_in_cmyk, "JPEG", quality=95))
    assert out.shape == (64, 64, 3)
    assert out[32, 32, 0] > 230 and out[32, 32, 1] < 30 and out[32, 32, 2] < 30


def test_16bit_png_is_scaled_not_clipped():
    a = np.full((32, 32), 32768, np.uint16)
    a[0, 0], a[0, 1] = 65535, 0
    data = encode(Image.fromarray(a), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    out = rgb(data)
    assert abs(int(out[5, 5, 0]) - 128) <= 1
    assert tuple(out[0, 0]) == (255, 255, 255) and tuple(out[0, 1]) == (0, 0, 0)


@pytest.mark.parametrize("mode", ["I", "F"])
def test_32bit_greyscale_keeps_its_tones(mode: str):
    grey = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (16, 1))
    out = rgb(encode(Image.fromarray(grey).convert(mode), "TIFF"))
    np.testing.assert_array_equal(out[..., 0], grey)


def test_palette_transparency_is_flattened_on_white():
    p = Image.new("P", (32, 32), 1)
    p.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    p.paste(0, (0, 0, 16, 32))  # left half: palette index 0, declared transparent
    out = rgb(encode(p, "PNG", transparency=0))
    assert tuple(out[10, 3]) == (255, 255, 255)
    assert tuple(out[10, 28]) == (200, 30, 30)


def test_la_and_rgba_alpha_blend_on_white():
    la = np.zeros((16, 16, 2), np.uint8)
    la[..., 0] = 40
    la[:, 8:, 1] = 255  # right half opaque, left half transparent
    out = rgb(encode(Image.fromarray(la, "LA"), "PNG"))
    assert tuple(out[4, 2]) == (255, 255, 255) and tuple(out[4, 12]) == (40, 40, 40)
    rgba = Image.new("RGBA", (16, 16), (0, 0, 0, 128))  # half-transparent black -> mid grey
    assert abs(int(rgb(encode(rgba, "PNG"))[0, 0, 0]) - 127) <= 1


def test_bilevel_image():
    bits = Image.new("1", (16, 16), 0)
    bits.paste(1, (8, 0, 16, 16))
    out = rgb(encode(bits, "PNG"))
    assert tuple(out[0, 0]) == (0, 0, 0) and tuple(out[0, 15]) == (255, 255, 255)


def test_exif_orientation_6_rotates_content_and_swaps_size():
    im = Image.new("RGB", (60, 30), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 15, 15))  # red top-left corner as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # display = stored rotated 90 degrees clockwise
    decoded = decode_rgb(encode(im, "JPEG", quality=95, exif=exif.tobytes()), min_side=1, max_pixels=BIG)
    out = np.asarray(decoded.image)
    assert (decoded.width, decoded.height) == (30, 60) and out.shape == (60, 30, 3)
    assert out[3, 26, 0] > 200 and out[3, 26, 2] < 60  # the red corner is now top-right
    assert out[3, 3, 2] > 200 and out[3, 3, 0] < 60


def test_jpeg_draft_keeps_twice_the_target():
    data = encode(scene(3, (2400, 1600)), "JPEG", quality=90)
    decoded = decode_rgb(data, min_side=1, max_pixels=BIG, draft_to=256)
    assert (decoded.width, decoded.height) == (2400, 1600)
    assert decoded.image.size == (1200, 800)  # 1/4 would give 400 < 2 x 256
    assert decode_rgb(data, min_side=1, max_pixels=BIG, draft_to=100).image.size == (300, 200)
    assert decode_rgb(data, min_side=1, max_pixels=BIG, draft_to=1000).image.size == (2400, 1600)
    png = encode(scene(3, (1200, 800)), "PNG")  # drafts are a JPEG feature; others decode whole
    assert decode_rgb(png, min_side=1, max_pixels=BIG, draft_to=100).image.size == (1200, 800)


def test_list_images_is_sorted_and_filters(tmp_path: Path):
    for name in ["b.JPG", "a.png", "c.txt", ".hidden.jpg", "sub/d.jpeg"]:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.png", "b.JPG"]
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path, recursive=True)] == \
        ["a.png", "b.JPG", "sub/d.jpeg"]
    with pytest.raises(FileNotFoundError):
        list_images(tmp_path / "nope")


# --------------------------------------------------------------------------- resize


def two_tone(width: int, height: int, box: tuple[int, int, int, int]) -> Image.Image:
    """Red everywhere, blue inside `box`."""
    im = Image.new("RGB", (width, height), (255, 0, 0))
    im.paste((0, 0, 255), box)
    return im


@pytest.mark.parametrize("mode,expected", [
    ("center_crop", (50, 0, 250, 200)),
    ("squeeze", (0, 0, 300, 200)),
    ("pad", (0, -50, 300, 250)),
    ("hybrid", (30, 0, 270, 200)),  # aspect 1.2: 240 x 200, centred
])
def test_resize_modes_size_and_box(mode: str, expected: tuple[int, int, int, int]):
    out, box = resize_to_square(scene(4, (300, 200)), 64, mode, aspect=1.2)
    assert out.size == (64, 64) and out.mode == "RGB"
    assert box == expected


def test_hybrid_crops_the_right_window():
    # Blue exactly where the 1.2-aspect window lies: nothing red may survive the crop.
    wide = np.asarray(resize_to_square(two_tone(300, 200, (30, 0, 270, 200)), 48, "hybrid", 1.2)[0])
    assert wide[..., 0].max() < 40 and wide[..., 2].min() > 215
    # A portrait is cropped top and bottom instead: 200 x 167 centred in 200 x 300.
    tall_box = crop_box(200, 300, "hybrid", 1.2)
    assert tall_box == (0, 66, 200, 233)
    tall = np.asarray(resize_to_square(two_tone(200, 300, tall_box), 48, "hybrid", 1.2)[0])
    assert tall[..., 0].max() < 40
    # An image already at the target aspect is only squeezed.
    assert crop_box(240, 200, "hybrid", 1.2) == (0, 0, 240, 200)
    with pytest.raises(ValueError, match="aspect"):
        resize_to_square(scene(5), 32, "hybrid")
    with pytest.raises(ValueError, match="unknown resize mode"):
        resize_to_square(scene(5), 32, "stretch")


def test_center_crop_keeps_the_middle_square():
    out = np.asarray(resize_to_square(two_tone(300, 200, (50, 0, 250, 200)), 32, "center_crop")[0])
    assert out[..., 0].max() < 40


def test_pad_reflects_instead_of_filling():
    im = Image.new("RGB", (300, 200), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 300, 20))  # red band along the top
    out = np.asarray(resize_to_square(im, 64, "pad")[0])
    # 50 rows of padding reflect source rows 50..1: blue far up, the band mirrored just above the image.
    assert out[1, 32, 2] > 200 and out[1, 32, 0] < 40
    assert out[10, 32, 0] > 200 and out[10, 32, 2] < 40
    assert out[40, 32, 2] > 200


def test_box_is_in_source_pixels_for_a_reduced_decode():
    full = scene(6, (600, 400))
    half = full.resize((300, 200), Image.Resampling.LANCZOS)
    out_full, box_full = resize_to_square(full, 32, "hybrid", 1.2)
    out_half, box_half = resize_to_square(half, 32, "hybrid", 1.2, source_size=(600, 400))
    assert box_half == box_full == (60, 0, 540, 400)
    diff = np.abs(np.asarray(out_full, np.int16) - np.asarray(out_half, np.int16))
    assert diff.mean() < 2.0


def test_mean_aspect_is_geometric():
    assert mean_aspect([(200, 100), (100, 200)]) == pytest.approx(1.0)
    assert mean_aspect([(300, 200)]) == pytest.approx(1.5)
    assert mean_aspect([(400, 100), (100, 100)]) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        mean_aspect([])


# --------------------------------------------------------------------------- pHash and near-duplicates


def test_phash_near_for_copies_far_for_different_images():
    base = scene(7, (320, 240))
    h = phash(base)
    assert hamming(h, phash(base.copy())) == 0
    reencoded = Image.open(io.BytesIO(encode(base, "JPEG", quality=60)))
    smaller = base.resize((160, 120), Image.Resampling.BILINEAR)
    brighter = Image.fromarray(np.clip(np.asarray(base, np.int16) + 25, 0, 255).astype(np.uint8))
    for copy in (reencoded, smaller, brighter):
        assert hamming(h, phash(copy)) <= 4
    others = [hamming(h, phash(scene(seed, (320, 240)))) for seed in range(20, 30)]
    assert min(others) > 12, others


def test_phash_on_real_paintings():
    files = sorted(shared_dataset("monet-train30").glob("*.jpg"))[:12]
    images = [Image.open(p).convert("RGB") for p in files]
    hashes = [phash(im) for im in images]
    for im, h in zip(images, hashes):
        copy = Image.open(io.BytesIO(encode(im.resize((200, 200), Image.Resampling.LANCZOS), "JPEG", quality=75)))
        assert hamming(h, phash(copy)) <= 4
    distances = [hamming(a, b) for i, a in enumerate(hashes) for b in hashes[i + 1:]]
    assert min(distances) > 8


def test_near_duplicates_keeps_the_first():
    a, b = 0x0F0F_0000_FFFF_1234, 0x7700_FF00_0AB0_9876
    hashes = [a, a ^ 0b1, b, a ^ 0b11, b ^ 0b1000]
    assert near_duplicates(hashes, max_distance=2) == {1, 3, 4}
    assert duplicate_of(hashes, 2) == {1: 0, 3: 0, 4: 2}
    assert near_duplicates(hashes, max_distance=0) == set()
    # A chain: 1 is close to 0 and to 2, but 2 is far from 0; 1 goes, so nothing drops 2.
    chain = [0, 0b11, 0b1111]
    assert duplicate_of(chain, 2) == {1: 0}


def test_near_duplicates_matches_brute_force_across_chunks():
    rng = np.random.default_rng(8)
    centres = [int(x) for x in rng.integers(0, 2**63, 150, dtype=np.int64)]
    hashes = [c ^ (1 << int(rng.integers(64))) ^ (1 << int(rng.integers(64))) for c in centres for _ in range(4)]
    order = rng.permutation(len(hashes))
    hashes = [hashes[i] for i in order]  # 600 hashes: clusters straddle the 256-row chunks
    expected: dict[int, int] = {}
    for i in range(len(hashes)):
        if i not in expected:
            for j in range(i + 1, len(hashes)):
                if j not in expected and hamming(hashes[i], hashes[j]) <= 4:
                    expected[j] = i
    assert duplicate_of(hashes, 4) == expected
    assert len(expected) > 300
