"""Decode once, then memory-map: the on-disk cache of decoded image datasets.

One cache entry is three files in the cache folder:

- ``<stem>.json``, small, says what the entry holds: the loader name, the source path, the split,
  ``image_size``, a fingerprint of the source files (count, total bytes, newest mtime and a
  SHA-256 over every file's path, size and mtime), N, the array shape, the class names, the
  skipped files, the names of the two array files and ``vqlab_cache_version``;
- ``<stem>.<token>.images.npy``, (N, H, W, C) uint8, opened with ``np.load(mmap_mode="r")``;
- ``<stem>.<token>.labels.npy``, (N,) int64, absent for unlabelled data.

``stem`` hashes (name, source, split, image_size), so one source and split has one entry;
``token`` comes from the source fingerprint, so a rebuilt entry never overwrites the arrays that
the previous JSON points to. Each file is written to a temporary name and moved into place with
``os.replace``, arrays first and the JSON last: a crash leaves either the old entry or the new
one, never a JSON that points to half-written arrays. A changed source (size or mtime of any
file) no longer matches the JSON's fingerprint, so it is decoded again.

The folder is ``cache_dir`` when given, else ``$VQLAB_CACHE``, else ``~/.cache/vqlab``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np

CACHE_VERSION = 1


class Cached(NamedTuple):
    """images: (N, H, W, C) uint8 (memory-mapped when read from disk); labels: (N,) int64 or None.

    meta: the entry's JSON (``classes`` and ``skipped`` among its keys).
    """

    images: np.ndarray
    labels: np.ndarray | None
    meta: dict[str, Any]


def default_cache_dir() -> Path:
    """``$VQLAB_CACHE`` if set, else ``~/.cache/vqlab``."""
    env = os.environ.get("VQLAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vqlab"


def fingerprint(files: Sequence[Path]) -> dict[str, Any]:
    """What identifies the source: every file's path, size and mtime, folded into a digest."""
    digest = hashlib.sha256()
    total, newest = 0, 0
    for f in files:
        st = f.stat()
        total += st.st_size
        newest = max(newest, st.st_mtime_ns)
        digest.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return {"count": len(files), "bytes": total, "mtime_ns": newest, "sha256": digest.hexdigest()}


def _stem(key: dict[str, Any]) -> str:
    blob = json.dumps(key, sort_keys=True).encode()
    return f"{key['name']}-{key['split']}-{hashlib.sha256(blob).hexdigest()[:16]}"


def load(cache_dir: Path, key: dict[str, Any], source: dict[str, Any]) -> Cached | None:
    """The entry for ``key`` if it exists and matches ``source`` (a :func:`fingerprint`), else None.

    Any unreadable or inconsistent entry counts as a miss; the caller rebuilds it.
    """
    try:
        meta = json.loads((cache_dir / f"{_stem(key)}.json").read_text())
        if (
            meta.get("vqlab_cache_version") != CACHE_VERSION
            or any(meta.get(k) != v for k, v in key.items())
            or meta.get("source_files") != source
        ):
            return None
        # Path(...).name: the JSON may only point at files inside the cache folder
        images = np.load(cache_dir / Path(meta["images_file"]).name, mmap_mode="r")
        labels = None
        if meta["labels_file"] is not None:
            labels = np.load(cache_dir / Path(meta["labels_file"]).name)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if images.dtype != np.uint8 or list(images.shape) != meta.get("shape"):
        return None
    if labels is not None and labels.shape != (images.shape[0],):
        return None
    return Cached(images, labels, meta)


def _write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write through a temporary file in the same folder, then rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(
    cache_dir: Path,
    key: dict[str, Any],
    source: dict[str, Any],
    images: np.ndarray,
    labels: np.ndarray | None,
    info: dict[str, Any],
) -> Cached:
    """Store a decoded dataset and return it memory-mapped from the cache.

    images: (N, H, W, C) uint8; labels: (N,) int64 or None; info: extra JSON fields
    (``classes``, ``skipped``). Raises OSError when the folder is not writable.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    stem = _stem(key)
    token = source["sha256"][:12]
    images_file = f"{stem}.{token}.images.npy"
    labels_file = None if labels is None else f"{stem}.{token}.labels.npy"
    _write_atomic(cache_dir / images_file, lambda f: np.save(f, images))
    if labels is not None:
        _write_atomic(cache_dir / labels_file, lambda f: np.save(f, labels))
    meta = {
        "vqlab_cache_version": CACHE_VERSION,
        **key,
        "source_files": source,
        "n": int(images.shape[0]),
        "shape": list(images.shape),
        "dtype": "uint8",
        "images_file": images_file,
        "labels_file": labels_file,
        **info,
    }
    text = json.dumps(meta, indent=1)
    _write_atomic(cache_dir / f"{stem}.json", lambda f: f.write(text.encode()))
    # the JSON now points at the new arrays; arrays of earlier sources are garbage
    for old in cache_dir.glob(f"{stem}.*.npy"):
        if old.name not in (images_file, labels_file):
            old.unlink(missing_ok=True)
    hit = load(cache_dir, key, source)
    if hit is None:  # pragma: no cover - only if another process changed the entry meanwhile
        return Cached(images, labels, meta)
    return hit
