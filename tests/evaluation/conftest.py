"""Fixtures of the evaluation tests: small image sets and a two-class image folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def shapes_images(n: int, side: int = 32, seed: int = 0) -> np.ndarray:
    """Real-ish (n, side, side, 3) uint8 images: a colour gradient with two random rectangles
    and a disc, so they have flat regions, edges and texture for blur and noise to act on."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] / (side - 1)
    out = np.empty((n, side, side, 3), np.float64)
    for k in range(n):
        c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        t = (xx if rng.random() < 0.5 else yy)[..., None]
        img = (1 - t) * c0 + t * c1
        for _ in range(2):
            y0, x0 = rng.integers(0, side - 4, 2)
            h, w = rng.integers(3, side // 2, 2)
            img[y0 : y0 + h, x0 : x0 + w] = rng.uniform(0, 255, 3)
        cy, cx, r = rng.uniform(4, side - 4), rng.uniform(4, side - 4), rng.uniform(2, side / 4)
        img[(yy * (side - 1) - cy) ** 2 + (xx * (side - 1) - cx) ** 2 < r * r] = rng.uniform(
            0, 255, 3
        )
        out[k] = img
    return out.round().astype(np.uint8)


def bright_dark(n_per_class: int, side: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two classes: dark (class 0, values 0-100) and bright (class 1, 155-255) noise images."""
    rng = np.random.default_rng(seed)
    dark = rng.integers(0, 101, (n_per_class, side, side, 3))
    bright = rng.integers(155, 256, (n_per_class, side, side, 3))
    images = np.concatenate([dark, bright]).astype(np.uint8)
    labels = np.repeat(np.arange(2), n_per_class)
    return images, labels


def write_folder(root: Path, images: np.ndarray, labels: np.ndarray | None) -> Path:
    """PNG files under ``root``: ``<class>/<i>.png`` with labels, else ``<i>.png``."""
    for i, img in enumerate(images):
        folder = root / (f"c{labels[i]}" if labels is not None else "")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{i:04d}.png")
    return root


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private data cache, so tests never read or write the user's."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("VQLAB_CACHE", str(folder))
    return folder


@pytest.fixture
def two_class_data(tmp_path: Path, cache: Path) -> Path:
    """An image folder ``train/`` + ``test/`` of 16x16 bright and dark images (2 classes)."""
    root = tmp_path / "twoclass"
    train, train_y = bright_dark(48, seed=0)
    test, test_y = bright_dark(16, seed=1)
    write_folder(root / "train", train, train_y)
    write_folder(root / "test", test, test_y)
    return root
