"""One in-memory dataset interface for the training loop, whatever the source.

``x`` tensors are float32 on the scale the model trains on (raw coordinates for the Gaussian
mixture; images in [-1, 1]); ``recon_mse`` is reported on that scale.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from vqlab.config import DataConfig
from vqlab.data.synthetic import gaussian_mixture

TEST_SUBSET_SEED = 1234


@dataclass(frozen=True)
class Dataset:
    """train_x: (N, ...) float32; train_labels: (N,) int64 or None; likewise test_*.

    means: (peaks, dim) true mode centres for synthetic data, else None.
    mode_radius: distance within which a reconstruction counts as landing on a mode, or None.
    """

    train_x: torch.Tensor
    train_labels: torch.Tensor | None
    test_x: torch.Tensor
    test_labels: torch.Tensor | None
    means: torch.Tensor | None = None
    mode_radius: float | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])


def load_dataset(cfg: DataConfig, seed: int) -> Dataset:
    """Build or load the dataset that ``data.*`` names.

    ``data.test_limit`` keeps a random subset of the test set, drawn with a fixed seed so every
    run (whatever its own seed) is scored on the same samples; test sets are often ordered by
    class, so the first N would be biased.
    """
    data = _load(cfg, seed)
    if cfg.test_limit and cfg.test_limit < data.test_x.shape[0]:
        gen = torch.Generator().manual_seed(TEST_SUBSET_SEED)
        keep = torch.randperm(data.test_x.shape[0], generator=gen)[: cfg.test_limit].sort().values
        labels = None if data.test_labels is None else data.test_labels[keep]
        data = dataclasses.replace(data, test_x=data.test_x[keep], test_labels=labels)
    return data


def _load(cfg: DataConfig, seed: int) -> Dataset:
    if cfg.name == "gaussian_mixture":
        train, test = gaussian_mixture(
            peaks=cfg.peaks,
            dim=cfg.dim,
            std=cfg.std,
            samples_per_peak=cfg.samples_per_peak,
            spread=cfg.spread,
            seed=seed,
            test_samples_per_peak=cfg.test_samples_per_peak,
        )
        # a point of N(mean, std^2 I) lies at about std*sqrt(dim) from its mean; twice that
        # counts a reconstruction as landing on the mode
        radius = 2.0 * cfg.std * cfg.dim**0.5
        return Dataset(train.x, train.labels, test.x, test.labels, train.means, radius)
    if cfg.name in ("cifar10", "image_folder", "idx"):
        return _load_images(cfg, seed)
    raise ValueError(f"data.name={cfg.name!r} is not available")


HELD_OUT_FRACTION = 0.1


def _load_images(cfg: DataConfig, seed: int) -> Dataset:
    """Train/test splits as the dataset defines them; an image folder without split folders
    gives a seeded 10% of its images as the test set (and trains on the other 90%)."""
    from vqlab.data.errors import NoSplitError
    from vqlab.data.images import load_images, to_tensor

    def split(name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        ds = load_images(cfg.name, cfg.path, split=name, image_size=cfg.image_size)
        labels = None if ds.labels is None else torch.as_tensor(ds.labels, dtype=torch.long)
        return to_tensor(ds.images), labels

    train_x, train_y = split("train")
    try:
        test_x, test_y = split("test")
    except NoSplitError:
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(train_x.shape[0], generator=gen)
        n_test = max(1, int(round(HELD_OUT_FRACTION * train_x.shape[0])))
        test_rows, train_rows = order[:n_test], order[n_test:]
        test_x, train_x = train_x[test_rows], train_x[train_rows]
        if train_y is not None:
            test_y, train_y = train_y[test_rows], train_y[train_rows]
        else:
            test_y = None
    return Dataset(train_x, train_y, test_x, test_y)
