"""CIFAR-10 in its original ``cifar-10-batches-py`` form: pickled batches, read safely.

Layout (as distributed by the dataset's authors, and as torchvision downloads it):
``data_batch_1`` .. ``data_batch_5`` (train, 10,000 rows each), ``test_batch`` and
``batches.meta``. Each batch is a Python 2 protocol-2 pickle of a dict with keys ``data``,
a ``(N, 3072)`` uint8 array whose rows are three 32x32 planes (1024 R, 1024 G, 1024 B, each
row-major), and ``labels``, a list of N ints in 0..9. ``batches.meta`` holds ``label_names``.

A pickle can call any importable function while it loads. :class:`RestrictedUnpickler` only
resolves the few numpy globals that an array needs, so a planted file cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from vqlab.data.errors import DataError, describe

try:  # numpy >= 2 moved the array internals to numpy._core; numpy.core still warns if touched
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct

CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
BATCH_DIR = "cifar-10-batches-py"
SPLIT_FILES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
META_FILE = "batches.meta"

# Everything an ndarray pickle references, under the module names that numpy 1.x (the real,
# Python 2 files) and numpy 2.x (files pickled again today) write. Nothing else resolves.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global except numpy's array reconstruction helpers."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}") from None


def is_batch_dir(path: Path) -> bool:
    """Whether ``path`` is a ``cifar-10-batches-py`` directory (has any of its files)."""
    names = (*SPLIT_FILES["train"], *SPLIT_FILES["test"], META_FILE)
    return path.is_dir() and any((path / name).is_file() for name in names)


def batch_files(batch_dir: Path, split: str) -> list[Path]:
    """The pickles that make up ``split``, plus ``batches.meta`` when present."""
    files = [batch_dir / name for name in SPLIT_FILES[split]]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise DataError(f"{batch_dir}: CIFAR-10 batch files missing for split {split!r}: {missing}")
    meta = batch_dir / META_FILE
    return files + [meta] if meta.is_file() else files


def load_pickle(path: Path) -> dict[str, Any]:
    """Unpickle one batch file safely; returns the dict with ``str`` keys."""
    try:
        with path.open("rb") as f:
            # encoding="bytes": the files are Python 2 pickles, whose str objects hold raw
            # array bytes that must not be decoded as text
            obj = RestrictedUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise DataError(f"{path}: not a safe CIFAR-10 pickle ({exc})") from None
    except (OSError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise DataError(f"{path}: cannot read CIFAR-10 pickle ({describe(exc)})") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict, found {type(obj).__name__}")
    return {k.decode("latin-1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _class_names(batch_dir: Path) -> list[str]:
    meta = batch_dir / META_FILE
    if not meta.is_file():
        return list(CLASSES)
    names = load_pickle(meta).get("label_names")
    if not isinstance(names, list) or not names:
        raise DataError(f"{meta}: no 'label_names' list")
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


def _read_batch(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """images: (N, 32, 32, 3) uint8; labels: (N,) int64."""
    batch = load_pickle(path)
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DataError(f"{path}: 'data' is not a 2-D uint8 array")
    if data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: 'data' rows have {data.shape[1]} values, expected 3072")
    labels = np.asarray(labels, dtype=np.int64) if labels is not None else None
    if labels is None or labels.shape != (data.shape[0],):
        raise DataError(f"{path}: 'labels' missing or not one per row of 'data'")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{path}: labels outside 0..{num_classes - 1}")
    # each row is three row-major planes: (N, 3072) -> (N, C=3, H=32, W=32) -> (N, H, W, C)
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def read_batches(batch_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read one split of ``cifar-10-batches-py``.

    Returns images (N, 32, 32, 3) uint8, labels (N,) int64 and the class names.
    ``split`` is ``"train"`` (data_batch_1..5, N = 50,000) or ``"test"`` (test_batch).
    """
    classes = _class_names(batch_dir)
    parts = [_read_batch(batch_dir / name, len(classes)) for name in SPLIT_FILES[split]]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return images, labels, classes
