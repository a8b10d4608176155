"""The decode-once cache: reuse, invalidation, atomic writes and its JSON description."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import vqlab.data.cache as cache_mod
import vqlab.data.images as images_mod
from vqlab.data.images import DataError, load_images

RED, BLUE = (255, 0, 0), (0, 0, 255)


def write_image(path: Path, color, size=(8, 8)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    write_image(root / "a" / "1.png", RED)
    write_image(root / "b" / "1.png", BLUE)
    return root


def forbid_decoding(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("decoded again although the cache is valid")

    monkeypatch.setattr(images_mod, "_decode_image", refuse)
    monkeypatch.setattr(images_mod, "_resize_array", refuse)


def count_decodes(monkeypatch) -> list[int]:
    calls = []
    original = images_mod._decode_image

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(images_mod, "_decode_image", counting)
    return calls


def test_second_call_reuses_the_memory_mapped_cache(folder, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = load_images("image_folder", folder, cache_dir=cache)
    forbid_decoding(monkeypatch)
    second = load_images("image_folder", folder, cache_dir=cache)
    assert isinstance(second.images, np.memmap) and not second.images.flags.writeable
    np.testing.assert_array_equal(second.images, first.images)
    np.testing.assert_array_equal(second.labels, first.labels)
    assert second.classes == first.classes == ["a", "b"]


def test_cache_json_describes_the_entry(folder, tmp_path):
    cache = tmp_path / "cache"
    load_images("image_folder", folder, image_size=4, cache_dir=cache)
    [meta_path] = cache.glob("*.json")
    meta = json.loads(meta_path.read_text())
    assert meta["vqlab_cache_version"] == cache_mod.CACHE_VERSION
    assert meta["source"] == str(folder.resolve()) and meta["split"] == "train"
    assert meta["image_size"] == 4 and meta["n"] == 2 and meta["shape"] == [2, 4, 4, 3]
    assert meta["classes"] == ["a", "b"] and meta["skipped"] == []
    assert meta["source_files"]["count"] == 2
    assert meta["source_files"]["bytes"] == sum(f.stat().st_size for f in folder.rglob("*.png"))
    assert (cache / meta["images_file"]).is_file() and (cache / meta["labels_file"]).is_file()


def test_changed_source_invalidates_and_replaces_the_entry(folder, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    load_images("image_folder", folder, cache_dir=cache)
    old_files = sorted(p.name for p in cache.glob("*.npy"))
    calls = count_decodes(monkeypatch)
    target = folder / "b" / "1.png"
    write_image(target, (0, 200, 0), size=(8, 8))
    os.utime(target, ns=(1_000_000_000, 1_000_000_000))  # a distinct mtime, whatever the clock
    ds = load_images("image_folder", folder, cache_dir=cache)
    assert len(calls) == 2
    assert (ds.images[ds.labels == 1] == (0, 200, 0)).all()
    new_files = sorted(p.name for p in cache.glob("*.npy"))
    assert len(new_files) == 2 and not set(new_files) & set(old_files)  # old arrays removed
    write_image(folder / "b" / "2.png", BLUE)  # an added file is a change too
    assert len(load_images("image_folder", folder, cache_dir=cache).images) == 3


def test_split_and_image_size_are_separate_entries(folder, tmp_path):
    cache = tmp_path / "cache"
    assert load_images("image_folder", folder, cache_dir=cache).images.shape[1] == 8
    assert load_images("image_folder", folder, image_size=4, cache_dir=cache).images.shape[1] == 4
    assert load_images("image_folder", folder, cache_dir=cache).images.shape[1] == 8
    assert len(list(cache.glob("*.json"))) == 2


def test_a_crash_while_writing_leaves_no_half_cache(folder, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    real_save = np.save

    def crash_midway(f, arr):
        f.write(b"\x93NUMPY half")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        load_images("image_folder", folder, cache_dir=cache)
    assert list(cache.iterdir()) == []  # the temporary file is gone, nothing was committed
    monkeypatch.setattr(np, "save", real_save)
    calls = count_decodes(monkeypatch)
    assert len(load_images("image_folder", folder, cache_dir=cache).images) == 2
    assert len(calls) == 2


def test_unreadable_entry_is_rebuilt(folder, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    load_images("image_folder", folder, cache_dir=cache)
    [meta_path] = cache.glob("*.json")
    meta_path.write_text("{ not json")
    calls = count_decodes(monkeypatch)
    assert len(load_images("image_folder", folder, cache_dir=cache).images) == 2
    assert len(calls) == 2
    for npy in cache.glob("*.images.npy"):
        npy.write_bytes(b"garbage")
    assert len(load_images("image_folder", folder, cache_dir=cache).images) == 2
    assert len(calls) == 4


def pickle_batch(rows: np.ndarray) -> bytes:
    """A batch as Python 3 writes it: (N, 3072) uint8 rows and one label per row."""
    return pickle.dumps({b"data": rows, b"labels": [1] * len(rows)}, protocol=4)


def test_cifar_batches_are_cached_too(tmp_path, monkeypatch):
    import vqlab.data.cifar as cifar_mod

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rows = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    for name in ["test_batch"] + [f"data_batch_{i}" for i in range(1, 6)]:
        (folder / name).write_bytes(pickle_batch(rows))
    first = load_images("cifar10", folder, split="test", cache_dir=tmp_path / "c")

    def refuse(*args):
        raise AssertionError("read the batches again")

    monkeypatch.setattr(cifar_mod, "read_batches", refuse)
    second = load_images("cifar10", folder, split="test", cache_dir=tmp_path / "c")
    np.testing.assert_array_equal(first.images, second.images)


def test_skipped_files_are_remembered_and_strict_still_refuses(folder, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    (folder / "a" / "bad.png").write_bytes(b"broken")
    with pytest.warns(UserWarning, match="skipped 1"):
        load_images("image_folder", folder, cache_dir=cache)
    forbid_decoding(monkeypatch)
    with pytest.warns(UserWarning, match=r"skipped 1 .*bad\.png"):
        ds = load_images("image_folder", folder, cache_dir=cache)
    assert [Path(s).name for s in ds.skipped] == ["bad.png"]
    with pytest.raises(DataError, match=r"bad\.png: cannot decode image"):
        load_images("image_folder", folder, cache_dir=cache, strict=True)


def test_default_cache_dir_comes_from_the_environment(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("VQLAB_CACHE", str(tmp_path / "env-cache"))
    assert cache_mod.default_cache_dir() == tmp_path / "env-cache"
    load_images("image_folder", folder)
    assert len(list((tmp_path / "env-cache").glob("*.json"))) == 1
    monkeypatch.delenv("VQLAB_CACHE")
    assert cache_mod.default_cache_dir() == Path.home() / ".cache" / "vqlab"


def test_unwritable_cache_warns_and_returns_the_data(folder, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("the cache folder cannot be created under a file")
    with pytest.warns(UserWarning, match="cannot write the data cache"):
        ds = load_images("image_folder", folder, cache_dir=blocker / "cache")
    assert ds.images.shape == (2, 8, 8, 3) and ds.classes == ["a", "b"]
