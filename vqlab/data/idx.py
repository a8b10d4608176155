"""MNIST-style IDX files, raw or gzipped.

An IDX file is a 4-byte magic number ``00 00 <dtype code> <ndim>``, then ``ndim`` big-endian
uint32 sizes, then the values, big-endian and row-major. MNIST and Fashion-MNIST ship
``train-images-idx3-ubyte`` (N, 28, 28) uint8 with ``train-labels-idx1-ubyte`` (N,) uint8, and
``t10k-*`` files for the test split; often as ``.gz``, sometimes named ``train-images.idx3-ubyte``.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from vqlab.data.errors import DataError, describe

# dtype code -> numpy dtype (big-endian where it matters)
_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_INTEGER_CODES = (0x08, 0x09, 0x0B, 0x0C)
# file-name prefixes of each split: MNIST writes "t10k", some re-packs write "test"
PREFIXES = {"train": ("train",), "test": ("t10k", "test")}


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (raw or ``.gz``) into an array of the shape its header states."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read IDX file ({describe(exc)})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (magic number must start with two zero bytes)")
    code, ndim = raw[2], raw[3]
    if code not in _DTYPES:
        raise DataError(f"{path}: unknown IDX dtype code 0x{code:02x}")
    if ndim < 1:
        raise DataError(f"{path}: IDX header declares 0 dimensions")
    start = 4 + 4 * ndim
    if len(raw) < start:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:start])
    dtype = _DTYPES[code]
    expected = start + math.prod(dims) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(
            f"{path}: {len(raw)} bytes but the IDX header {list(dims)} implies {expected}"
        )
    arr = np.frombuffer(raw, dtype=dtype, offset=start).reshape(dims)
    if code not in _INTEGER_CODES:
        return arr.astype(dtype.newbyteorder("="))
    return arr


def _find(folder: Path, split: str, kind: str) -> Path | None:
    """The ``kind`` ("images" or "labels") file of ``split`` in ``folder``; raw before ``.gz``."""
    found = []
    for f in sorted(folder.iterdir()):
        # "train-images.idx3-ubyte" and "train-images-idx3-ubyte" are both in the wild
        norm = f.name.lower().replace(".", "-")
        if f.is_file() and any(norm.startswith(f"{p}-{kind}-idx") for p in PREFIXES[split]):
            found.append(f)
    found.sort(key=lambda f: f.suffix == ".gz")
    return found[0] if found else None


def find_files(path: Path, split: str) -> tuple[Path, Path | None]:
    """The images file and labels file (or None) of ``split`` under ``path``.

    ``path`` is a folder holding the IDX files, or an images file itself (whose name must then
    belong to ``split``; its labels file is looked up beside it).
    """
    if path.is_file():
        norm = path.name.lower().replace(".", "-")
        if not any(norm.startswith(f"{p}-images-idx") for p in PREFIXES[split]):
            raise DataError(
                f"{path}: not a {split!r} images file (expected a name starting with "
                f"{' or '.join(p + '-images-idx' for p in PREFIXES[split])}); "
                "pass the folder that holds the IDX files"
            )
        return path, _find(path.parent, split, "labels")
    images = _find(path, split, "images")
    if images is None:
        names = " or ".join(f"{p}-images-idx3-ubyte[.gz]" for p in PREFIXES[split])
        raise DataError(f"{path}: no IDX images file for split {split!r} (looked for {names})")
    return images, _find(path, split, "labels")


def read_split(
    images_path: Path, labels_path: Path | None
) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """images: (N, H, W, C) uint8 (C = 1 for grayscale); labels: (N,) int64 or None; classes."""
    images = read_idx(images_path)
    if images.dtype != np.uint8:
        raise DataError(f"{images_path}: images must be unsigned bytes (IDX code 0x08)")
    if images.ndim == 3:
        images = images[..., None]  # grayscale (N, H, W) -> (N, H, W, 1)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise DataError(f"{images_path}: expected (N, H, W) or (N, H, W, 1|3), got {images.shape}")
    if labels_path is None:
        return np.ascontiguousarray(images), None, []
    labels = read_idx(labels_path)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(f"{labels_path}: labels must be a 1-D integer IDX array")
    if len(labels) != len(images):
        raise DataError(
            f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_path.name}"
        )
    labels = labels.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise DataError(f"{labels_path}: negative labels")
    classes = [str(i) for i in range(int(labels.max()) + 1)] if labels.size else []
    return np.ascontiguousarray(images), labels, classes
