"""The token file: what ``vqlab tokenize`` writes and a prior trains on (DESIGN.md contract).

An ``.npz`` with
- ``train_ids``, ``test_ids``: (N, L) int32, each row the row-major token grids, coarse scale
  first, ids in [0, codebook_size);
- ``train_labels``, ``test_labels``: (N,) int64, -1 everywhere when there are no labels;
- ``codebook_size``: int scalar K;
- ``scales``: int array of grid side lengths (``[h]`` for one grid), L = sum(s * s);
- ``tokenizer``: str path of the tokenizer that made the ids (may be empty).

Every check fails with a one-line ``TokenFileError`` that names the file and the key.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vqlab.errors import UserError

KEYS = (
    "train_ids",
    "test_ids",
    "train_labels",
    "test_labels",
    "codebook_size",
    "scales",
    "tokenizer",
)


class TokenFileError(UserError, ValueError):
    """A token file that is missing, unreadable or breaks the contract (one-line message)."""


@dataclass(frozen=True)
class TokenData:
    """A validated token file. ``num_classes`` is 0 when the file has no labels."""

    train_ids: np.ndarray  # (N_train, L) int32
    test_ids: np.ndarray  # (N_test, L) int32
    train_labels: np.ndarray  # (N_train,) int64, -1 when unlabelled
    test_labels: np.ndarray  # (N_test,) int64
    codebook_size: int
    scales: tuple[int, ...]
    tokenizer: str
    num_classes: int

    @property
    def seq_len(self) -> int:
        """L = sum of s*s over the scales."""
        return self.train_ids.shape[1]


def _check_ids(name: str, ids: np.ndarray, seq_len: int, k: int, where: str) -> None:
    if ids.dtype != np.int32:
        raise TokenFileError(f"{where}: {name} must be int32, got {ids.dtype}")
    if ids.ndim != 2 or ids.shape[1] != seq_len:
        raise TokenFileError(
            f"{where}: {name} must have shape (N, {seq_len}) (L = sum of scale**2), got {ids.shape}"
        )
    if ids.size and (ids.min() < 0 or ids.max() >= k):
        raise TokenFileError(
            f"{where}: {name} has ids in [{ids.min()}, {ids.max()}], outside [0, {k})"
        )


def _check_labels(name: str, labels: np.ndarray, n: int, where: str) -> bool:
    """Validate one label array; returns whether it carries labels (all >= 0)."""
    if labels.dtype != np.int64:
        raise TokenFileError(f"{where}: {name} must be int64, got {labels.dtype}")
    if labels.shape != (n,):
        raise TokenFileError(f"{where}: {name} must have shape ({n},), got {labels.shape}")
    if n == 0:
        return False
    if (labels == -1).all():
        return False
    if (labels < 0).any():
        raise TokenFileError(f"{where}: {name} must be all -1 (no labels) or all >= 0")
    return True


def validate_tokens(raw: dict[str, np.ndarray], where: str = "token file") -> TokenData:
    """Check a dict of arrays against the contract and return the ``TokenData``."""
    missing = [k for k in KEYS if k not in raw]
    if missing:
        raise TokenFileError(f"{where}: missing keys {missing} (a token file has {list(KEYS)})")
    k_arr, s_arr = np.asarray(raw["codebook_size"]), np.asarray(raw["scales"])
    if k_arr.ndim != 0 or not np.issubdtype(k_arr.dtype, np.integer) or int(k_arr) < 1:
        raise TokenFileError(f"{where}: codebook_size must be a positive int, got {k_arr!r}")
    if s_arr.ndim != 1 or s_arr.size == 0 or not np.issubdtype(s_arr.dtype, np.integer):
        raise TokenFileError(f"{where}: scales must be a 1-D int array, got {s_arr!r}")
    if (s_arr < 1).any():
        raise TokenFileError(f"{where}: scales must be positive, got {s_arr.tolist()}")
    tok = np.asarray(raw["tokenizer"])
    if tok.ndim != 0 or tok.dtype.kind not in "US":
        raise TokenFileError(f"{where}: tokenizer must be a str, got {tok!r}")
    k, scales = int(k_arr), tuple(int(s) for s in s_arr)
    seq_len = sum(s * s for s in scales)
    has = {}
    for split in ("train", "test"):
        ids, labels = raw[f"{split}_ids"], raw[f"{split}_labels"]
        _check_ids(f"{split}_ids", ids, seq_len, k, where)
        has[split] = _check_labels(f"{split}_labels", labels, ids.shape[0], where)
    if raw["train_ids"].shape[0] == 0:
        raise TokenFileError(f"{where}: train_ids is empty")
    has_train, has_test = has["train"], has["test"]
    if len(raw["test_ids"]) and has_train != has_test:
        raise TokenFileError(f"{where}: train_labels and test_labels must both be -1 or both set")
    num_classes = int(raw["train_labels"].max()) + 1 if has_train else 0
    if has_test and int(raw["test_labels"].max()) >= num_classes:
        raise TokenFileError(
            f"{where}: test_labels has class {int(raw['test_labels'].max())}, "
            f"but train_labels only has {num_classes} classes"
        )
    return TokenData(
        train_ids=raw["train_ids"],
        test_ids=raw["test_ids"],
        train_labels=raw["train_labels"],
        test_labels=raw["test_labels"],
        codebook_size=k,
        scales=scales,
        tokenizer=str(tok),
        num_classes=num_classes,
    )


def load_tokens(path: str | Path) -> TokenData:
    """Read and validate a token file; raises ``TokenFileError`` in one line on any breach."""
    path = Path(path)
    if not path.is_file():
        raise TokenFileError(f"{path}: no such token file")
    try:
        # allow_pickle=False: a token file is plain arrays; a pickled object is not one
        with np.load(path, allow_pickle=False) as z:
            raw = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise TokenFileError(f"{path}: not a readable .npz ({type(e).__name__}: {e})") from None
    return validate_tokens(raw, where=str(path))


def save_tokens(
    path: str | Path,
    *,
    train_ids: np.ndarray,
    test_ids: np.ndarray,
    codebook_size: int,
    scales: list[int] | tuple[int, ...] | np.ndarray,
    train_labels: np.ndarray | None = None,
    test_labels: np.ndarray | None = None,
    tokenizer: str | Path = "",
) -> TokenData:
    """Validate and write a token file; ids of any int dtype are stored as int32, labels as
    int64 (None -> all -1). Returns what ``load_tokens`` would read back."""
    train_ids, test_ids = np.asarray(train_ids), np.asarray(test_ids)
    for name, a in (("train_ids", train_ids), ("test_ids", test_ids)):
        if not np.issubdtype(a.dtype, np.integer):
            raise TokenFileError(f"{path}: {name} must be integer, got {a.dtype}")

    def labels_of(lab: np.ndarray | None, n: int) -> np.ndarray:
        if lab is None:
            return np.full(n, -1, dtype=np.int64)
        lab = np.asarray(lab)
        if not np.issubdtype(lab.dtype, np.integer):
            raise TokenFileError(f"{path}: labels must be integer, got {lab.dtype}")
        return lab.astype(np.int64)

    raw = {
        # the range check happens on the original dtype so int64 ids >= 2**31 are not wrapped
        "train_ids": train_ids,
        "test_ids": test_ids,
        "train_labels": labels_of(train_labels, len(train_ids)),
        "test_labels": labels_of(test_labels, len(test_ids)),
        "codebook_size": np.asarray(int(codebook_size), dtype=np.int64),
        "scales": np.asarray(scales, dtype=np.int64),
        "tokenizer": np.asarray(str(tokenizer)),
    }
    for name in ("train_ids", "test_ids"):
        a = raw[name]
        if a.size and (a.min() < 0 or a.max() >= int(codebook_size)):
            raise TokenFileError(
                f"{path}: {name} has ids in [{a.min()}, {a.max()}], outside [0, {codebook_size})"
            )
        raw[name] = a.astype(np.int32)
    data = validate_tokens(raw, where=str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # through a handle: np.savez given a name would append ".npz" to one that lacks it
    with path.open("wb") as f:
        np.savez(f, **raw)
    return data
