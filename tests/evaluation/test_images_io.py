"""Image sets from .npz files, folders and zips, and their one-line errors."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.evaluation.conftest import bright_dark, write_folder
from vqlab.data.errors import DataError
from vqlab.evaluation import load_image_set


def test_npz_round_trip_and_grayscale(tmp_path: Path) -> None:
    images, _ = bright_dark(3)
    np.savez(tmp_path / "rgb.npz", images=images)
    assert np.array_equal(load_image_set(tmp_path / "rgb.npz"), images)
    np.savez(tmp_path / "gray.npz", images=images[..., 0])
    assert load_image_set(tmp_path / "gray.npz").shape == (6, 16, 16, 1)


def test_folder_with_class_folders_and_a_zip_with_one_split(tmp_path: Path, cache: Path) -> None:
    images, labels = bright_dark(3)
    folder = write_folder(tmp_path / "set", images, labels)
    got = load_image_set(folder)
    assert got.shape == images.shape and got.dtype == np.uint8
    assert np.array_equal(np.sort(got, axis=0), np.sort(images, axis=0))  # PNG is lossless
    zipped = tmp_path / "test.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        for p in sorted(folder.rglob("*.png")):
            zf.write(p, "test/" + p.relative_to(folder).as_posix())
    assert load_image_set(zipped).shape == images.shape


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.npz", "no such file or folder"),
        (lambda p: _npz(p, other=np.zeros(3)), "no 'images' array"),
        (lambda p: _npz(p, images=np.zeros((2, 8, 8, 3), np.float32)), "must be uint8"),
        (lambda p: _npz(p, images=np.zeros((2, 8, 8, 4), np.uint8)), r"\(N, H, W, C\)"),
        (lambda p: _write(p / "bad.npz", b"garbage"), "not a readable .npz"),
        (lambda p: _write(p / "notes.txt", b"hello"), "not a folder, a .zip"),
    ],
)
def test_bad_image_sets_raise_one_line(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(DataError, match=message) as err:
        load_image_set(make(tmp_path))
    assert "\n" not in str(err.value)


def test_several_split_folders_are_refused(tmp_path: Path, cache: Path) -> None:
    images, labels = bright_dark(2)
    write_folder(tmp_path / "ds" / "train", images, labels)
    write_folder(tmp_path / "ds" / "test", images, labels)
    with pytest.raises(DataError, match="several split folders"):
        load_image_set(tmp_path / "ds")


def _npz(folder: Path, **arrays: np.ndarray) -> Path:
    np.savez(folder / "set.npz", **arrays)
    return folder / "set.npz"


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
