"""Image datasets for tokenizer training: CIFAR-10, any image folder or zip, and IDX files.

``load_images(name, path, split=..., image_size=...)`` decodes a dataset once into the cache of
:mod:`vqlab.data.cache` and returns it memory-mapped as an :class:`ImageDataset` of
(N, H, W, C) uint8 images; :func:`to_tensor` turns a batch of them into model inputs.

Names and layouts:

- ``cifar10``: the original ``cifar-10-batches-py`` folder of pickled batches (or the folder
  that holds it, as torchvision downloads it), read by :mod:`vqlab.data.cifar`; or the image
  folder layout ``train/<class>/*.jpg`` and ``test/<class>/*.jpg``, given as a folder holding
  ``train.zip``/``test.zip``, one of those zips, or the extracted folder. Class ids follow
  CIFAR-10's canonical order (airplane, automobile, ..., truck) when the folder names are those.
- ``image_folder``: a folder or zip of .jpg/.jpeg/.png/.bmp/.webp files, optionally one
  sub-folder per class (labels follow the sorted folder names; no sub-folders -> no labels), and
  optionally split folders (``train/``, ``test/``, ...) above the classes. A folder without split
  folders is all split ``"train"``; asking it for another split is an error, never a silent reuse.
  Images are converted to RGB.
- ``idx``: MNIST-style IDX files, raw or ``.gz`` (:mod:`vqlab.data.idx`); grayscale gives C = 1.

Policies:

- ``image_size``: resize the shorter side to it (bicubic, antialiased) and center-crop a square.
  Without it, every image must have the same size.
- A file that cannot be read or decoded is skipped and counted: its path goes into
  ``ImageDataset.skipped`` and one warning names the count and the first file. ``strict=True``
  raises :class:`DataError` at the first such file instead. No decodable image at all, an empty
  folder and a missing path are always errors.
- Zip archives with absolute or ``..`` member names are refused as a whole.
- Hidden files and folders (``.name``) and ``__MACOSX/`` are ignored; so are non-image files.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from vqlab.data import cache, cifar, idx
from vqlab.data.errors import DataError, NoSplitError, describe

__all__ = ["DataError", "ImageDataset", "load_images", "to_tensor", "NAMES", "IMAGE_EXTENSIONS"]

NAMES = ("cifar10", "image_folder", "idx")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_SPLITS = ("train", "test")  # of cifar10 and idx
_SPLIT_FOLDERS = frozenset({"train", "test", "val", "valid", "validation"})
# what a broken file can raise while read from a folder or zip and decoded by PIL
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    zlib.error,
    zipfile.BadZipFile,
    Image.DecompressionBombError,
)


@dataclass(frozen=True)
class ImageDataset:
    """A decoded image dataset, in memory or memory-mapped from the cache.

    images: (N, H, W, C) uint8. labels: (N,) int64 class ids, or None when unlabelled.
    classes: class names, ``classes[labels[i]]`` names image i (empty when unlabelled).
    skipped: paths of files that could not be decoded and are not in ``images``.
    """

    images: np.ndarray
    labels: np.ndarray | None
    classes: list[str]
    skipped: list[str]


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, C) uint8 -> (N, C, H, W) float32 in [-1, 1], by ``x / 127.5 - 1``.

    0 maps to -1.0 and 255 to exactly 1.0. The result is a new, contiguous tensor.
    """
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"to_tensor expects (N, H, W, C) uint8, got {images.shape} {images.dtype}")
    # np.asarray(..., float32) copies, so a read-only memory map is never handed to torch
    x = torch.from_numpy(np.asarray(images, dtype=np.float32))
    x.div_(127.5).sub_(1.0)
    return x.permute(0, 3, 1, 2).contiguous()  # (N, H, W, C) -> (N, C, H, W)


class _Decoded(NamedTuple):
    images: np.ndarray  # (N, H, W, C) uint8
    labels: np.ndarray | None  # (N,) int64
    classes: list[str]
    skipped: list[str]


class _Plan(NamedTuple):
    """What a loader will read: the resolved source, its files (for the cache) and the decoder."""

    source: Path
    files: list[Path]
    decode: Callable[[], _Decoded]


def load_images(
    name: str,
    path: str | Path,
    *,
    split: str = "train",
    image_size: int | None = None,
    cache_dir: str | Path | None = None,
    strict: bool = False,
) -> ImageDataset:
    """Load split ``split`` of dataset ``name`` from ``path``, decoding it once into a cache.

    name: ``"cifar10"``, ``"image_folder"`` or ``"idx"`` (layouts in the module docstring).
    split: ``"train"`` or ``"test"`` (an image folder may name any split folder it has).
    image_size: resize the shorter side and center-crop to a square of this side.
    cache_dir: cache folder; default ``$VQLAB_CACHE`` or ``~/.cache/vqlab``. If it cannot be
        written, a warning is given and the dataset is returned from memory.
    strict: fail on the first undecodable file instead of skipping and counting it.
    Returns images (N, H, W, C) uint8 (memory-mapped from the cache), labels (N,) int64 or None.
    Raises DataError for a bad name, split or size, a missing path or unusable data.
    """
    if name not in NAMES:
        raise DataError(f"unknown dataset name {name!r}; valid names: {', '.join(NAMES)}")
    if image_size is not None and (
        not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1
    ):
        raise DataError(f"image_size must be a positive integer or None, got {image_size!r}")
    if name != "image_folder" and split not in _SPLITS:
        raise DataError(f"unknown split {split!r} for {name}; valid splits: {', '.join(_SPLITS)}")
    if not split or "/" in split or "\\" in split:
        raise DataError(f"split must be a plain folder name, got {split!r}")
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")

    planners = {"cifar10": _plan_cifar10, "image_folder": _plan_image_folder, "idx": _plan_idx}
    plan = planners[name](path, split, image_size, strict)
    # what the decoded arrays depend on besides the source files' contents
    key = {
        "name": name,
        "source": str(plan.source.resolve()),
        "split": split,
        "image_size": image_size,
    }
    folder = Path(cache_dir).expanduser() if cache_dir is not None else cache.default_cache_dir()
    source = cache.fingerprint(plan.files)
    hit = cache.load(folder, key, source)
    if hit is None:
        dec = plan.decode()
        info = {"classes": dec.classes, "skipped": dec.skipped}
        try:
            hit = cache.save(folder, key, source, dec.images, dec.labels, info)
        except OSError as exc:
            warnings.warn(f"{folder}: cannot write the data cache ({describe(exc)})", stacklevel=2)
            hit = cache.Cached(dec.images, dec.labels, info)
    ds = ImageDataset(hit.images, hit.labels, list(hit.meta["classes"]), list(hit.meta["skipped"]))
    if ds.skipped:
        # a cached entry remembers what was skipped, so strict mode still refuses it
        if strict:
            raise DataError(f"{ds.skipped[0]}: cannot decode image ({len(ds.skipped)} bad files)")
        warnings.warn(
            f"{plan.source}: skipped {len(ds.skipped)} image file(s) that could not be decoded "
            f"(first: {ds.skipped[0]}); pass strict=True to fail instead",
            stacklevel=2,
        )
    return ds


# ---------------------------------------------------------------------------------- planners


def _plan_idx(path: Path, split: str, image_size: int | None, strict: bool) -> _Plan:
    images_path, labels_path = idx.find_files(path, split)

    def decode() -> _Decoded:
        images, labels, classes = idx.read_split(images_path, labels_path)
        return _Decoded(_resize_array(images, image_size), labels, classes, [])

    files = [images_path] if labels_path is None else [images_path, labels_path]
    return _Plan(images_path, files, decode)


def _plan_cifar10(path: Path, split: str, image_size: int | None, strict: bool) -> _Plan:
    if path.is_file():
        return _plan_folder(path, split, image_size, strict, _cifar_order)
    batch_dir = path if cifar.is_batch_dir(path) else path / cifar.BATCH_DIR
    if cifar.is_batch_dir(batch_dir):
        files = cifar.batch_files(batch_dir, split)

        def decode() -> _Decoded:
            images, labels, classes = cifar.read_batches(batch_dir, split)
            return _Decoded(_resize_array(images, image_size), labels, classes, [])

        return _Plan(batch_dir, files, decode)
    if (path / f"{split}.zip").is_file():
        return _plan_folder(path / f"{split}.zip", split, image_size, strict, _cifar_order)
    if (path / split).is_dir():
        return _plan_folder(path, split, image_size, strict, _cifar_order)
    raise DataError(
        f"{path}: no CIFAR-10 data for split {split!r} (looked for {cifar.BATCH_DIR}/ or its "
        f"batch files, {split}.zip and {split}/<class>/)"
    )


def _plan_image_folder(path: Path, split: str, image_size: int | None, strict: bool) -> _Plan:
    return _plan_folder(path, split, image_size, strict, sorted)


def _cifar_order(names: list[str]) -> list[str]:
    # CIFAR-10's canonical order happens to be alphabetical; pinning it keeps the ids 0..9
    # of the original batches whatever sorting rule is in force
    return list(cifar.CLASSES) if set(names) == set(cifar.CLASSES) else sorted(names)


def _plan_folder(
    path: Path,
    split: str,
    image_size: int | None,
    strict: bool,
    order: Callable[[list[str]], list[str]],
) -> _Plan:
    if path.is_dir():
        rels = _list_dir(path)
    elif zipfile.is_zipfile(path):
        rels = _list_zip(path)
    else:
        raise DataError(f"{path}: not a folder or a .zip archive")
    rels, labels, classes = _select(rels, split, path, order)
    files = [path / r for r in rels] if path.is_dir() else [path]

    def decode() -> _Decoded:
        return _decode_files(path, rels, labels, classes, image_size, strict)

    return _Plan(path, files, decode)


# ------------------------------------------------------------------------- folders and zips


def _list_dir(root: Path) -> list[str]:
    """Relative POSIX paths of the visible files under ``root``, sorted."""
    rels = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]  # prune hidden folders
        base = Path(dirpath).relative_to(root)
        rels += [(base / f).as_posix() for f in filenames if not f.startswith(".")]
    return sorted(rels)


def _list_zip(path: Path) -> list[str]:
    """Member names of the visible files in a zip, sorted; refuses unsafe names."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{path}: not a readable zip archive ({describe(exc)})") from exc
    names = []
    for info in infos:
        name = info.filename
        parts = name.replace("\\", "/").split("/")
        # never extracted, but a member that would escape its folder marks a hostile archive
        if name.startswith(("/", "\\")) or name[1:2] == ":" or ".." in parts:
            raise DataError(f"{path}: unsafe member name {name!r} (absolute or '..'); refused")
        hidden = any(p.startswith(".") for p in parts) or parts[0] == "__MACOSX"
        if not info.is_dir() and not hidden:
            names.append(name)
    return sorted(names)


def _select(
    rels: list[str], split: str, source: Path, order: Callable[[list[str]], list[str]]
) -> tuple[list[str], np.ndarray | None, list[str]]:
    """Pick the image files of ``split`` and label them by class folder.

    Returns the chosen relative paths, their labels (N,) int64 or None, and the class names.
    """
    rels = [r for r in rels if os.path.splitext(r)[1].lower() in IMAGE_EXTENSIONS]
    tops = {r.split("/", 1)[0] for r in rels if "/" in r}
    if split in tops:
        rels = [r for r in rels if r.startswith(f"{split}/")]
        inner = [r[len(split) + 1 :] for r in rels]
    elif tops & _SPLIT_FOLDERS:
        found = sorted(tops & _SPLIT_FOLDERS)
        raise DataError(f"{source}: has split folders {found} but none named {split!r}")
    elif split != "train" and rels:
        raise NoSplitError(
            f"{source}: no {split!r} folder; a folder without split folders is all split 'train'"
        )
    else:
        inner = rels
    if not rels:
        raise DataError(f"{source}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
    class_names = sorted({r.split("/", 1)[0] for r in inner if "/" in r})
    if not class_names:
        return rels, None, []
    loose = [r for r in inner if "/" not in r]
    if loose:
        raise DataError(
            f"{source}: image {loose[0]!r} sits beside class folders {class_names[:3]}; "
            "move loose images into a class folder"
        )
    classes = order(class_names)
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[r.split("/", 1)[0]] for r in inner], dtype=np.int64)
    return rels, labels, classes


@contextlib.contextmanager
def _reader(source: Path) -> Iterator[Callable[[str], bytes]]:
    """A function from relative path to file bytes, for a folder or (kept open) a zip."""
    if source.is_dir():
        yield lambda rel: (source / rel).read_bytes()
    else:
        with zipfile.ZipFile(source) as zf:
            yield zf.read


# ---------------------------------------------------------------------------------- decoding


def _resize_crop(im: Image.Image, size: int) -> Image.Image:
    """Scale the shorter side to ``size`` (bicubic, antialiased), then center-crop size x size."""
    w, h = im.size
    if (w, h) == (size, size):
        return im
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    im = im.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return im.crop((left, top, left + size, top + size))


def _decode_image(data: bytes, image_size: int | None) -> np.ndarray:
    """Encoded image bytes -> (H, W, 3) uint8 RGB, resized and cropped if ``image_size``."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()  # Image.open is lazy; truncated data only fails here
        out: Image.Image = im
        if "exif" in im.info:  # photos keep their rotation in EXIF; show them upright
            out = ImageOps.exif_transpose(out)
        if out.mode != "RGB":
            out = out.convert("RGB")
        if image_size is not None:
            out = _resize_crop(out, image_size)
        return np.asarray(out)


def _resize_array(images: np.ndarray, image_size: int | None) -> np.ndarray:
    """(N, H, W, C) uint8 -> (N, S, S, C) uint8 with S = ``image_size`` (None: unchanged)."""
    if image_size is None or images.shape[1:3] == (image_size, image_size):
        return images
    out = np.empty((len(images), image_size, image_size, images.shape[3]), np.uint8)
    for i, img in enumerate(images):
        im = Image.fromarray(img[..., 0] if img.shape[2] == 1 else img)  # PIL wants (H, W) gray
        out[i] = np.asarray(_resize_crop(im, image_size)).reshape(out.shape[1:])
    return out


def _decode_files(
    source: Path,
    rels: list[str],
    labels: np.ndarray | None,
    classes: list[str],
    image_size: int | None,
    strict: bool,
) -> _Decoded:
    """Decode every file ``rels`` (relative to ``source``) into one (N, H, W, 3) uint8 array."""
    out: np.ndarray | None = None
    kept: list[int] = []
    skipped: list[str] = []
    # disable=None shows the bar only on a terminal; small folders get none
    bar = tqdm(
        total=len(rels),
        desc=f"decoding {source.name}",
        unit="img",
        leave=False,
        disable=None if len(rels) >= 1000 else True,
    )
    with _reader(source) as read, bar:
        for i, rel in enumerate(rels):
            bar.update()
            try:
                img = _decode_image(read(rel), image_size)
            except _DECODE_ERRORS as exc:
                if strict:
                    raise DataError(
                        f"{source / rel}: cannot decode image ({describe(exc)})"
                    ) from exc
                skipped.append(str(source / rel))
                continue
            if out is None:
                out = np.empty((len(rels), *img.shape), np.uint8)  # filled up to len(kept)
            elif img.shape != out.shape[1:]:
                first = f"{out.shape[2]}x{out.shape[1]} ({rels[kept[0]]})"
                raise DataError(
                    f"{source}: images have mixed sizes: {first} and {img.shape[1]}x{img.shape[0]} "
                    f"({rel}); set data.image_size to resize and center-crop them"
                )
            out[len(kept)] = img
            kept.append(i)
    if out is None:
        raise DataError(
            f"{source}: none of the {len(rels)} image files could be decoded (first: {skipped[0]})"
        )
    kept_labels = None if labels is None else labels[kept]
    return _Decoded(out[: len(kept)], kept_labels, classes, skipped)
