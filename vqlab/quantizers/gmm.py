"""Diagonal-covariance Gaussian mixture fitted by EM, for codebook initialisation.

Why by hand: scikit-learn's ``GaussianMixture`` is the reference (the tests compare with it), but
it runs on numpy and holds the dense N x K responsibility matrix; a codebook init needs
K = 1k..65k components on 10^5 vectors, on the GPU when there is one. Here the E-step is two
GEMMs per chunk of rows, at most ``max_bytes`` of (rows x K) log-probabilities exist at once, and
the M-step accumulates sufficient statistics (counts, sums, sums of squares) chunk by chunk.

The EM starts from k-means (means, per-cluster variances, weights), as scikit-learn's default
``init_params="kmeans"`` does; the codebook is the means of the fitted components.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from vqlab.quantizers.distance import DEFAULT_MAX_BYTES, nearest_code
from vqlab.quantizers.kmeans import kmeans

LOG_2PI = math.log(2.0 * math.pi)


class GMMResult(NamedTuple):
    """means, variances: (K, D); weights: (K,); log_likelihood: mean per row, one per EM step
    (the value *before* that step's M-step, as scikit-learn's lower bound)."""

    means: torch.Tensor
    variances: torch.Tensor
    weights: torch.Tensor
    log_likelihood: list[float]


def _row_chunk(k: int, max_bytes: int) -> int:
    return max(1, max_bytes // (4 * 3 * k))  # three (rows, K) fp32 temporaries at once


def gmm_log_prob(
    x: torch.Tensor,
    means: torch.Tensor,
    variances: torch.Tensor,
    weights: torch.Tensor,
) -> torch.Tensor:
    """(N, K) log of ``weights_k * N(x_n | means_k, diag(variances_k))``, by two GEMMs."""
    precision = 1.0 / variances  # (K, D)
    quad = (
        (x * x) @ precision.T  # (N, K)
        - 2.0 * x @ (means * precision).T
        + (means * means * precision).sum(1)
    )
    log_det = torch.log(variances).sum(1)  # (K,)
    return -0.5 * (quad + log_det + x.shape[1] * LOG_2PI) + torch.log(weights)


def e_step_statistics(
    x: torch.Tensor,
    means: torch.Tensor,
    variances: torch.Tensor,
    weights: torch.Tensor,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Responsibility-weighted counts (K,), sums (K, D), sums of squares (K, D) and the mean
    log-likelihood per row, accumulated over row chunks (fp64 for the log-likelihood)."""
    k, d = means.shape
    counts = x.new_zeros(k)
    sums = x.new_zeros(k, d)
    squares = x.new_zeros(k, d)
    total = 0.0
    step = _row_chunk(k, max_bytes)
    for i in range(0, x.shape[0], step):
        xs = x[i : i + step]
        log_p = gmm_log_prob(xs, means, variances, weights)  # (n, K)
        norm = torch.logsumexp(log_p, dim=1, keepdim=True)  # (n, 1)
        resp = torch.exp(log_p - norm)  # (n, K)
        total += float(norm.double().sum())
        counts += resp.sum(0)
        sums += resp.T @ xs
        squares += resp.T @ (xs * xs)
    return counts, sums, squares, total / x.shape[0]


def fit_gmm(
    x: torch.Tensor,
    k: int,
    *,
    iters: int = 10,
    kmeans_iters: int = 10,
    reg_covar: float = 1e-6,
    seed: int = 0,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> GMMResult:
    """Fit a K-component diagonal Gaussian mixture to ``x`` (N, D) with ``iters`` EM steps.

    Starts from k-means (``kmeans_iters`` Lloyd steps; each cluster's variance and share), and
    adds ``reg_covar`` to every variance, as scikit-learn does. A component that loses all its
    mass keeps its previous mean and variance rather than becoming NaN. Needs N >= K.
    """
    if x.ndim != 2:
        raise ValueError(f"fit_gmm needs (N, D) data; got shape {tuple(x.shape)}")
    if not 1 <= k <= x.shape[0]:
        raise ValueError(f"fit_gmm needs 1 <= k <= N rows; got k={k} for {x.shape[0]} rows")
    if iters < 0:
        raise ValueError(f"iters must be >= 0; got {iters}")
    x = x.float()
    centroids = kmeans(x, k, iters=kmeans_iters, seed=seed, max_bytes=max_bytes).centroids
    labels = nearest_code(x, centroids, max_bytes=max_bytes)[0]  # (N,)
    counts = torch.bincount(labels, minlength=k).float()
    sums = x.new_zeros(k, x.shape[1]).index_add_(0, labels, x)
    squares = x.new_zeros(k, x.shape[1]).index_add_(0, labels, x * x)
    means, variances, weights = _m_step(counts, sums, squares, None, x.shape[0], reg_covar)
    return gmm_em(
        x, means, variances, weights, iters=iters, reg_covar=reg_covar, max_bytes=max_bytes
    )


def gmm_em(
    x: torch.Tensor,
    means: torch.Tensor,
    variances: torch.Tensor,
    weights: torch.Tensor,
    *,
    iters: int,
    reg_covar: float = 1e-6,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> GMMResult:
    """``iters`` EM steps from the given mixture (means, variances (K, D); weights (K,))."""
    history = []
    for _ in range(iters):
        counts, sums, squares, ll = e_step_statistics(
            x, means, variances, weights, max_bytes=max_bytes
        )
        history.append(ll)
        means, variances, weights = _m_step(
            counts, sums, squares, (means, variances), x.shape[0], reg_covar
        )
    return GMMResult(means, variances, weights, history)


def _m_step(counts, sums, squares, previous, n, reg_covar):
    """Means, variances (+ reg_covar) and weights from the sufficient statistics."""
    tiny = 10.0 * torch.finfo(torch.float32).eps  # as scikit-learn: keeps empty components finite
    safe = counts.clamp_min(tiny)[:, None]
    means = sums / safe
    variances = (squares / safe - means * means).clamp_min(0.0) + reg_covar
    if previous is not None:
        empty = (counts <= tiny)[:, None]
        means = torch.where(empty, previous[0], means)
        variances = torch.where(empty, previous[1], variances)
    weights = (counts + tiny) / (n + tiny * counts.numel())
    return means, variances, weights
