"""The preprocess work: scraped paintings, photos and real Monets -> size x size PNGs, a manifest and rejects.

Two passes over worker processes. Scan: read each file, sha256 it, decode (JPEGs at reduced scale) and
pHash it, or reject it with a reason. Then, per set: the mean aspect (for `hybrid`, see `resize.py`),
duplicates dropped, and the write pass: decode, resize, encode and atomically write `{id}.png`, unless the
previous manifest shows that very output already on disk.

Ids: the file stem when it is path-safe (`stem_id`) and unique in its set, case-insensitively; otherwise the
first 12 hex digits of the file's sha256 (the full digest should even that collide). Byte-identical files are
always dropped as `duplicate_of:<id>`; with `dedupe_distance`, pHash near-duplicates as
`near_duplicate_of:<id>`. Of duplicates the largest image is kept (ties: the first source path), so the
outcome does not depend on the order of the input list.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from lowshot.fsutil import atomic_write_bytes, remove_stale_temps, sha256_bytes, sha256_file
from lowshot.images.dedupe import duplicate_of, matches, phash
from lowshot.images.io import ImageRejected, decode_rgb
from lowshot.images.resize import RESIZE_MODES, crop_box, mean_aspect, resize_to_square
from lowshot.manifest import read_manifest, to_relative, write_manifest

log = logging.getLogger(__name__)

INPUT_SETS = ("paintings", "photos", "monet")
OUTPUT_SETS = ("paintings", "photos", "monet_train", "monet_ref")
MANIFEST_COLUMNS = ["id", "set", "source", "path", "sha256", "width", "height", "crop_box", "aspect", "mode",
                    "size", "phash", "out_sha256"]
REJECT_COLUMNS = ["source", "reason"]
# 256x256 photos, zlib level (ms per image / KiB): 0: 7 / 192, 1: 16 / 100, 3: 18 / 97, 6 (Pillow's
# default): 40 / 96, 9: 125 / 95. Level 1 costs 4% more disk for 2.5x faster encoding.
PNG_COMPRESS_LEVEL = 1
ASPECT_DECIMALS = 3  # the hybrid aspect is rounded so that a few new images leave every crop (and cache) as is
_HASH_DRAFT = 32  # the scan decodes JPEGs down to >= 64 px: plenty for the 32 px pHash thumbnail
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")

IdFn = Callable[[Path], "str | None"]


def stem_id(path: Path) -> str | None:
    """The file stem when it is path-safe: letters, digits, '.', '_', '-', starting alphanumeric, at most
    100 characters; else None (the sha256 prefix is used)."""
    stem = Path(path).stem
    return stem if _SAFE_ID.fullmatch(stem) and not stem.endswith(".") else None


@dataclass
class PreprocessSummary:
    images: dict[str, int] = field(default_factory=dict)  # output set -> images in it
    rejected: dict[str, int] = field(default_factory=dict)  # input set -> files rejected
    reasons: dict[str, int] = field(default_factory=dict)  # reason (before any ':') -> files
    aspects: dict[str, float] = field(default_factory=dict)  # input set -> hybrid target aspect (w / h)
    written: int = 0  # PNGs encoded this run
    reused: int = 0  # PNGs kept from the previous run
    removed: int = 0  # stale PNGs deleted

    def describe(self) -> str:
        sets = ", ".join(f"{k} {v}" for k, v in self.images.items())
        why = ", ".join(f"{k} {v}" for k, v in sorted(self.reasons.items())) or "none"
        return (f"{sets}; rejected: {why}; {self.written} PNGs written, {self.reused} reused, "
                f"{self.removed} stale removed")


def split_train_ref(ids: list[str], train_count: int, seed: int) -> tuple[list[str], list[str]]:
    """Split ids into (train, ref): the `train_count` ids with the smallest sha256(seed:id) train, the rest
    is the reference; both sorted. Independent of input order, and adding an id moves at most one other."""
    if len(set(ids)) != len(ids):
        raise ValueError("split_train_ref: ids must be unique")
    if train_count < 0:
        raise ValueError(f"train_count must be >= 0, got {train_count}")
    ranked = sorted(ids, key=lambda i: (hashlib.sha256(f"{seed}:{i}".encode()).digest(), i))
    return sorted(ranked[:train_count]), sorted(ranked[train_count:])


def preprocess_images(files: Sequence[Path], out_dir: Path, *, size: int, mode: str, min_side: int,
                      max_pixels: int, dedupe_distance: int | None, workers: int, id_fn: IdFn = stem_id,
                      set_name: str | None = None, aspect: float | None = None,
                      previous: pd.DataFrame | None = None, root: str | os.PathLike = ".",
                      ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Turn `files` into `out_dir/{id}.png` squares of `size` px; return (manifest, rejects).

    The manifest has MANIFEST_COLUMNS (`source` and `path` relative to `root`, the project root:
    `lowshot.manifest`; `set` = set_name or out_dir's name, `aspect` the hybrid target), rejects
    REJECT_COLUMNS. `aspect` None with `hybrid` means the set's own mean aspect. Outputs that `previous`
    (an earlier manifest) shows unchanged are kept.
    """
    with _Pool(workers) as pool:
        scanned, rejects = _scan(pool, files, min_side, max_pixels, dedupe_distance, id_fn, None, "scan")
        if mode == "hybrid" and aspect is None and len(scanned):
            aspect = round(mean_aspect(zip(scanned.width, scanned.height)), ASPECT_DECIMALS)
        manifest, failed, _ = _write(pool, scanned, Path(out_dir), set_name or Path(out_dir).name, size, mode,
                                     aspect, min_side, max_pixels, _previous_rows(previous))
    return to_relative(manifest, root), to_relative(_rejects_frame(rejects + failed), root)


def preprocess_all(inputs: dict[str, list[Path]], out_root: Path, *, size: int, modes: dict[str, str],
                   min_side: int, max_pixels: int, dedupe_distance: int | None, monet_train_count: int,
                   seed: int, workers: int, root: str | os.PathLike = ".") -> PreprocessSummary:
    """The whole preprocess stage: `out_root/{paintings,photos,monet_train,monet_ref}/{id}.png`,
    `out_root/manifest.csv` and `out_root/rejects.csv` (set, source, reason), written atomically, their
    paths relative to `root` (the project root: `lowshot.manifest`).

    `inputs` maps paintings / photos / monet to files (a missing or empty set gives an empty folder);
    `modes` maps the same keys to a resize mode. The Monets are split by `split_train_ref` after
    rejects and dedupe; scraped paintings that near-duplicate a real Monet are dropped, so no copy of the
    held-out reference sneaks into training. Unchanged outputs of the previous run are kept; PNGs of
    images no longer in the input are removed.
    """
    unknown = sorted(set(inputs) - set(INPUT_SETS))
    if unknown:
        raise ValueError(f"unknown input sets {unknown}; expected {', '.join(INPUT_SETS)}")
    for name in INPUT_SETS:
        if inputs.get(name) and modes.get(name) not in RESIZE_MODES:
            raise ValueError(f"modes[{name!r}] must be one of {', '.join(RESIZE_MODES)}, got {modes.get(name)!r}")
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    previous = _previous_rows(_read_manifest(out_root / "manifest.csv", root))
    summary = PreprocessSummary(images=dict.fromkeys(OUTPUT_SETS, 0))
    manifests, rejects = [], []
    with _Pool(workers) as pool:
        references: dict[str, int] = {}
        for name in ("monet", "paintings", "photos"):  # Monets first: their hashes screen the paintings
            scanned, rejected = _scan(pool, inputs.get(name, []), min_side, max_pixels, dedupe_distance, stem_id,
                                      references if name == "paintings" else None, f"scan {name}")
            aspect = None
            if modes.get(name) == "hybrid" and len(scanned):
                aspect = round(mean_aspect(zip(scanned.width, scanned.height)), ASPECT_DECIMALS)
                summary.aspects[name] = aspect
            if name == "monet":
                train, _ = split_train_ref(list(scanned.id), monet_train_count, seed)
                if len(train) < monet_train_count:
                    log.warning("only %d usable Monets for monet_train (%d asked); monet_ref is empty",
                                len(train), monet_train_count)
                in_train = scanned.id.isin(train)
                parts = {"monet_train": scanned[in_train], "monet_ref": scanned[~in_train]}
            else:
                parts = {name: scanned}
            for out_set, rows in parts.items():
                manifest, failed, written = _write(pool, rows, out_root / out_set, out_set, size, modes.get(name, ""),
                                                   aspect, min_side, max_pixels, previous)
                manifests.append(manifest)
                rejected += failed
                summary.images[out_set] = len(manifest)
                summary.written += written
                summary.reused += len(manifest) - written
                if name == "monet":  # Monet hashes guard the paintings scanned next
                    references.update({f"{out_set}/{i}": int(h, 16) for i, h in zip(manifest.id, manifest.phash)})
                summary.removed += _prune(out_root / out_set, set(manifest.id))
            rejects += [(name, source, reason) for source, reason in rejected]
            summary.rejected[name] = len(rejected)
    manifests = [m for m in manifests if len(m)]
    manifest = pd.concat(manifests, ignore_index=True) if manifests else pd.DataFrame(columns=MANIFEST_COLUMNS)
    manifest["order"] = manifest["set"].map(OUTPUT_SETS.index)
    manifest = manifest.sort_values(["order", "id"], ignore_index=True).drop(columns="order")
    reject_frame = to_relative(pd.DataFrame(sorted(rejects), columns=["set", *REJECT_COLUMNS]), root)
    write_manifest(to_relative(manifest, root), out_root / "manifest.csv")
    write_manifest(reject_frame, out_root / "rejects.csv")
    summary.reasons = dict(Counter(r.split(":", 1)[0] for r in reject_frame.reason))
    log.info("preprocess: %s", summary.describe())
    return summary


# --------------------------------------------------------------------------- pass (a): scan


def _scan(pool: _Pool, files: Iterable[Path], min_side: int, max_pixels: int, dedupe_distance: int | None,
          id_fn: IdFn, references: dict[str, int] | None, desc: str) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Scan `files`; return the accepted (id, source, sha256, width, height, phash), sorted by id, and the
    (source, reason) rejects."""
    results = pool.map(_scan_one, [(str(f), min_side, max_pixels) for f in files], desc)
    rejects = [(r["source"], r["reason"]) for r in results if "reason" in r]
    ok = sorted((r for r in results if "reason" not in r), key=lambda r: (-r["width"] * r["height"], r["source"]))
    keeper_of: dict[str, dict] = {}
    unique = []
    for r in ok:
        if r["sha256"] in keeper_of:
            r["duplicate_of"] = keeper_of[r["sha256"]]
        else:
            keeper_of[r["sha256"]] = r
            unique.append(r)
    for r, i in zip(unique, _assign_ids(unique, id_fn)):
        r["id"] = i
    rejects += [(r["source"], f"duplicate_of:{r['duplicate_of']['id']}") for r in ok if "duplicate_of" in r]
    if dedupe_distance is not None:
        if references:
            labels = list(references)
            hits = matches([r["phash"] for r in unique], list(references.values()), dedupe_distance)
            rejects += [(unique[k]["source"], f"near_duplicate_of:{labels[j]}") for k, j in hits.items()]
            unique = [r for k, r in enumerate(unique) if k not in hits]
        dups = duplicate_of([r["phash"] for r in unique], dedupe_distance)
        rejects += [(unique[k]["source"], f"near_duplicate_of:{unique[j]['id']}") for k, j in dups.items()]
        unique = [r for k, r in enumerate(unique) if k not in dups]
    columns = ["id", "source", "sha256", "width", "height", "phash"]
    frame = pd.DataFrame([{c: r[c] for c in columns} for r in unique], columns=columns)
    return frame.sort_values("id", ignore_index=True), rejects


def _scan_one(job: tuple[str, int, int]) -> dict:
    source, min_side, max_pixels = job
    try:
        data = Path(source).read_bytes()
        decoded = decode_rgb(data, min_side=min_side, max_pixels=max_pixels, draft_to=_HASH_DRAFT)
        return {"source": source, "sha256": sha256_bytes(data), "width": decoded.width,
                "height": decoded.height, "phash": phash(decoded.image)}
    except ImageRejected as e:
        log.debug("%s rejected: %s", source, e)
        return {"source": source, "reason": e.reason}
    except OSError as e:
        log.warning("%s unreadable: %s", source, e)
        return {"source": source, "reason": "unreadable"}
    except Exception as e:  # one bad file never stops the stage
        log.warning("%s failed: %r", source, e)
        return {"source": source, "reason": f"error:{type(e).__name__}"}


def _assign_ids(rows: list[dict], id_fn: IdFn) -> list[str]:
    """Stem ids where unique (case-insensitively: macOS and Windows folders), else sha256[:12], else the
    full sha256 (unique: byte-identical files are gone by now)."""
    levels = [0] * len(rows)

    def candidate(k: int) -> str:
        if levels[k] == 0:
            stem = id_fn(Path(rows[k]["source"]))
            if stem is not None and _SAFE_ID.fullmatch(stem):
                return stem
            levels[k] = 1
        return rows[k]["sha256"][:12] if levels[k] == 1 else rows[k]["sha256"]

    while True:
        ids = [candidate(k) for k in range(len(rows))]
        counts = Counter(i.lower() for i in ids)
        clashing = [k for k, i in enumerate(ids) if counts[i.lower()] > 1 and levels[k] < 2]
        if not clashing:
            return ids
        for k in clashing:
            levels[k] += 1


# --------------------------------------------------------------------------- pass (b): write


def _write(pool: _Pool, scanned: pd.DataFrame, out_dir: Path, set_name: str, size: int, mode: str,
           aspect: float | None, min_side: int, max_pixels: int, previous: dict[tuple[str, str], dict]
           ) -> tuple[pd.DataFrame, list[tuple[str, str]], int]:
    """Write the scanned images of one output set; return (manifest, rejects, PNGs written)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [dict(r, set=set_name, path=(out_dir / f"{r['id']}.png").as_posix(), mode=mode, size=size, aspect=aspect,
                 width=int(r["width"]), height=int(r["height"]), phash=f"{int(r['phash']):016x}")
            for r in scanned.to_dict("records")]
    jobs, done = [], {}
    for k, row in enumerate(rows):
        old = previous.get((set_name, row["id"]))
        if old is not None and _unchanged(old, row, out_dir / f"{row['id']}.png"):
            done[k] = {"crop_box": old["crop_box"], "out_sha256": old["out_sha256"]}
        else:
            jobs.append((k, row["source"], row["sha256"], (row["width"], row["height"]),
                         str(out_dir / f"{row['id']}.png"), size, mode, aspect, min_side, max_pixels))
    for (k, *_), result in zip(jobs, pool.map(_write_one, jobs, f"write {set_name}")):
        done[k] = result
    manifest, rejects = [], []
    for k, row in enumerate(rows):
        if "reason" in done[k]:
            rejects.append((row["source"], done[k]["reason"]))
        else:
            manifest.append({**row, **done[k]})
    written = len(jobs) - len(rejects)
    log.info("%s: %d images (%d written, %d kept from the last run), %d failed", set_name, len(manifest),
             written, len(manifest) - written, len(rejects))
    return pd.DataFrame(manifest, columns=MANIFEST_COLUMNS), rejects, written


def _write_one(job: tuple) -> dict:
    _, source, sha, (width, height), out, size, mode, aspect, min_side, max_pixels = job
    try:
        data = Path(source).read_bytes()
    except OSError as e:
        log.warning("%s unreadable: %s", source, e)
        return {"reason": "unreadable"}
    if sha256_bytes(data) != sha:
        return {"reason": "changed_during_run"}
    try:
        # Decode (by JPEG draft) down to no less than 2x the target over the crop window's shorter side.
        box = crop_box(width, height, mode, aspect)
        draft_to = math.ceil(size * min(width, height) / min(box[2] - box[0], box[3] - box[1]))
        decoded = decode_rgb(data, min_side=min_side, max_pixels=max_pixels, draft_to=draft_to)
        square, box = resize_to_square(decoded.image, size, mode, aspect, source_size=(decoded.width, decoded.height))
        buf = io.BytesIO()
        square.save(buf, "PNG", compress_level=PNG_COMPRESS_LEVEL)
        png = buf.getvalue()
    except ImageRejected as e:
        return {"reason": e.reason}
    except Exception as e:  # one bad file never stops the stage
        log.warning("%s failed: %r", source, e)
        return {"reason": f"error:{type(e).__name__}"}
    atomic_write_bytes(out, png, durable=False)  # a failing disk is no bad file: that error stops the stage
    return {"crop_box": ",".join(map(str, box)), "out_sha256": sha256_bytes(png)}


def _unchanged(old: dict, row: dict, out: Path) -> bool:
    """The previous run wrote this very output: same source bytes and resize parameters, PNG intact."""
    same_aspect = (old["aspect"] == "" and row["aspect"] is None) or (
        old["aspect"] != "" and row["aspect"] is not None and math.isclose(float(old["aspect"]), row["aspect"]))
    return (old["sha256"] == row["sha256"] and old["mode"] == row["mode"] and old["size"] == str(row["size"])
            and same_aspect and out.is_file() and sha256_file(out) == old["out_sha256"])


def _read_manifest(path: Path, root: str | os.PathLike) -> pd.DataFrame | None:
    try:
        return read_manifest(path, root)
    except ValueError as e:
        log.warning("%s; every image is written again", e)
        return None


def _previous_rows(previous: pd.DataFrame | None) -> dict[tuple[str, str], dict]:
    needed = {"id", "set", "sha256", "mode", "size", "aspect", "crop_box", "out_sha256"}
    if previous is None or not needed <= set(previous.columns):
        return {}
    frame = previous.astype(object).where(previous.notna(), "").astype(str)  # CSV or in-memory alike
    return {(r["set"], r["id"]): r for r in frame.to_dict("records")}


def _rejects_frame(rejects: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(sorted(rejects), columns=REJECT_COLUMNS)


def _prune(out_dir: Path, keep: set[str]) -> int:
    """Remove PNGs of images no longer in the set, and temporary files a killed run left."""
    stale = [p for p in out_dir.glob("*.png") if p.stem not in keep]
    for p in stale:
        p.unlink(missing_ok=True)
    remove_stale_temps(out_dir)
    if stale:
        log.info("%s: removed %d stale PNGs", out_dir, len(stale))
    return len(stale)


class _Pool:
    """Worker processes started on first use and shared by every pass; workers=1 runs in-process."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self._executor: ProcessPoolExecutor | None = None

    def map(self, fn: Callable, items: list, desc: str) -> list:
        bar = {"total": len(items), "desc": desc, "unit": "img", "disable": None, "leave": False}
        if self.workers == 1 or len(items) <= 1:
            return [fn(x) for x in tqdm(items, **bar)]
        if self._executor is None:
            self._executor = ProcessPoolExecutor(max_workers=self.workers)
        chunksize = max(1, min(32, len(items) // (self.workers * 8)))
        return list(tqdm(self._executor.map(fn, items, chunksize=chunksize), **bar))

    def __enter__(self) -> _Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)
