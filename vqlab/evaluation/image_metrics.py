"""Pixel-level and classifier metrics of images: PSNR, SSIM, pixel distance, class consistency.

Image formats: uint8 arrays or tensors (N, H, W, C) on the 0-255 scale (what vqlab saves), or
float tensors (N, C, H, W) on the training scale [-1, 1] (what a model outputs).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from vqlab.data.errors import DataError


def _as_float_nchw(x: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, float]:
    """Images -> (N, C, H, W) float64 and their data range (255 for uint8, 2 for [-1, 1])."""
    t = torch.as_tensor(x)
    if t.ndim != 4:
        raise ValueError(f"images must be 4-d, got shape {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        return t.permute(0, 3, 1, 2).double(), 255.0  # (N, H, W, C) -> (N, C, H, W)
    if not t.is_floating_point():
        raise ValueError(f"images must be uint8 (N, H, W, C) or float (N, C, H, W), got {t.dtype}")
    return t.double(), 2.0


def _pair(a, b, data_range: float | None) -> tuple[torch.Tensor, torch.Tensor, float]:
    (ta, ra), (tb, rb) = _as_float_nchw(a), _as_float_nchw(b)
    if ra != rb or ta.shape != tb.shape:
        raise ValueError(f"images differ in scale or shape: {tuple(ta.shape)}, {tuple(tb.shape)}")
    return ta, tb, ra if data_range is None else float(data_range)


def psnr(
    a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray, data_range: float | None = None
) -> float:
    """Mean over images of the per-image PSNR, 10 log10(data_range^2 / MSE), in dB.

    a, b: uint8 (N, H, W, C) (data_range default 255) or float (N, C, H, W) in [-1, 1]
    (default 2). Identical images give inf. Through torchmetrics' functional PSNR.
    """
    from torchmetrics.functional.image import peak_signal_noise_ratio

    ta, tb, rng = _pair(a, b, data_range)
    value = peak_signal_noise_ratio(ta, tb, data_range=rng, dim=(1, 2, 3))
    return float(value)


def ssim(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """Mean SSIM (Gaussian window 11, sigma 1.5) through torchmetrics; 1 for identical images.

    a, b: uint8 (N, H, W, C) or float (N, C, H, W) in [-1, 1]; sides >= 11. Both are mapped to
    [0, 1] first (x / 255, or (x + 1) / 2): SSIM's luminance term depends on the offset of the
    scale, so it is computed on the usual non-negative one whatever the input.
    """
    from torchmetrics.functional.image import structural_similarity_index_measure

    ta, tb, rng = _pair(a, b, None)
    if rng == 2.0:  # [-1, 1] -> [0, 1]
        ta, tb = (ta + 1) / 2, (tb + 1) / 2
    else:
        ta, tb = ta / 255, tb / 255
    return float(structural_similarity_index_measure(ta, tb, data_range=1.0))


def _pair_rms(images: np.ndarray, i: np.ndarray, j: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Per-pixel RMS difference of images[i[k]] and images[j[k]] on the 0-255 scale: (P,)."""
    out = np.empty(len(i), np.float64)
    for s in range(0, len(i), chunk):
        d = images[i[s : s + chunk]].astype(np.float64) - images[j[s : s + chunk]]
        out[s : s + chunk] = np.sqrt((d * d).reshape(len(d), -1).mean(axis=1))
    return out


def _mean_pair_rms(images: np.ndarray, pairs: int, rng: np.random.Generator) -> float:
    n = len(images)
    if n < 2:
        return float("nan")
    if n * (n - 1) // 2 <= pairs:  # few images: every pair once, exactly
        i, j = np.triu_indices(n, k=1)
    else:
        i = rng.integers(0, n, pairs)
        j = rng.integers(0, n - 1, pairs)
        j = j + (j >= i)  # uniform over j != i
    return float(_pair_rms(images, i, j).mean())


def pixel_distance(
    images: np.ndarray,
    labels: np.ndarray | None = None,
    pairs: int = 10000,
    seed: int = 0,
) -> dict:
    """Diversity of an image set: the mean per-pixel RMS difference of pairs, 0-255 scale.

    For a pair (x, y) of (H, W, C) uint8 images the distance is
    ``sqrt(mean over H, W, C of (x - y)^2)``; ``pixel_distance`` is its mean over ``pairs``
    random pairs i != j (drawn with replacement; a set with at most ``pairs`` distinct pairs
    uses each unordered pair exactly once). ``pixel_distance_within_class`` draws
    ``max(1, pairs // classes)`` pairs inside each class of ``labels`` (N,) (classes with one
    image are skipped) and averages the classes' means, unweighted; None without labels.
    images: (N, H, W, C) uint8.
    """
    if images.ndim != 4 or images.dtype != np.uint8:
        raise DataError(f"images must be (N, H, W, C) uint8, got {images.shape} {images.dtype}")
    if images.shape[0] < 2:
        raise DataError(f"pixel distance needs at least 2 images, got {images.shape[0]}")
    rng = np.random.default_rng(seed)
    result: dict = {"pixel_distance": _mean_pair_rms(images, pairs, rng)}
    within = None
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (images.shape[0],):
            raise DataError(f"labels must be ({images.shape[0]},), got {labels.shape}")
        classes = [c for c in np.unique(labels) if (labels == c).sum() >= 2]
        per_class = max(1, pairs // max(1, len(classes)))
        means = [_mean_pair_rms(images[labels == c], per_class, rng) for c in classes]
        within = float(np.mean(means)) if means else None
    result["pixel_distance_within_class"] = within
    return result


@torch.no_grad()
def class_consistency(
    net: nn.Module, images: np.ndarray, labels: np.ndarray, batch_size: int = 256
) -> float:
    """The feature net's accuracy on class-conditional samples: the fraction of images whose
    predicted class is the class they were sampled for.

    images: (N, H, W, C) uint8; labels: (N,) int, the conditioning classes.
    """
    from vqlab.data.images import to_tensor

    labels = np.asarray(labels)
    if images.ndim != 4 or images.dtype != np.uint8 or labels.shape != (images.shape[0],):
        raise DataError(
            f"class consistency needs (N, H, W, C) uint8 images and (N,) labels, got "
            f"{images.shape} {images.dtype} and {labels.shape}"
        )
    device = next(iter(net.parameters()), torch.empty(0)).device
    was_training = net.training
    net.eval()
    correct = 0
    for s in range(0, len(images), batch_size):
        pred = net(to_tensor(images[s : s + batch_size]).to(device)).argmax(1).cpu().numpy()
        correct += int((pred == labels[s : s + batch_size]).sum())
    net.train(was_training)
    return correct / len(images)
