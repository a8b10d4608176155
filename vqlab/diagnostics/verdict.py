"""A verdict in words: is tokens collapse present, is embeddings collapse present?

Reports (``vqlab diagnose``, ``vqlab evaluate``) open with these lines rather than a bare
table. The thresholds below are rules of thumb, stated in every verdict so that a reader can
disagree with them:

- **tokens collapse** (the codebook is not used): ``usage < 0.5`` (fewer than half the codes
  chosen on the test set), or ``perplexity / K < 0.25`` (usage so uneven that the effective
  number of codes is under a quarter of K), or ``coverage_ratio < 0.5`` (the codes spread over
  less than half the extent of the encoder outputs: the clustered codebook of a k-means init on
  an untrained encoder). Measured on the committed runs: standard runs at K >= 1024 on CIFAR-10
  fail the first two, deferred runs pass all three.
- **embeddings collapse** (the encoder maps different inputs alike): a linear probe on the
  mean-pooled embeddings reaches less than ``0.8x`` the accuracy of the same probe on the raw
  inputs, or the embeddings' effective rank is under half of ``min(D, the inputs' effective
  rank)``. Needs labels for the first rule and the raw inputs for both; a rule that cannot be
  evaluated is reported as such, never guessed.
"""

from __future__ import annotations

from typing import Any

import torch

from vqlab.diagnostics.collapse import effective_rank, probe_accuracy

THRESHOLDS = {
    "usage": 0.5,
    "perplexity_ratio": 0.25,
    "coverage_ratio": 0.5,
    "probe_ratio": 0.8,
    "rank_ratio": 0.5,
}


def data_reference(x: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
    """What the raw inputs score: ``data_effective_rank`` and (with labels) ``data_probe_accuracy``.

    x: (N, ...) inputs, flattened to (N, F); labels: (N,) or None.
    """
    flat = x.reshape(x.shape[0], -1).float()
    out = {"data_effective_rank": effective_rank(flat)}
    if labels is not None and labels.unique().numel() > 1:
        out["data_probe_accuracy"] = probe_accuracy(flat, labels)
    return out


def collapse_verdict(
    metrics: dict[str, Any], *, dim: int, reference: dict[str, float] | None = None
) -> dict[str, Any]:
    """``tokens_collapse`` and ``embeddings_collapse`` (True, False, or None when the metrics
    to decide are missing) and ``verdict``: the sentences that say so, thresholds included.

    metrics: a run's summary (``usage``, ``perplexity``, ``codebook_size``, ``coverage_ratio``,
    ``probe_accuracy``, ``embedding_effective_rank``); dim: the code dimension D; reference:
    :func:`data_reference` of the inputs.
    """
    t, ref, lines = THRESHOLDS, reference or {}, []
    tokens = None
    if all(k in metrics for k in ("usage", "perplexity", "codebook_size", "coverage_ratio")):
        k = metrics["codebook_size"]
        ratio = metrics["perplexity"] / k
        failed = [
            f"usage {metrics['usage']:.1%} < {t['usage']:.0%}"
            if metrics["usage"] < t["usage"]
            else "",
            f"perplexity {metrics['perplexity']:.0f} is {ratio:.1%} of K={k} "
            f"(< {t['perplexity_ratio']:.0%})"
            if ratio < t["perplexity_ratio"]
            else "",
            f"coverage ratio {metrics['coverage_ratio']:.2f} < {t['coverage_ratio']}"
            if metrics["coverage_ratio"] < t["coverage_ratio"]
            else "",
        ]
        failed = [f for f in failed if f]
        tokens = bool(failed)
        lines.append(
            "**Tokens collapse: present** (" + "; ".join(failed) + ")."
            if tokens
            else f"**Tokens collapse: absent** (usage {metrics['usage']:.1%}, perplexity "
            f"{metrics['perplexity']:.0f} = {ratio:.1%} of K={k}, coverage ratio "
            f"{metrics['coverage_ratio']:.2f})."
        )
    else:
        lines.append("Tokens collapse: not decided (no quantized evaluation in these metrics).")
    embeddings, failed, passed = None, [], []
    if "probe_accuracy" in metrics and "data_probe_accuracy" in ref:
        probe, base = metrics["probe_accuracy"], ref["data_probe_accuracy"]
        text = f"probe accuracy {probe:.1%} against {base:.1%} on the raw inputs"
        (failed if probe < t["probe_ratio"] * base else passed).append(text)
    if "embedding_effective_rank" in metrics and "data_effective_rank" in ref:
        rank, cap = metrics["embedding_effective_rank"], min(dim, ref["data_effective_rank"])
        text = f"effective rank {rank:.1f} of at most {cap:.1f}"
        (failed if rank < t["rank_ratio"] * cap else passed).append(text)
    if failed or passed:
        embeddings = bool(failed)
        word = "present" if embeddings else "absent"
        lines.append(f"**Embeddings collapse: {word}** (" + "; ".join(failed or passed) + ").")
    else:
        lines.append("Embeddings collapse: not decided (needs labels or the raw inputs).")
    lines.append(
        f"Thresholds: usage < {t['usage']}, perplexity/K < {t['perplexity_ratio']} or coverage "
        f"ratio < {t['coverage_ratio']} for tokens collapse; probe < {t['probe_ratio']}x the raw "
        f"inputs' or effective rank < {t['rank_ratio']}x min(D, the inputs') for embeddings "
        "collapse (vqlab.diagnostics.verdict)."
    )
    return {"tokens_collapse": tokens, "embeddings_collapse": embeddings, "verdict": lines}
