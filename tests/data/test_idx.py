"""MNIST-style IDX files: header parsing, raw and gzip, validation."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from vqlab.data.idx import read_idx
from vqlab.data.images import DataError, ImageDataset, load_images


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    """Magic 00 00 <code> <ndim>, big-endian uint32 dims, then the big-endian values."""
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def make_mnist(folder: Path, gz: bool, n: int = 5, prefix: str = "train") -> tuple:
    """images (n, 4, 3) and labels (n,) written as ``<prefix>-images-idx3-ubyte[.gz]`` etc."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    images = rng.integers(0, 256, size=(n, 4, 3), dtype=np.uint8)
    labels = (np.arange(n) * 3 % 10).astype(np.uint8)
    ext = ".gz" if gz else ""
    write(folder / f"{prefix}-images-idx3-ubyte{ext}", idx_bytes(images))
    write(folder / f"{prefix}-labels-idx1-ubyte{ext}", idx_bytes(labels))
    return images, labels


def load(path, tmp_path: Path, **kw) -> ImageDataset:
    return load_images("idx", path, cache_dir=tmp_path / "cache", **kw)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_idx_images_and_labels(tmp_path, gz):
    images, labels = make_mnist(tmp_path / "mnist", gz)
    test_images, _ = make_mnist(tmp_path / "mnist", gz, n=3, prefix="t10k")
    ds = load(tmp_path / "mnist", tmp_path)
    assert ds.images.shape == (5, 4, 3, 1) and ds.images.dtype == np.uint8  # grayscale: C = 1
    np.testing.assert_array_equal(ds.images[..., 0], images)
    assert ds.labels.dtype == np.int64 and ds.labels.tolist() == labels.tolist()
    assert ds.classes == [str(i) for i in range(int(labels.max()) + 1)]
    test = load(tmp_path / "mnist", tmp_path, split="test")
    np.testing.assert_array_equal(test.images[..., 0], test_images)


def test_dotted_names_missing_labels_and_a_file_path(tmp_path):
    images = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    path = write(tmp_path / "train-images.idx3-ubyte", idx_bytes(images))
    ds = load(tmp_path, tmp_path)
    assert ds.labels is None and ds.classes == []
    assert load(path, tmp_path, image_size=2).images.shape == (2, 2, 2, 1)
    with pytest.raises(DataError, match="not a 'test' images file"):
        load(path, tmp_path, split="test")
    with pytest.raises(DataError, match="no IDX images file for split 'test'"):
        load(tmp_path, tmp_path, split="test")


def test_read_idx_other_dtypes_are_big_endian(tmp_path):
    arr = np.array([[1, -2, 300], [70000, 5, -6]], dtype=np.int32)
    path = write(tmp_path / "x.idx", idx_bytes(arr, code=0x0C))
    np.testing.assert_array_equal(read_idx(path), arr)


@pytest.mark.parametrize(
    "data, problem",
    [
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "not an IDX file"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "unknown IDX dtype code 0x07"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated IDX header"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x04\x05", r"9 bytes but the IDX header \[4\] implies 12"),
    ],
)
def test_bad_idx_files(tmp_path, data, problem):
    with pytest.raises(DataError, match=problem):
        read_idx(write(tmp_path / "bad-idx", data))


def test_label_count_must_match(tmp_path):
    make_mnist(tmp_path, gz=True)
    write(tmp_path / "train-labels-idx1-ubyte", idx_bytes(np.zeros(4, np.uint8)))  # raw wins
    with pytest.raises(DataError, match="4 labels for 5 images"):
        load(tmp_path, tmp_path)


def test_corrupt_gzip_is_a_data_error(tmp_path):
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataError, match="cannot read IDX file"):
        load(tmp_path, tmp_path)
