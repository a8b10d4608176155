"""Collapse diagnostics: effective dimension and rank, class separation, linear probe, modes.

Definitions:

- ``effective_dim``: the number of principal components of the centered codebook needed to
  reach ``threshold`` (default 99%) of its variance.
- ``effective_rank``: ``exp(H(p))`` with ``p_i = s_i / sum(s)`` over the singular values of
  the centered matrix (Roy & Vetterli, 2007). It lies in ``[1, min(N, D)]``.
- ``class_separation``: mean pairwise L2 between class means, divided by the mean L2 from each
  embedding to its own class mean. High when classes are tight and far apart.
- ``probe_accuracy``: test accuracy of a softmax linear probe (see its docstring).
- ``mode_stats``, ``modes_in_recon``, ``recon_mode_accuracy``: for data with known modes.

A matrix whose rows are all identical has no variance: ``effective_dim`` returns 0 and
``effective_rank`` returns 0.0 for it, rather than raising, since total collapse is a result.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vqlab.diagnostics.spread import _check_matrix, mean_pairwise_l2
from vqlab.diagnostics.usage import code_counts
from vqlab.quantizers.distance import nearest_code
from vqlab.validation import check_int, check_integer, check_number


def _check_labels(labels: torch.Tensor, n: int | None, name: str = "labels") -> None:
    """Check an integer (N,) tensor; ``n=None`` accepts any length."""
    check_integer(labels, name)
    if labels.dim() != 1 or (n is not None and labels.shape[0] != n):
        want = "(N,)" if n is None else f"({n},)"
        raise ValueError(f"{name} must have shape {want}; got {tuple(labels.shape)}")


def _centered_singular_values(x: torch.Tensor) -> torch.Tensor:
    """(min(N, D),) float64 singular values of ``x - mean(x)``, descending."""
    x64 = x.detach().to(torch.float64)
    return torch.linalg.svdvals(x64 - x64.mean(dim=0))


@torch.no_grad()
def effective_dim(codebook: torch.Tensor, threshold: float = 0.99) -> int:
    """Principal components of the centered codebook needed for ``threshold`` of the variance.

    codebook: (K, D) floating point, K >= 1. threshold in (0, 1].
    Returns an int in ``[0, min(K, D)]``; 0 only when every code is the same vector.
    """
    _check_matrix(codebook, "codebook", min_rows=1)
    check_number(threshold, "threshold", low=0.0, high=1.0, low_open=True)
    var = _centered_singular_values(codebook) ** 2  # (min(K, D),) variance per component
    total = var.sum()
    if total.item() == 0.0:
        return 0
    explained = var.cumsum(0) / total
    # The tolerance keeps float rounding (0.99999999 for a perfect line) from adding a component.
    return int((explained < threshold - 1e-9).sum().item()) + 1


@torch.no_grad()
def effective_rank(x: torch.Tensor) -> float:
    """Roy & Vetterli effective rank of the centered ``x``.

    x: (N, D) floating point, N >= 1. Returns ``exp`` of the entropy (nats) of the singular
    values normalised to sum to 1; 0.0 when all rows are identical.
    """
    _check_matrix(x, "x", min_rows=1)
    s = _centered_singular_values(x)
    total = s.sum()
    if total.item() == 0.0:
        return 0.0
    p = s[s > 0] / total
    return math.exp(-(p * p.log()).sum().item())


@torch.no_grad()
def class_separation(embeddings: torch.Tensor, labels: torch.Tensor) -> float:
    """Between-class over within-class distance of the embeddings.

    embeddings: (N, D) floating point; labels: (N,) integer, at least 2 distinct values.
    Returns ``B / W`` with ``B`` the mean L2 distance over unordered pairs of class means (each
    class counted once, whatever its size) and ``W`` the mean over all N embeddings of the L2
    distance to their own class mean. ``W = 0`` gives ``inf`` (or 0.0 if ``B = 0`` too).
    """
    _check_matrix(embeddings, "embeddings", min_rows=2)
    _check_labels(labels, embeddings.shape[0])
    classes, inverse = torch.unique(labels.detach(), return_inverse=True)
    c = classes.numel()
    if c < 2:
        raise ValueError(f"class_separation needs at least 2 classes; got {c}")
    e = embeddings.detach().to(torch.float64)
    sums = torch.zeros(c, e.shape[1], dtype=torch.float64, device=e.device)
    sums.index_add_(0, inverse, e)
    sizes = torch.bincount(inverse, minlength=c).to(torch.float64)  # (C,)
    means = sums / sizes[:, None]  # (C, D)
    within = (e - means[inverse]).norm(dim=1).mean().item()
    between = mean_pairwise_l2(means)
    if within == 0.0:
        return math.inf if between > 0.0 else 0.0
    return between / within


def stratified_split(
    labels: torch.Tensor, *, test_fraction: float = 0.2, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded split of positions into train and test, class by class.

    labels: (N,) integer. Each class with ``n_c >= 2`` members sends
    ``round(test_fraction * n_c)`` of them (clipped to ``[1, n_c - 1]``) to test; a singleton
    class stays in train. Returns sorted (N_train,) and (N_test,) int64 index tensors on CPU.
    """
    _check_labels(labels, None)
    if labels.numel() < 2:
        raise ValueError(f"stratified_split needs at least 2 labels; got {labels.numel()}")
    check_number(test_fraction, "test_fraction", low=0.0, high=1.0, low_open=True, high_open=True)
    check_int(seed, "seed")
    gen = torch.Generator().manual_seed(seed)
    _, inverse = torch.unique(labels.detach().cpu(), return_inverse=True)
    train, test = [], []
    for c in range(int(inverse.max().item()) + 1):
        members = (inverse == c).nonzero().squeeze(1)
        members = members[torch.randperm(members.numel(), generator=gen)]
        n_c = members.numel()
        n_test = 0 if n_c < 2 else min(max(math.floor(test_fraction * n_c + 0.5), 1), n_c - 1)
        test.append(members[:n_test])
        train.append(members[n_test:])
    if sum(t.numel() for t in test) == 0:
        raise ValueError("the split has an empty test set: every class has a single member")
    return torch.cat(train).sort().values, torch.cat(test).sort().values


def probe_accuracy(
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    seed: int = 0,
    test_fraction: float = 0.2,
    l2: float = 1e-4,
    max_iter: int = 200,
) -> float:
    """Test accuracy of a linear softmax probe on ``features``.

    features: (N, D) floating point; labels: (N,) integer with at least 2 classes.
    The split is :func:`stratified_split` (seeded). Features are standardized with the train
    split's mean and std (constant features become 0). The probe minimises
    ``mean cross-entropy + l2 / 2 * ||W||^2`` (bias not penalised) with full-batch L-BFGS in
    float64 from zero weights, so a run is deterministic. This is scikit-learn's
    ``LogisticRegression(C=1 / (l2 * N_train))`` on the same split.
    """
    _check_matrix(features, "features", min_rows=2)
    _check_labels(labels, features.shape[0])
    check_number(l2, "l2", low=0.0)
    check_int(max_iter, "max_iter", minimum=1)
    check_int(seed, "seed")
    _, y = torch.unique(labels.detach(), return_inverse=True)
    n_classes = int(y.max().item()) + 1
    if n_classes < 2:
        raise ValueError(f"probe_accuracy needs at least 2 classes; got {n_classes}")
    train_idx, test_idx = stratified_split(labels, test_fraction=test_fraction, seed=seed)
    device = features.device
    train_idx, test_idx, y = train_idx.to(device), test_idx.to(device), y.to(device)
    x = features.detach().to(torch.float64)
    mu = x[train_idx].mean(dim=0)
    sd = x[train_idx].std(dim=0, unbiased=False)
    sd = torch.where(sd > 0, sd, torch.ones_like(sd))
    x = (x - mu) / sd  # (N, D)
    x_tr, y_tr = x[train_idx], y[train_idx]

    w = torch.zeros(x.shape[1], n_classes, dtype=torch.float64, device=device, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, device=device, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=1e-10,
        tolerance_change=1e-14,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x_tr @ w + b, y_tr) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        pred = (x[test_idx] @ w + b).argmax(dim=1)
        return (pred == y[test_idx]).to(torch.float64).mean().item()


@torch.no_grad()
def mode_stats(indices: torch.Tensor, labels: torch.Tensor, codebook_size: int) -> dict[str, float]:
    """Which true modes own codes, and how evenly the used codes spread over modes.

    indices: (N,) integer codes; labels: (N,) integer true mode (class) of each position.
    Each used code is owned by the majority label of the positions assigned to it (ties go to
    the smallest label). Returns ``modes_with_tokens`` (int: distinct labels owning >= 1 code)
    and ``mode_entropy`` (float, nats: entropy of the share of used codes each mode owns).
    """
    _check_labels(indices, None, "indices")
    _check_labels(labels, indices.shape[0])
    code_counts(indices, codebook_size)  # range check only
    if indices.numel() == 0:
        raise ValueError("mode_stats needs at least one position; got N=0")
    # Work on used codes only: a (K, L) table could be huge for K = 262k codes.
    _, code = torch.unique(indices.detach(), return_inverse=True)  # (N,) in [0, U)
    _, mode = torch.unique(labels.detach(), return_inverse=True)  # (N,) in [0, L), sorted labels
    n_used, n_modes = int(code.max()) + 1, int(mode.max()) + 1
    table = torch.bincount(code * n_modes + mode, minlength=n_used * n_modes)
    owner = table.view(n_used, n_modes).argmax(dim=1)  # (U,); argmax takes the first maximum
    owned = torch.bincount(owner, minlength=n_modes).to(torch.float64)  # (L,) codes per mode
    p = owned[owned > 0] / n_used
    return {
        "modes_with_tokens": int((owned > 0).sum().item()),
        "mode_entropy": float(-(p * p.log()).sum().item()),
    }


def _check_recon_means(reconstructions: torch.Tensor, means: torch.Tensor) -> None:
    # the mode metrics search nearest means in fp32
    _check_matrix(reconstructions, "reconstructions", min_rows=1, compute=torch.float32)
    _check_matrix(means, "means", min_rows=1, compute=torch.float32)
    if reconstructions.shape[1] != means.shape[1]:
        raise ValueError(
            f"reconstructions have d={reconstructions.shape[1]} but means have d={means.shape[1]}"
        )


@torch.no_grad()
def modes_in_recon(reconstructions: torch.Tensor, means: torch.Tensor, radius: float) -> int:
    """Number of true modes that at least one reconstruction lands on.

    reconstructions: (N, d); means: (M, d) true mode centres. A mode counts when some
    reconstruction lies within Euclidean distance ``radius`` (inclusive) of its mean.
    Returns an int in ``[0, M]``.
    """
    _check_recon_means(reconstructions, means)
    check_number(radius, "radius", low=0.0, low_open=True)
    # For each mean, its nearest reconstruction: "is any reconstruction close" in one search.
    sq = nearest_code(means.detach().float(), reconstructions.detach().float()).distances
    return int((sq <= radius * radius).sum().item())


@torch.no_grad()
def recon_mode_accuracy(
    reconstructions: torch.Tensor, labels: torch.Tensor, means: torch.Tensor
) -> float:
    """Fraction of reconstructions whose nearest true mean is their own label's mean.

    reconstructions: (N, d); labels: (N,) integer rows of ``means`` in ``[0, M)``;
    means: (M, d). Returns a float in ``[0, 1]``.
    """
    _check_recon_means(reconstructions, means)
    _check_labels(labels, reconstructions.shape[0])
    m = means.shape[0]
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= m:
        raise ValueError(f"labels must index rows of means, [0, {m}); got values in [{lo}, {hi}]")
    nearest = nearest_code(reconstructions.detach().float(), means.detach().float()).indices
    return (nearest == labels.to(nearest.device)).to(torch.float64).mean().item()
