"""lowshot.images.preprocess: awkward files routed to outputs or rejects, dedupe, the Monet split,
the whole stage end to end, determinism, incremental reruns and stale outputs."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import shared_dataset
from lowshot.fsutil import sha256_file
from lowshot.images.preprocess import (
    MANIFEST_COLUMNS,
    preprocess_all,
    preprocess_images,
    split_train_ref,
    stem_id,
)

SIZE = 32
LIMITS = {"min_side": 24, "max_pixels": 4_000_000}


def scene(seed: int, size: tuple[int, int] = (96, 64)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)).resize(size, Image.Resampling.BICUBIC)


def save(im: Image.Image, path: Path, fmt: str | None = None, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, fmt, **kw)
    return path


def header_only_png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IEND", b""))


def awkward_corpus(d: Path) -> dict[str, str | None]:
    """Write the awkward files; map each name to its expected reject reason (None: processed)."""
    d.mkdir(parents=True)
    save(scene(1), d / "plain.jpg", quality=90)
    buf = io.BytesIO()
    scene(2, (120, 80)).save(buf, "JPEG", quality=90)
    (d / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    save(Image.new("CMYK", (64, 48), (0, 255, 255, 0)), d / "cmyk.jpg")
    save(Image.fromarray(np.full((40, 40), 32768, np.uint16)), d / "grey16.png")
    palette = Image.new("P", (48, 48), 1)
    palette.putpalette([0, 0, 0, 10, 120, 10] + [0] * 762)
    palette.paste(0, (0, 0, 48, 24))  # top half transparent
    save(palette, d / "palette.png", transparency=0)
    save(Image.fromarray(np.dstack([np.full((40, 40), 90, np.uint8), np.full((40, 40), 255, np.uint8)]), "LA"),
         d / "grey_alpha.png")
    rotated = Image.new("RGB", (80, 40), (0, 0, 255))
    rotated.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    save(rotated, d / "exif6.jpg", quality=95, exif=exif.tobytes())
    save(scene(3, (20, 20)), d / "tiny.png")
    (d / "empty.jpg").write_bytes(b"")
    (d / "notes.jpg").write_text("not an image at all\n")
    (d / "bomb.png").write_bytes(header_only_png(100000, 100000))
    (d / "bomb_small.png").write_bytes(header_only_png(3000, 3000))  # 9 MP > our 4 MP, < Pillow's limit
    return {"plain": None, "truncated": "truncated", "cmyk": None, "grey16": None, "palette": None,
            "grey_alpha": None, "exif6": None, "tiny": "too_small", "empty": "empty_file", "notes": "not_an_image",
            "bomb": "decompression_bomb", "bomb_small": "decompression_bomb"}


def png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.size == (SIZE, SIZE) and im.mode == "RGB"
        return np.asarray(im)


def test_awkward_files_are_processed_or_rejected_with_their_reason(tmp_path: Path):
    expected = awkward_corpus(tmp_path / "in")
    files = sorted((tmp_path / "in").iterdir())
    manifest, rejects = preprocess_images(files, tmp_path / "out" / "photos", size=SIZE, mode="squeeze",
                                          dedupe_distance=None, workers=1, root=tmp_path, **LIMITS)
    assert list(manifest.columns) == MANIFEST_COLUMNS and list(rejects.columns) == ["source", "reason"]
    got = {Path(s).stem: r for s, r in zip(rejects.source, rejects.reason)}
    got.update({i: None for i in manifest.id})
    assert got == expected
    out = tmp_path / "out" / "photos"
    assert sorted(p.stem for p in out.glob("*.png")) == sorted(manifest.id)
    rows = manifest.set_index("id")
    assert rows.loc["exif6", ["width", "height"]].tolist() == [40, 80]  # the oriented original
    # paths relative to the project root (here tmp_path), sources as well
    assert rows.loc["exif6", "path"] == "out/photos/exif6.png" and rows.loc["exif6", "set"] == "photos"
    assert rows.loc["exif6", "source"] == "in/exif6.jpg" and (rejects.source.str.startswith("in/")).all()
    exif6 = png(out / "exif6.png")
    assert exif6[2, 29, 0] > 200 and exif6[2, 29, 2] < 60  # red corner now top-right
    assert abs(int(png(out / "grey16.png")[16, 16, 0]) - 128) <= 1
    assert tuple(png(out / "palette.png")[3, 16]) == (255, 255, 255)
    assert tuple(png(out / "grey_alpha.png")[16, 16]) == (90, 90, 90)
    cmyk = png(out / "cmyk.png")[16, 16]
    assert cmyk[0] > 220 and cmyk[1] < 40
    for row in manifest.itertuples():
        assert row.sha256 == sha256_file(tmp_path / "in" / Path(row.source).name)
        assert row.out_sha256 == sha256_file(out / f"{row.id}.png")
    # Given the manifest back, a rerun re-encodes nothing.
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*.png")}
    again, _ = preprocess_images(files, out, size=SIZE, mode="squeeze", dedupe_distance=None, workers=1,
                                 previous=manifest, root=tmp_path, **LIMITS)
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.png")} == mtimes
    pd.testing.assert_frame_equal(again, manifest)


def test_ids_duplicates_and_dedupe(tmp_path: Path):
    d = tmp_path / "in"
    big = save(scene(10, (192, 128)), d / "big.png")
    save(scene(10, (96, 64)), d / "a" / "small.png")  # the same picture, smaller: a near-duplicate
    (d / "copy.png").write_bytes(big.read_bytes())  # byte-identical
    save(scene(11), d / "a" / "same name.png")  # stem unsafe -> sha prefix id
    save(scene(12), d / "a" / "twin.png")
    save(scene(13), d / "b" / "twin.png")  # stem collides -> sha prefix ids for both
    files = sorted(d.rglob("*.png"), reverse=True)
    manifest, rejects = preprocess_images(files, tmp_path / "out" / "paintings", size=SIZE, mode="hybrid",
                                          dedupe_distance=4, workers=1, **LIMITS)
    reasons = dict(zip(rejects.source.map(lambda s: Path(s).relative_to(d).as_posix()), rejects.reason))
    assert reasons == {"copy.png": "duplicate_of:big", "a/small.png": "near_duplicate_of:big"}
    ids = set(manifest.id)
    assert "big" in ids and len(ids) == 4
    by_source = dict(zip(manifest.source.map(lambda s: Path(s).relative_to(d).as_posix()), manifest.id))
    for name in ("a/same name.png", "a/twin.png", "b/twin.png"):
        assert by_source[name] == sha256_file(d / name)[:12]
    assert stem_id(Path("x/ok-name_1.v2.jpg")) == "ok-name_1.v2" and stem_id(Path("../.hidden.jpg")) is None
    # hybrid: every image is cropped to the same target aspect (here all are 3:2)
    assert manifest.aspect.tolist() == [1.5] * 4
    # with dedupe off, near-duplicates stay; byte-identical copies never do
    manifest2, rejects2 = preprocess_images(files, tmp_path / "out2" / "paintings", size=SIZE, mode="hybrid",
                                            dedupe_distance=None, workers=1, **LIMITS)
    assert len(manifest2) == 5 and rejects2.reason.tolist() == ["duplicate_of:big"]


def test_split_is_deterministic_and_order_independent():
    ids = [f"m{i:03d}" for i in range(40)]
    train, ref = split_train_ref(ids, 30, seed=7)
    assert len(train) == 30 and len(ref) == 10 and not set(train) & set(ref)
    assert set(train) | set(ref) == set(ids)
    assert split_train_ref(ids[::-1], 30, seed=7) == (train, ref)
    assert split_train_ref(ids, 30, seed=8) != (train, ref)
    grown_train, _ = split_train_ref(ids + ["m999"], 30, seed=7)
    assert len(set(train) - set(grown_train)) <= 1  # a new Monet displaces at most one
    assert split_train_ref(ids[:5], 30, seed=7) == (sorted(ids[:5]), [])
    with pytest.raises(ValueError):
        split_train_ref(["a", "a"], 1, seed=0)


def stage_inputs(root: Path) -> dict[str, list[Path]]:
    paintings = [save(scene(20 + i, (90 + 10 * i, 64)), root / "scraped" / f"p{i}.jpg", quality=92) for i in range(4)]
    paintings.append(root / "scraped" / "broken.jpg")
    paintings[-1].write_bytes(b"<html>403</html>")
    photos = [save(scene(40 + i, (64, 64)), root / "photos" / f"ph{i}.jpg", quality=92) for i in range(3)]
    monet = [save(scene(60 + i, (80, 64)), root / "monet" / f"monet{i}.png") for i in range(4)]
    # a scraped copy of a real Monet must not reach training (nor the reference)
    paintings.append(save(Image.open(monet[0]).resize((160, 128)), root / "scraped" / "copy_of_monet.jpg", quality=90))
    return {"paintings": paintings, "photos": photos, "monet": monet}


STAGE = {"size": SIZE, "modes": {"paintings": "hybrid", "photos": "center_crop", "monet": "center_crop"},
         "dedupe_distance": 4, "monet_train_count": 3, "seed": 0, **LIMITS}


@pytest.mark.slow
def test_preprocess_all_end_to_end_incremental_and_stale(tmp_path: Path):
    inputs = stage_inputs(tmp_path / "raw")
    root = tmp_path / "project"
    out = root / "data/processed"
    summary = preprocess_all(inputs, out, workers=2, root=root, **STAGE)

    manifest = pd.read_csv(out / "manifest.csv", dtype={"id": str})
    rejects = pd.read_csv(out / "rejects.csv")
    assert list(manifest.columns) == MANIFEST_COLUMNS and list(rejects.columns) == ["set", "source", "reason"]
    assert summary.images == {"monet_train": 3, "monet_ref": 1, "paintings": 4, "photos": 3}
    train, ref = split_train_ref([f"monet{i}" for i in range(4)], 3, seed=0)
    assert sorted(manifest[manifest.set == "monet_train"].id) == train
    assert manifest[manifest.set == "monet_ref"].id.tolist() == ref
    for row in manifest.itertuples():
        assert png(root / row.path).shape == (SIZE, SIZE, 3)
        assert row.path == f"data/processed/{row.set}/{row.id}.png"  # relative to the project root
        assert Path(row.source).is_absolute()  # outside the project root: absolute
    for name in ("paintings", "photos", "monet_train", "monet_ref"):
        assert sorted(p.stem for p in (out / name).glob("*.png")) == sorted(manifest[manifest.set == name].id)
    monet0_set = "monet_train" if "monet0" in train else "monet_ref"
    assert sorted(zip(rejects.set, rejects.source.map(lambda s: Path(s).name), rejects.reason)) == [
        ("paintings", "broken.jpg", "not_an_image"),
        ("paintings", "copy_of_monet.jpg", f"near_duplicate_of:{monet0_set}/monet0"),
    ]
    paintings = manifest[manifest.set == "paintings"]
    assert paintings.aspect.nunique() == 1 and 1.4 < paintings.aspect.iloc[0] < 2.0  # the set's mean aspect

    # Same inputs, another project, one process: byte-identical outputs and manifest.
    again = tmp_path / "again/data/processed"
    preprocess_all(inputs, again, workers=1, root=tmp_path / "again", **STAGE)
    assert (again / "manifest.csv").read_bytes() == (out / "manifest.csv").read_bytes()

    # Rerun: nothing re-encoded, nothing touched.
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    summary = preprocess_all(inputs, out, workers=2, root=root, **STAGE)
    assert summary.written == 0 and summary.reused == 11 and summary.removed == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == mtimes

    # A photo leaves the input, another's PNG was damaged, the photos' mode changes for nothing else.
    (out / "photos" / "ph1.png").write_bytes(b"garbage")
    summary = preprocess_all({**inputs, "photos": inputs["photos"][:2]}, out, workers=2, root=root, **STAGE)
    assert not (out / "photos" / "ph2.png").exists() and summary.removed == 1
    assert summary.written == 1 and png(out / "photos" / "ph1.png").shape == (SIZE, SIZE, 3)
    summary = preprocess_all(inputs, out, workers=2, root=root, **{**STAGE, "modes": {**STAGE["modes"], "photos": "pad"}})
    assert summary.written == 3 and summary.reused == 8

    # An empty set gives an empty folder, not an error.
    summary = preprocess_all({"paintings": [], "photos": inputs["photos"]}, out, workers=1, root=root, **STAGE)
    assert summary.images == {"monet_train": 0, "monet_ref": 0, "paintings": 0, "photos": 3}
    assert list((out / "paintings").iterdir()) == [] and list((out / "monet_ref").iterdir()) == []
    assert len(pd.read_csv(out / "manifest.csv")) == 3
    with pytest.raises(ValueError, match="unknown input sets"):
        preprocess_all({"sketches": []}, out, workers=1, **STAGE)


@pytest.mark.slow
def test_real_monets(tmp_path: Path):
    files = sorted(shared_dataset("monet-train30").glob("*.jpg"))
    manifest, rejects = preprocess_images(files, tmp_path / "monet", size=64, mode="center_crop", min_side=128,
                                          max_pixels=10**8, dedupe_distance=4, workers=2)
    assert len(rejects) == 0 and len(manifest) == 30
    assert (manifest.width == 256).all() and (manifest.crop_box == "0,0,256,256").all()
    for p in (tmp_path / "monet").glob("*.png"):
        with Image.open(p) as im:
            assert im.size == (64, 64)
