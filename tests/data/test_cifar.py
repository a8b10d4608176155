"""CIFAR-10 in both layouts: pickled batches (read by a restricted unpickler) and image folders."""

from __future__ import annotations

import builtins
import os
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vqlab.data.cifar import CLASSES
from vqlab.data.images import DataError, ImageDataset, load_images


class Py2Pickler(pickle._Pickler):
    """Protocol 2 with ``bytes`` written as Python 2 ``str`` opcodes, like the real batch files.

    Python 3 would write bytes at protocol 2 through ``_codecs.encode``; the files from the
    dataset's site were pickled by Python 2, whose str is raw bytes.
    """

    def save_bytes(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[bytes] = save_bytes


def py2_pickle(obj: object) -> bytes:
    import io

    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    # numpy 1.x, which wrote the real files, named its array helper's module numpy.core
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def fake_rows(n: int, seed: int) -> np.ndarray:
    """(n, 3072) uint8 rows as CIFAR lays them out: 1024 R, 1024 G, 1024 B, each row-major."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3072), dtype=np.uint8)


def make_batches(root: Path, n: int = 4, py2: bool = True) -> dict[str, tuple]:
    """A fake ``cifar-10-batches-py`` with ``n`` rows per batch; returns {file: (rows, labels)}."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    dump = py2_pickle if py2 else (lambda o: pickle.dumps(o, protocol=4))
    written = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for seed, name in enumerate(names):
        rows, labels = fake_rows(n, seed), [(seed + i) % 10 for i in range(n)]
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": rows,
            b"filenames": [f"{name}_{i}.png".encode() for i in range(n)],
        }
        (folder / name).write_bytes(dump(batch))
        written[name] = (rows, labels)
    meta = {b"label_names": [c.encode() for c in CLASSES], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(dump(meta))
    return written


def load(path, tmp_path: Path, **kw) -> ImageDataset:
    return load_images("cifar10", path, cache_dir=tmp_path / "cache", **kw)


@pytest.mark.parametrize("py2", [True, False], ids=["python2-file", "repickled-protocol-4"])
def test_batches_decode_rgb_planes_and_labels(tmp_path, py2):
    written = make_batches(tmp_path, py2=py2)
    train = load(tmp_path / "cifar-10-batches-py", tmp_path)
    assert train.images.shape == (20, 32, 32, 3) and train.images.dtype == np.uint8
    assert train.classes == list(CLASSES)
    rows = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    labels = sum((written[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert train.labels.tolist() == labels
    # pixel (y, x) of row i is (R, G, B) = (rows[i, p], rows[i, 1024 + p], rows[i, 2048 + p])
    for i, y, x in [(0, 0, 0), (7, 3, 31), (19, 31, 5)]:
        p = 32 * y + x
        assert train.images[i, y, x].tolist() == rows[i, [p, 1024 + p, 2048 + p]].tolist()
    test = load(tmp_path / "cifar-10-batches-py", tmp_path, split="test")
    np.testing.assert_array_equal(
        test.images[2, :, :, 1].ravel(), written["test_batch"][0][2, 1024:2048]
    )


def test_parent_folder_of_the_batches_works(tmp_path):
    # torchvision's download root holds cifar-10-batches-py/
    make_batches(tmp_path)
    assert load(tmp_path, tmp_path, split="test").images.shape == (4, 32, 32, 3)


def test_batches_resize_with_image_size(tmp_path):
    make_batches(tmp_path)
    assert load(tmp_path, tmp_path, image_size=16).images.shape == (20, 16, 16, 3)


def test_missing_batch_file_and_bad_split(tmp_path):
    make_batches(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3"):
        load(tmp_path, tmp_path)
    with pytest.raises(DataError, match="valid splits: train, test"):
        load(tmp_path, tmp_path, split="val")


class Planted:
    """Unpickling this calls ``func(arg)``, which would create the marker file."""

    def __init__(self, func, arg: str) -> None:
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


@pytest.mark.parametrize("how", ["os.system", "builtins.exec"])
@pytest.mark.parametrize("where", ["top", "inside-dict"])
def test_planted_pickle_is_refused_and_never_runs(tmp_path, how, where):
    make_batches(tmp_path)
    marker = tmp_path / "pwned"
    if how == "os.system":
        planted = Planted(os.system, f"touch '{marker}'")
    else:
        planted = Planted(builtins.exec, f"open({str(marker)!r}, 'w').close()")
    obj = planted if where == "top" else {b"data": planted, b"labels": [0]}
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(pickle.dumps(obj, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_1: not a safe CIFAR-10 pickle \(refused"):
        load(tmp_path, tmp_path)
    assert not marker.exists()


def test_garbage_batch_is_a_data_error(tmp_path):
    make_batches(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"\x80\x02not a pickle")
    with pytest.raises(DataError, match="test_batch"):
        load(tmp_path, tmp_path, split="test")


def make_image_folders(root: Path, classes=CLASSES) -> dict[str, Path]:
    """train/<class>/ and test/<class>/ PNGs whose red channel is the class id x 20."""
    for split, per_class in (("train", 2), ("test", 1)):
        for c, name in enumerate(classes):
            for j in range(per_class):
                path = root / "extracted" / split / name / f"{j:04d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (32, 32), (20 * c, 7, 9)).save(path)
    zips = {}
    for split in ("train", "test"):
        zips[split] = root / "zips" / f"{split}.zip"
        zips[split].parent.mkdir(exist_ok=True)
        with zipfile.ZipFile(zips[split], "w") as zf:
            for f in sorted((root / "extracted" / split).rglob("*")):
                zf.write(f, f.relative_to(root / "extracted").as_posix())
    return zips


@pytest.mark.parametrize("layout", ["folder-of-zips", "one-zip", "extracted"])
def test_image_folder_layouts_use_canonical_class_ids(tmp_path, layout):
    zips = make_image_folders(tmp_path)
    path = {
        "folder-of-zips": tmp_path / "zips",
        "one-zip": zips["train"],
        "extracted": tmp_path / "extracted",
    }[layout]
    ds = load(path, tmp_path)
    assert ds.classes == list(CLASSES)
    assert ds.images.shape == (20, 32, 32, 3)
    # the red channel encodes the folder's canonical id: airplane 0, ..., truck 9
    np.testing.assert_array_equal(ds.images[:, 0, 0, 0], 20 * ds.labels)
    assert ds.labels[ds.images[:, 0, 0, 0] == 180].tolist() == [9, 9]  # truck
    if layout != "one-zip":
        assert len(load(path, tmp_path, split="test").images) == 10


def test_zip_of_the_other_split_is_refused(tmp_path):
    zips = make_image_folders(tmp_path)
    with pytest.raises(DataError, match="none named 'train'"):
        load(zips["test"], tmp_path)


def test_other_class_names_are_sorted(tmp_path):
    make_image_folders(tmp_path, classes=("zebra", "ant"))
    ds = load(tmp_path / "extracted", tmp_path)
    assert ds.classes == ["ant", "zebra"]
    np.testing.assert_array_equal(ds.images[:, 0, 0, 0], np.where(ds.labels == 0, 20, 0))


def test_folder_without_cifar_data_is_an_error(tmp_path):
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataError, match="no CIFAR-10 data for split 'train'"):
        load(tmp_path / "nothing", tmp_path)
