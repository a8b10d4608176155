"""Generation metrics of a samples folder (``vqlab sample``'s output) against real images.

- ``g_fd``, ``g_kd`` (``g_kd_std``): FD/KD of the sampled images against the real ones in the
  feature space of a vqlab feature net, at the N given (FD is biased upwards at small N:
  compare only at equal N); not FID;
- ``pixel_distance``, ``pixel_distance_within_class``: the papers' diversity measure, here the
  mean per-pixel RMS difference of random pairs on the 0-255 scale
  (:func:`vqlab.evaluation.image_metrics.pixel_distance` states the definition);
- ``class_consistency``: the feature net's accuracy on class-conditional samples;
- ``sample_codes_used``, ``sample_perplexity``: token usage of the sampled ids, beside
  ``real_codes_used``, ``real_perplexity`` of the real test ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqlab.diagnostics.usage import code_counts, perplexity
from vqlab.evaluation.frechet import fd_kd
from vqlab.evaluation.image_metrics import class_consistency, pixel_distance


def token_usage(ids: np.ndarray, codebook_size: int) -> tuple[int, float]:
    """(codes used at least once, perplexity of the code distribution) of ids (N, L)."""
    counts = code_counts(torch.as_tensor(np.asarray(ids, dtype=np.int64)), codebook_size)
    return int((counts > 0).sum()), perplexity(counts)


def generation_metrics(
    samples: str | Path,
    real_images: np.ndarray,
    net: torch.nn.Module,
    *,
    codebook_size: int,
    real_ids: np.ndarray | None = None,
    pairs: int = 10000,
) -> dict[str, Any]:
    """The metrics of the module docstring for the folder ``samples`` (samples.npz and
    images.npz) against ``real_images`` (N, H, W, C) uint8, in the feature net ``net``."""
    samples = Path(samples)
    drawn = np.load(samples / "samples.npz")
    images = np.load(samples / "images.npz")["images"]
    labels = drawn["labels"]
    fd = fd_kd(real_images, images, net)
    out: dict[str, Any] = {
        "g_fd": fd["fd"],
        "g_kd": fd["kd"],
        "g_kd_std": fd["kd_std"],
        "n_real": fd["n_real"],
        "n_fake": fd["n_fake"],
        "featnet_sha256": fd["featnet_sha256"],
    }
    conditional = bool((labels >= 0).all())
    out.update(pixel_distance(images, labels if conditional else None, pairs=pairs))
    out["class_consistency"] = class_consistency(net, images, labels) if conditional else None
    out["sample_codes_used"], out["sample_perplexity"] = token_usage(drawn["ids"], codebook_size)
    if real_ids is not None:
        out["real_codes_used"], out["real_perplexity"] = token_usage(real_ids, codebook_size)
    return out


def real_reference(
    real_images: np.ndarray,
    labels: np.ndarray | None,
    other_real: np.ndarray,
    net: torch.nn.Module,
    *,
    pairs: int = 10000,
) -> dict[str, Any]:
    """What real images score on the generation metrics, the row to read samples against:
    ``g_fd``/``g_kd`` of ``other_real`` (say N train images) against ``real_images`` (N test
    images), the real-against-real floor; the pixel distances of ``real_images`` (the data's
    own diversity); and the feature net's accuracy on them as ``class_consistency`` (None
    without labels)."""
    fd = fd_kd(real_images, other_real, net)
    out: dict[str, Any] = {"g_fd": fd["fd"], "g_kd": fd["kd"], "n_real": fd["n_real"]}
    out.update(pixel_distance(real_images, labels, pairs=pairs))
    out["class_consistency"] = (
        None if labels is None else class_consistency(net, real_images, labels)
    )
    return out
