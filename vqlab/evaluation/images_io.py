"""Image sets to score: a folder or zip of images, or an ``.npz`` with a uint8 ``images`` array.

Folders and zips are read by :func:`vqlab.data.images.load_images` (decoded once into the data
cache); class sub-folders are allowed and ignored here. A folder or zip holding exactly one
split folder (``test/<class>/...``, as CIFAR-10's ``test.zip`` does) is read from that folder.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from vqlab.data.errors import DataError, describe

_SPLIT_FOLDERS = ("train", "test", "val", "valid", "validation")


def _top_folders(path: Path) -> set[str]:
    if path.is_dir():
        return {c.name for c in path.iterdir() if c.is_dir() and not c.name.startswith(".")}
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(
            f"{path}: not a folder, a .zip of images or an .npz ({describe(exc)})"
        ) from None
    return {n.split("/", 1)[0] for n in names if "/" in n}


def _split_of(path: Path) -> str:
    """The one split folder under ``path``, or ``"train"`` (a plain folder is all 'train')."""
    splits = sorted(_top_folders(path) & set(_SPLIT_FOLDERS))
    if len(splits) > 1:
        raise DataError(
            f"{path}: holds several split folders {splits}; point at one of them "
            "(for example the test set alone)"
        )
    return splits[0] if splits else "train"


def _load_npz(path: Path) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "images" not in npz.files:
                raise DataError(f"{path}: no 'images' array (has {sorted(npz.files)})")
            images = npz["images"]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz file ({describe(exc)})") from None
    if images.dtype != np.uint8:
        raise DataError(f"{path}: 'images' must be uint8 on the 0-255 scale, got {images.dtype}")
    if images.ndim == 3:  # (N, H, W) grayscale
        images = images[..., None]
    if images.ndim != 4 or images.shape[3] not in (1, 3) or images.shape[0] == 0:
        raise DataError(
            f"{path}: 'images' must be (N, H, W, C) with C = 1 or 3 and N >= 1, "
            f"got shape {images.shape}"
        )
    return images


def load_image_set(path: str | Path, *, cache_dir: str | Path | None = None) -> np.ndarray:
    """The images at ``path`` as (N, H, W, C) uint8.

    path: a folder or ``.zip`` of images (sub-folders allowed, one split folder allowed), or an
    ``.npz`` holding a uint8 ``images`` array (N, H, W, C) or (N, H, W). cache_dir: the data
    cache for decoded folders (default ``$VQLAB_CACHE`` or ``~/.cache/vqlab``).
    Raises DataError (one line) for a missing path, an ``.npz`` without ``images``, a wrong
    dtype or shape, or a folder without decodable images.
    """
    from vqlab.data.images import load_images

    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    if p.is_file() and p.suffix.lower() == ".npz":
        return _load_npz(p)
    if p.is_file() and not zipfile.is_zipfile(p):
        raise DataError(f"{p}: not a folder, a .zip of images or an .npz with an 'images' array")
    ds = load_images("image_folder", p, split=_split_of(p), cache_dir=cache_dir)
    return np.asarray(ds.images)


def check_same_shape(real: np.ndarray, fake: np.ndarray) -> None:
    """Raise DataError unless REAL and FAKE images (N, H, W, C) have the same H, W and C."""
    if real.shape[1:] != fake.shape[1:]:
        r, f = real.shape[1:], fake.shape[1:]
        raise DataError(
            f"REAL images are {r[1]}x{r[0]}x{r[2]} but FAKE images are {f[1]}x{f[0]}x{f[2]} "
            "(width x height x channels); compare images of one size"
        )
