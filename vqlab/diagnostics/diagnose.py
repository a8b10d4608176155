"""``diagnose``: every metric the given tensors allow, under the contract names of DESIGN.md.

Which keys appear depends on which arguments are given:

====================================  ==================================================
given                                 keys
====================================  ==================================================
codebook (always)                     codebook_size, codebook_mean_l2,
                                      codebook_mean_cos_dist, effective_dim
indices                               perplexity, usage, dead_codes
embeddings                            embedding_mean_l2, coverage_ratio,
                                      mean_nearest_distance
embeddings + indices                  quant_mse
reconstructions + inputs              recon_mse
labels + indices                      modes_with_tokens, mode_entropy
labels + embeddings                   class_separation, probe_accuracy,
                                      embedding_effective_rank
reconstructions + means + mode_radius modes_in_recon
reconstructions + labels + means      recon_mode_accuracy
====================================  ==================================================

Definitions not spelled out in the other modules:

- ``codebook_mean_l2`` is exact over all pairs of codes. ``embedding_mean_l2`` is the same
  statistic on a seeded random subsample of at most ``embedding_sample`` embeddings (all of
  them when there are fewer), since embeddings often number in the millions.
- ``coverage_ratio = codebook_mean_l2 / embedding_mean_l2``.
- ``quant_mse``: mean over the N positions of ``||z_e - codebook[indices]||^2``, summed over D.
- ``recon_mse``: mean over all elements of ``(reconstructions - inputs)^2``, on whatever scale
  the caller's data uses.

An argument given without the partners it needs raises ``ValueError`` instead of being ignored.
Every argument is checked before any metric is computed (see :func:`diagnose` for the policy).
"""

from __future__ import annotations

import math

import torch

from vqlab.diagnostics.collapse import (
    class_separation,
    effective_dim,
    effective_rank,
    mode_stats,
    modes_in_recon,
    probe_accuracy,
    recon_mode_accuracy,
)
from vqlab.diagnostics.spread import (
    _check_matrix,
    mean_nearest_distance,
    mean_pairwise_cos_dist,
    mean_pairwise_l2,
)
from vqlab.diagnostics.usage import code_counts, dead_codes, perplexity, usage
from vqlab.validation import (
    check_float,
    check_int,
    check_integer,
    check_number,
    check_same_device,
    check_values,
)

EMBEDDING_SAMPLE = 8192


def _check_lengths(**tensors: torch.Tensor | None) -> None:
    """All given per-position tensors must agree on N (rows, or length when 1-D)."""
    lengths = {name: t.shape[0] for name, t in tensors.items() if t is not None and t.dim() > 0}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{name} has {n}" for name, n in lengths.items())
        raise ValueError(f"diagnose needs one row per position in each argument; {listed}")


def _check_1d(t: torch.Tensor | None, name: str) -> None:
    if t is not None and check_integer(t, name).dim() != 1:
        raise ValueError(f"{name} must be a (N,) tensor; got {tuple(t.shape)}")


def _check_inputs(
    *,
    codebook,
    embeddings,
    indices,
    labels,
    reconstructions,
    inputs,
    means,
    mode_radius,
    embedding_sample,
    seed,
) -> None:
    """Every argument of :func:`diagnose`, checked before any metric is computed."""
    check_int(embedding_sample, "embedding_sample", minimum=2)
    check_int(seed, "seed")
    if mode_radius is not None:
        check_number(mode_radius, "mode_radius", low=0.0, low_open=True)
    if codebook is None and indices is not None:
        raise ValueError("diagnose got indices without a codebook")
    # codebook and embeddings meet in the fp32 nearest-code search
    if codebook is not None:
        _check_matrix(codebook, "codebook", min_rows=1, compute=torch.float32)
    if embeddings is not None:
        _check_matrix(embeddings, "embeddings", min_rows=1, compute=torch.float32)
        if codebook is not None and embeddings.shape[1] != codebook.shape[1]:
            raise ValueError(
                f"embeddings have D={embeddings.shape[1]} but the codebook has "
                f"D={codebook.shape[1]}"
            )
    _check_1d(indices, "indices")
    _check_1d(labels, "labels")
    for name, t in (("indices", indices), ("labels", labels)):
        if t is not None and t.numel() == 0:
            raise ValueError(f"{name} is empty (N=0); diagnose needs at least one position")
    for name, t in (("reconstructions", reconstructions), ("inputs", inputs), ("means", means)):
        if t is not None:
            check_float(t, name)
    _check_lengths(embeddings=embeddings, indices=indices, labels=labels)
    given = {
        "codebook": codebook,
        "embeddings": embeddings,
        "indices": indices,
        "labels": labels,
        "reconstructions": reconstructions,
        "inputs": inputs,
        "means": means,
    }
    check_same_device(**{name: t for name, t in given.items() if t is not None})
    _check_partners(
        embeddings=embeddings,
        indices=indices,
        labels=labels,
        reconstructions=reconstructions,
        inputs=inputs,
        means=means,
        mode_radius=mode_radius,
    )


def _sample_rows(x: torch.Tensor, limit: int, seed: int) -> torch.Tensor:
    """At most ``limit`` rows of ``x`` (N, D), drawn without replacement with ``seed``."""
    if x.shape[0] <= limit:
        return x
    gen = torch.Generator().manual_seed(seed)
    keep = torch.randperm(x.shape[0], generator=gen)[:limit].to(x.device)
    return x[keep]


def _spread_l2(x: torch.Tensor) -> float:
    """Mean pairwise L2 of the rows; 0.0 for a single row (no pairs, no spread)."""
    return mean_pairwise_l2(x) if x.shape[0] >= 2 else 0.0


def _ratio(num: float, den: float) -> float:
    """``num / den`` with ``x / 0 = inf`` for ``x > 0`` and ``0 / 0 = 0`` (collapsed spreads)."""
    if den == 0.0:
        return math.inf if num > 0.0 else 0.0
    return num / den


def _class_metrics(
    embeddings: torch.Tensor, labels: torch.Tensor, seed: int, probes: bool = True
) -> dict[str, float]:
    """class_separation and probe_accuracy where the labels allow them, and the effective rank.

    Separation needs two classes; the probe also needs a class with two members (so that the
    stratified split has a test set). With fewer, the keys are left out rather than raising
    after a whole training run.
    """
    out: dict[str, float] = {}
    sizes = torch.unique(labels.detach(), return_counts=True)[1]  # (C,)
    if sizes.numel() >= 2:
        out["class_separation"] = class_separation(embeddings, labels)
        if probes and bool((sizes >= 2).any()):
            out["probe_accuracy"] = probe_accuracy(embeddings, labels, seed=seed)
    out["embedding_effective_rank"] = effective_rank(embeddings)
    return out


@torch.no_grad()
def diagnose(
    *,
    codebook: torch.Tensor | None,
    embeddings: torch.Tensor | None = None,
    indices: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    reconstructions: torch.Tensor | None = None,
    inputs: torch.Tensor | None = None,
    means: torch.Tensor | None = None,
    mode_radius: float | None = None,
    embedding_sample: int = EMBEDDING_SAMPLE,
    seed: int = 0,
    probes: bool = True,
) -> dict[str, float]:
    """Collapse and usage metrics as plain Python numbers (JSON-serialisable).

    codebook: (K, D), or None before a codebook exists (deferred quantization's first phase):
    then only the metrics of embeddings and reconstructions are computed, and ``indices`` must
    be None. embeddings: (N, D) encoder outputs ``z_e``, flattened over positions.
    indices: (N,) code of each position. labels: (N,) class or true mode of each position.
    reconstructions, inputs: same shape, any layout, for ``recon_mse``; for the mode metrics
    reconstructions are (N, d) and means (M, d) are the true mode centres (labels index them).
    mode_radius: distance within which a reconstruction counts as landing on a mode.
    embedding_sample, seed: subsample for ``embedding_mean_l2``.
    probes: False leaves out ``probe_accuracy`` (a linear probe fit: the slow part).
    Integer-valued metrics come back as ``int``, the rest as ``float``.

    Input policy (see :mod:`vqlab.validation`): tensors on one device, floating point where
    vectors are expected (any of fp16, bf16, fp32, fp64; computed in fp64, the nearest-code
    search in fp32) and integer for indices and labels, no NaN or Inf (a ``ValueError`` naming
    the tensor), K >= 1 and N >= 1. Degenerate but valid input gives defined numbers, not an
    error: one code or one embedding has mean pairwise distance 0.0; a zero embedding spread
    makes ``coverage_ratio`` inf (0.0 if the codebook spread is 0 too); the class metrics are
    left out when the labels hold a single class (see :func:`_class_metrics`).
    """
    _check_inputs(
        codebook=codebook,
        embeddings=embeddings,
        indices=indices,
        labels=labels,
        reconstructions=reconstructions,
        inputs=inputs,
        means=means,
        mode_radius=mode_radius,
        embedding_sample=embedding_sample,
        seed=seed,
    )
    out: dict[str, float] = {}
    if codebook is not None:
        codebook = codebook.detach()
        k = codebook.shape[0]
        out["codebook_size"] = k
        out["codebook_mean_l2"] = _spread_l2(codebook)
        out["codebook_mean_cos_dist"] = mean_pairwise_cos_dist(codebook) if k >= 2 else 0.0
        out["effective_dim"] = effective_dim(codebook)
    if indices is not None:
        counts = code_counts(indices, k)
        out["perplexity"] = perplexity(counts)
        out["usage"] = usage(counts)
        out["dead_codes"] = dead_codes(counts)
    if embeddings is not None:
        z_e = embeddings.detach()
        out["embedding_mean_l2"] = _spread_l2(_sample_rows(z_e, embedding_sample, seed))
        if codebook is not None:
            out["coverage_ratio"] = _ratio(out["codebook_mean_l2"], out["embedding_mean_l2"])
            out["mean_nearest_distance"] = mean_nearest_distance(z_e, codebook)
        if indices is not None:
            z_q = codebook[indices]  # (N, D)
            diff = z_e.to(torch.float64) - z_q.to(torch.float64)
            out["quant_mse"] = (diff * diff).sum(dim=1).mean().item()
    if reconstructions is not None and inputs is not None:
        out["recon_mse"] = _recon_mse(reconstructions, inputs)
    if labels is not None and indices is not None:
        out.update(mode_stats(indices, labels, k))
    if labels is not None and embeddings is not None:
        out.update(_class_metrics(embeddings, labels, seed, probes))
    if reconstructions is not None and means is not None and mode_radius is not None:
        out["modes_in_recon"] = modes_in_recon(reconstructions, means, mode_radius)
    if reconstructions is not None and means is not None and labels is not None:
        out["recon_mode_accuracy"] = recon_mode_accuracy(reconstructions, labels, means)
    return out


def _check_partners(**given: object) -> None:
    """Raise for an argument that no metric would use with the other arguments given."""
    has = {name for name, value in given.items() if value is not None}
    uses = {
        "embeddings": [set()],
        "indices": [set()],
        "labels": [{"indices"}, {"embeddings"}, {"reconstructions", "means"}],
        "reconstructions": [{"inputs"}, {"means", "mode_radius"}, {"means", "labels"}],
        "inputs": [{"reconstructions"}],
        "means": [{"reconstructions", "mode_radius"}, {"reconstructions", "labels"}],
        "mode_radius": [{"reconstructions", "means"}],
    }
    for name in sorted(has):
        if not any(partners <= has for partners in uses[name]):
            options = " or ".join("+".join(sorted(p)) for p in uses[name])
            raise ValueError(f"diagnose got {name} without what it needs: give {options}")


def _recon_mse(reconstructions: torch.Tensor, inputs: torch.Tensor) -> float:
    """Mean over all elements of the squared error, in float64."""
    for name, t in (("reconstructions", reconstructions), ("inputs", inputs)):
        check_float(t, name)
    if reconstructions.shape != inputs.shape:
        raise ValueError(
            f"reconstructions {tuple(reconstructions.shape)} and inputs {tuple(inputs.shape)} "
            "must have the same shape"
        )
    if inputs.numel() == 0:
        raise ValueError("recon_mse needs at least one element; got empty inputs")
    check_values({"reconstructions": reconstructions, "inputs": inputs}, compute=torch.float64)
    diff = reconstructions.detach().to(torch.float64) - inputs.detach().to(torch.float64)
    return (diff * diff).mean().item()
