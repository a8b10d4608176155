"""Image folders and zips: labels, sizes, corrupt files, bad input, and ``to_tensor``."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vqlab.data.images import DataError, ImageDataset, load_images, to_tensor

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def write_image(path: Path, color, size=(8, 8), mode: str = "RGB") -> None:
    """A solid image of ``color``; ``size`` is (W, H) as PIL counts it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def zip_folder(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(folder.rglob("*")):
            zf.write(f, f.relative_to(folder).as_posix())
    return archive


def load(path, tmp_path: Path, **kw) -> ImageDataset:
    return load_images("image_folder", path, cache_dir=tmp_path / "cache", **kw)


@pytest.fixture
def classed(tmp_path: Path) -> Path:
    """Two classes, written out of order: a/ holds 2 red images, b/ one blue image."""
    root = tmp_path / "imgs"
    write_image(root / "b" / "x.png", BLUE)
    write_image(root / "a" / "1.png", RED)
    write_image(root / "a" / "2.png", RED)
    return root


def test_class_folders_give_sorted_labels_and_exact_pixels(classed, tmp_path):
    ds = load(classed, tmp_path)
    assert ds.images.shape == (3, 8, 8, 3) and ds.images.dtype == np.uint8
    assert ds.classes == ["a", "b"]
    assert ds.labels.dtype == np.int64
    for img, label in zip(ds.images, ds.labels, strict=True):
        want = RED if ds.classes[label] == "a" else BLUE
        assert (img == np.array(want, np.uint8)).all()
    assert sorted(ds.labels.tolist()) == [0, 0, 1]
    assert ds.skipped == []


def test_zip_reads_the_same_as_the_folder(classed, tmp_path):
    from_dir = load(classed, tmp_path)
    from_zip = load(zip_folder(classed, tmp_path / "imgs.zip"), tmp_path)
    np.testing.assert_array_equal(from_zip.images, from_dir.images)
    np.testing.assert_array_equal(from_zip.labels, from_dir.labels)
    assert from_zip.classes == from_dir.classes


def test_flat_folder_is_unlabelled_and_every_format_becomes_rgb(tmp_path):
    root = tmp_path / "flat"
    write_image(root / "gray.png", 200, mode="L")
    write_image(root / "alpha.png", (10, 20, 30, 40), mode="RGBA")
    write_image(root / "pic.bmp", GREEN)
    write_image(root / "pic.webp", BLUE)
    write_image(root / "pic.jpg", RED)
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(b"ignored because hidden")
    ds = load(root, tmp_path)
    assert ds.labels is None and ds.classes == []
    assert ds.images.shape == (5, 8, 8, 3)
    by_name = dict(zip(["alpha", "gray", "bmp", "jpg", "webp"], ds.images, strict=True))
    assert (by_name["gray"] == 200).all()
    assert (by_name["alpha"] == [10, 20, 30]).all()
    assert (by_name["bmp"] == GREEN).all()
    # lossy formats: close to the colour, not equal
    assert np.abs(by_name["jpg"].astype(int) - RED).max() < 8
    assert np.abs(by_name["webp"].astype(int) - BLUE).max() < 8


def test_image_size_scales_the_shorter_side_then_center_crops(tmp_path):
    # 60 x 20 (W x H): red | green | blue bands of 20 columns; at image_size=10 the image is
    # scaled to 30 x 10 and the center crop keeps exactly the green band
    band = np.zeros((20, 60, 3), np.uint8)
    band[:, :20], band[:, 20:40], band[:, 40:] = RED, GREEN, BLUE
    root = tmp_path / "wide"
    root.mkdir()
    Image.fromarray(band).save(root / "w.png")
    write_image(root / "small.png", RED, size=(4, 6))  # upscaled: 4 x 6 -> 10 x 15 -> 10 x 10
    ds = load(root, tmp_path, image_size=10)
    assert ds.images.shape == (2, 10, 10, 3)
    wide = ds.images[1]
    assert np.abs(wide[:, 3:7].astype(int) - GREEN).max() <= 2
    assert (ds.images[0] == RED).all()


def test_mixed_sizes_need_image_size(tmp_path):
    root = tmp_path / "mixed"
    write_image(root / "a.png", RED, size=(8, 8))
    write_image(root / "b.png", RED, size=(9, 8))
    with pytest.raises(DataError, match="data.image_size"):
        load(root, tmp_path)
    assert load(root, tmp_path, image_size=4).images.shape == (2, 4, 4, 3)


def _with_corrupt(tmp_path: Path) -> Path:
    root = tmp_path / "bad"
    write_image(root / "a" / "ok.png", RED)
    write_image(root / "b" / "ok.png", BLUE)
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n definitely not a png")
    good = root / "b" / "truncated.jpg"
    write_image(good, GREEN, size=(64, 64))
    good.write_bytes(good.read_bytes()[:200])
    return root


def test_corrupt_files_are_skipped_and_counted(tmp_path):
    root = _with_corrupt(tmp_path)
    with pytest.warns(UserWarning, match=r"skipped 2 image file\(s\).*broken\.png"):
        ds = load(root, tmp_path)
    assert sorted(Path(s).name for s in ds.skipped) == ["broken.png", "truncated.jpg"]
    # labels stay aligned with the images that were kept
    assert ds.images.shape[0] == 2
    for img, label in zip(ds.images, ds.labels, strict=True):
        assert (img == (RED if ds.classes[label] == "a" else BLUE)).all()


def test_strict_fails_on_the_first_corrupt_file(tmp_path):
    with pytest.raises(DataError, match=r"broken\.png: cannot decode image"):
        load(_with_corrupt(tmp_path), tmp_path, strict=True)


def test_all_files_corrupt_is_an_error(tmp_path):
    root = tmp_path / "allbad"
    root.mkdir()
    for i in range(3):
        (root / f"{i}.jpg").write_bytes(b"garbage")
    with pytest.raises(DataError, match="none of the 3 image files could be decoded"):
        load(root, tmp_path)


def test_empty_folder_and_missing_path_are_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("x")
    for folder in ("empty", "texts"):
        with pytest.raises(DataError, match="no image files"):
            load(tmp_path / folder, tmp_path)
    with pytest.raises(DataError, match="no such file or folder"):
        load(tmp_path / "nowhere", tmp_path)
    (tmp_path / "plain.txt").write_text("x")
    with pytest.raises(DataError, match="not a folder or a .zip"):
        load(tmp_path / "plain.txt", tmp_path)


@pytest.mark.parametrize("member", ["../evil.png", "a/../../evil.png", "/abs/evil.png"])
def test_zip_with_unsafe_member_names_is_refused(tmp_path, member):
    img = tmp_path / "x.png"
    write_image(img, RED)
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(img, "ok/x.png")
        zf.writestr(zipfile.ZipInfo(member), img.read_bytes())
    with pytest.raises(DataError, match="unsafe member name"):
        load(archive, tmp_path)


def test_split_folders(tmp_path):
    root = tmp_path / "split"
    write_image(root / "train" / "cat" / "1.png", RED)
    write_image(root / "train" / "dog" / "1.png", BLUE)
    write_image(root / "test" / "dog" / "1.png", GREEN)
    train = load(root, tmp_path)
    test = load(root, tmp_path, split="test")
    assert train.classes == ["cat", "dog"] and len(train.images) == 2
    assert test.classes == ["dog"] and (test.images[0] == GREEN).all()
    with pytest.raises(DataError, match=r"split folders \['test', 'train'\] but none named 'val'"):
        load(root, tmp_path, split="val")
    with pytest.raises(DataError, match="all split 'train'"):
        load(root / "train", tmp_path, split="test")


def test_loose_images_beside_class_folders_are_an_error(tmp_path):
    root = tmp_path / "loose"
    write_image(root / "cat" / "1.png", RED)
    write_image(root / "stray.png", RED)
    with pytest.raises(DataError, match="stray.png"):
        load(root, tmp_path)


def test_bad_name_and_image_size(tmp_path, classed):
    with pytest.raises(DataError, match="valid names: cifar10, image_folder, idx"):
        load_images("imagenet", classed, cache_dir=tmp_path)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(DataError, match="image_size"):
            load(classed, tmp_path, image_size=bad)


def test_to_tensor_maps_0_255_to_minus_one_one():
    images = np.zeros((2, 3, 4, 3), np.uint8)  # (N, H, W, C)
    images[0, :, :, 0] = 255
    images[1, 1, 2] = (0, 128, 255)
    x = to_tensor(images)
    assert x.shape == (2, 3, 3, 4) and x.dtype == torch.float32 and x.is_contiguous()
    assert x.min() == -1.0 and x.max() == 1.0
    assert (x[0, 0] == 1.0).all() and (x[0, 1:] == -1.0).all()
    torch.testing.assert_close(x[1, :, 1, 2], torch.tensor([-1.0, 128 / 127.5 - 1, 1.0]))
    read_only = images.copy()
    read_only.setflags(write=False)
    torch.testing.assert_close(to_tensor(read_only), x)
    with pytest.raises(ValueError, match="uint8"):
        to_tensor(images.astype(np.float32))
