"""Fréchet distance (FD) and kernel distance (KD) between two image sets in a feature space.

The maths is torchmetrics': FD goes through ``FrechetInceptionDistance`` fed with features we
extract ourselves (a pass-through module stands in for its network), KD through
``torchmetrics.image.kid.poly_mmd`` on subsets we draw with a seeded generator. Features are
extracted once per set, because FD, KD and the real-against-real floor all reuse them, and
torchmetrics' own ``KernelInceptionDistance`` draws its subsets from the global RNG.

FD in a vqlab feature net is not FID: report it as "FD (featnet <sha>)" and compare only at equal
N, with the same net and reference split (GENERATION.md, Metrics).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from vqlab.data.errors import DataError
from vqlab.evaluation.errors import FeatNetError
from vqlab.evaluation.images_io import check_same_shape, load_image_set


class _GivenFeatures(nn.Module):
    """The identity, with the ``num_features`` torchmetrics' FID reads to size its state."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return feats


def _as_features(feats: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    f = torch.as_tensor(np.asarray(feats) if not torch.is_tensor(feats) else feats)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"{name} features must be (N, F) with N >= 2, got {tuple(f.shape)}")
    return f.detach().to("cpu", torch.float64)


def frechet_distance(
    real_feats: torch.Tensor | np.ndarray, fake_feats: torch.Tensor | np.ndarray
) -> float:
    """FD = |mu_r - mu_f|^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2)) of Gaussian fits.

    real_feats: (N_r, F); fake_feats: (N_f, F); float64 throughout. Covariances are unbiased
    (divided by N - 1), as in torchmetrics and pytorch-fid.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    real, fake = _as_features(real_feats, "real"), _as_features(fake_feats, "fake")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature widths differ: {real.shape[1]} and {fake.shape[1]}")
    metric = FrechetInceptionDistance(feature=_GivenFeatures(real.shape[1]))
    metric.update(real, real=True)
    metric.update(fake, real=False)
    return float(metric.compute())


def kernel_distance(
    real_feats: torch.Tensor | np.ndarray,
    fake_feats: torch.Tensor | np.ndarray,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KD: unbiased MMD^2 with the kernel k(x, y) = (x.y / F + 1)^3; (mean, std) over subsets.

    real_feats: (N_r, F); fake_feats: (N_f, F). Each subset draws ``subset_size`` rows of each
    set without replacement (clamped to the smaller N); std is over the subsets (population
    std, as torchmetrics). Unbiased, so it can be negative near 0.
    """
    from torchmetrics.image.kid import poly_mmd

    real, fake = _as_features(real_feats, "real"), _as_features(fake_feats, "fake")
    if subsets < 1 or subset_size < 2:
        raise ValueError(f"need subsets >= 1 and subset_size >= 2, got {subsets}, {subset_size}")
    m = min(subset_size, real.shape[0], fake.shape[0])
    gen = torch.Generator().manual_seed(seed)
    scores = []
    for _ in range(subsets):
        r = real[torch.randperm(real.shape[0], generator=gen)[:m]]
        f = fake[torch.randperm(fake.shape[0], generator=gen)[:m]]
        scores.append(poly_mmd(r, f, degree=3, coef=1.0))
    t = torch.stack(scores)
    return float(t.mean()), float(t.std(unbiased=False))


@torch.no_grad()
def extract_features(
    net: nn.Module,
    images: np.ndarray,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """(N, H, W, C) uint8 images -> (N, F) float64 features ``net.features`` gives (on CPU).

    ``net`` is a :class:`~vqlab.evaluation.featnet.FeatNet` or anything with ``features(x)``
    reading (B, C, H, W) floats in [-1, 1] and an ``in_channels`` attribute. It runs in eval
    mode on ``device`` (default: where its parameters are).
    """
    from vqlab.data.images import to_tensor

    if images.ndim != 4 or images.dtype != np.uint8:
        raise DataError(f"images must be (N, H, W, C) uint8, got {images.shape} {images.dtype}")
    channels = getattr(net, "in_channels", images.shape[3])
    if images.shape[3] != channels:
        raise FeatNetError(
            f"the feature net reads {channels}-channel images, these have {images.shape[3]}"
        )
    if device is None:
        device = next(iter(net.parameters()), torch.empty(0)).device
    was_training = net.training
    net.eval()
    out = []
    starts = range(0, images.shape[0], batch_size)
    for i in tqdm(starts, desc="features", unit="batch", disable=not progress, leave=False):
        x = to_tensor(images[i : i + batch_size]).to(device)
        out.append(net.features(x).double().cpu())
    net.train(was_training)
    return torch.cat(out)


def fd_kd(
    real_images: np.ndarray,
    fake_images: np.ndarray,
    net: nn.Module,
    *,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    progress: bool = False,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> dict:
    """FD and KD of two image sets (N, H, W, C) uint8 in the feature space of ``net``.

    Returns ``{"fd", "kd", "kd_std", "n_real", "n_fake", "featnet_sha256"}`` (the sha256 from
    ``net.info``, None for an unsaved net). Raises DataError when the sets differ in image size.
    """
    check_same_shape(real_images, fake_images)
    for name, images in (("REAL", real_images), ("FAKE", fake_images)):
        if len(images) < 2:  # a covariance needs two samples
            raise DataError(f"{name} holds {len(images)} image(s); FD and KD need at least 2 each")
    width = getattr(net, "num_features", None)
    if isinstance(width, int):
        from vqlab.memory import check_feature_memory

        check_feature_memory(len(real_images), len(fake_images), width)
    kw = {"batch_size": batch_size, "device": device, "progress": progress}
    real = extract_features(net, real_images, **kw)
    fake = extract_features(net, fake_images, **kw)
    kd, kd_std = kernel_distance(real, fake, subsets, subset_size, seed)
    return {
        "fd": frechet_distance(real, fake),
        "kd": kd,
        "kd_std": kd_std,
        "n_real": int(real.shape[0]),
        "n_fake": int(fake.shape[0]),
        "featnet_sha256": getattr(net, "info", {}).get("sha256"),
    }


def fd_kd_paths(
    real: str | Path,
    fake: str | Path,
    featnet: str | Path,
    *,
    inception: str | Path | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> dict:
    """``vqlab fd``: :func:`fd_kd` of the image sets at ``real`` and ``fake`` (folders, zips or
    ``.npz``, see :func:`~vqlab.evaluation.images_io.load_image_set`) in the feature net saved at
    ``featnet``. With ``inception`` (the FID weights file) it adds ``inception_fid``,
    ``inception_kid``, ``inception_kid_std`` and ``inception_sha256``.
    """
    from vqlab.evaluation.featnet import load_featnet

    if batch_size < 1:
        raise DataError(f"--batch-size must be >= 1, got {batch_size}")
    net = load_featnet(featnet)
    incep = None
    if inception is not None:  # fail on a bad file before any image is decoded
        from vqlab.evaluation.inception import load_inception

        incep = load_inception(inception)
    real_images, fake_images = load_image_set(real), load_image_set(fake)
    check_same_shape(real_images, fake_images)
    result = fd_kd(real_images, fake_images, net, batch_size=batch_size, progress=progress)
    if incep is not None:
        extra = fd_kd(real_images, fake_images, incep, batch_size=batch_size, progress=progress)
        result |= {
            "inception_fid": extra["fd"],
            "inception_kid": extra["kd"],
            "inception_kid_std": extra["kd_std"],
            "inception_sha256": extra["featnet_sha256"],
        }
    return result
