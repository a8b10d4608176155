"""Per-image pooling of the evaluation's class metrics, on embeddings with known answers."""

import pytest
import torch

from vqlab.diagnostics import class_separation, probe_accuracy
from vqlab.training.evaluate import _label_metrics

N_IMAGES, POSITIONS = 10, 4


def _images() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N * P, 2) embeddings of 10 images x 4 positions whose per-image means are known.

    Image i's positions are its mean m_i plus offsets that sum to zero; the offsets are 5x
    larger than the class gap, so single positions do not separate the classes but the means
    do: class 0 images have mean (1 + i/10, 0), class 1 images (-1 - i/10, 0).
    """
    labels = torch.tensor([0, 1] * (N_IMAGES // 2))
    sign = 1.0 - 2.0 * labels.double()  # +1 for class 0, -1 for class 1
    means = torch.stack([sign * (1 + torch.arange(N_IMAGES) / 10), torch.zeros(N_IMAGES)], 1)
    offsets = 5.0 * torch.tensor([[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]])
    z = (means[:, None, :] + offsets[None]).reshape(N_IMAGES * POSITIONS, 2)  # image-major
    return z.float(), labels, means.float()


def test_pooling_averages_each_images_own_positions():
    z, labels, means = _images()
    out = _label_metrics(z, None, None, labels, POSITIONS, probes=True)
    assert out["probe_accuracy"] == 1.0  # the per-image means are separated by their sign
    assert out["class_separation"] == pytest.approx(class_separation(means, labels), rel=1e-6)
    # single positions (no pooling) are far from separable: the pooling is what the probe sees
    assert probe_accuracy(z, labels.repeat_interleave(POSITIONS)) < 1.0


def test_token_probe_pools_each_images_codes():
    z, labels, _ = _images()
    # two codes, one per class: each position's token is its image's class, whatever its offset
    codebook = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    indices = labels.repeat_interleave(POSITIONS)
    out = _label_metrics(z, indices, codebook, labels, POSITIONS, probes=True)
    assert out["token_probe_accuracy"] == 1.0
    assert out["modes_with_tokens"] == 2


def test_vectors_are_their_own_pool():
    # one position per sample: pooling changes nothing, and diagnose() owns the class metrics
    z, labels, _ = _images()
    pooled = z.reshape(N_IMAGES, POSITIONS, 2).mean(1)
    out = _label_metrics(pooled, None, None, labels, 1, probes=True)
    assert out == {}
