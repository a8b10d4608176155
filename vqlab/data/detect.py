"""Which ``data.name`` a dataset path is, read from its layout alone (no decoding, no torch).

``vqlab featnet train`` takes its data kind from here where the path says it (issue 25: it
assumed CIFAR-10 and answered an IDX folder with "no CIFAR-10 data").
"""

from __future__ import annotations

from pathlib import Path

from vqlab.data import cifar, idx

NAMES = ("cifar10", "image_folder", "idx")


def detect_data_name(path: str | Path) -> str | None:
    """``cifar10``, ``idx`` or ``image_folder`` for the layouts that say so, else ``None``.

    - ``cifar10``: a ``cifar-10-batches-py`` folder (or the folder holding one), or a folder
      holding ``train.zip``/``test.zip`` (the layout the CIFAR-10 reader documents);
    - ``idx``: a folder holding ``train-images-idx3-ubyte[.gz]`` (or ``t10k``), or such a file;
    - ``image_folder``: any other folder, or a ``.zip``.

    A missing path, or a file of any other kind, is ``None``: the caller asks for the name.
    """
    p = Path(path)
    if p.is_file():
        norm = p.name.lower().replace(".", "-")
        if "-images-idx" in norm:
            return "idx"
        return "image_folder" if p.suffix.lower() == ".zip" else None
    if not p.is_dir():
        return None
    if cifar.is_batch_dir(p) or cifar.is_batch_dir(p / cifar.BATCH_DIR):
        return "cifar10"
    if (p / "train.zip").is_file() or (p / "test.zip").is_file():
        return "cifar10"
    if any(idx._find(p, split, "images") for split in ("train", "test")):
        return "idx"
    return "image_folder"
