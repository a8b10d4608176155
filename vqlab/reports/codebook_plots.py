"""Plots of a codebook on its own (``vqlab diagnose --codebook``): its spectrum and, when ids
are known, how often each code is used. They read tensors; they never evaluate a model."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def plot_codebook(
    codes: torch.Tensor, counts: torch.Tensor | None, out: str | Path, title: str = ""
) -> Path:
    """Left: the centred codebook's singular values (K, D) -> min(K, D) bars, the shape of
    dimensional collapse. Right (with counts (K,)): code use, most used first, log scale."""
    centred = (codes - codes.mean(0)).double()
    s = torch.linalg.svdvals(centred).numpy()
    panels = 2 if counts is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), squeeze=False)
    ax = axes[0, 0]
    ax.bar(np.arange(1, s.size + 1), s / max(s.sum(), 1e-300), color="tab:blue")
    ax.set_xlabel("principal direction")
    ax.set_ylabel("share of singular values")
    ax.set_title(f"codebook spectrum (K={codes.shape[0]}, D={codes.shape[1]})")
    if counts is not None:
        c = np.sort(counts.numpy())[::-1]
        ax = axes[0, 1]
        ax.plot(np.arange(1, c.size + 1), np.maximum(c, 0.5), color="tab:red")
        ax.set_yscale("log")
        ax.set_xlabel("code (by use)")
        ax.set_ylabel("uses (0 drawn at 0.5)")
        ax.set_title(f"code use: {int((c > 0).sum())} of {c.size} used")
    fig.suptitle(title)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return Path(out)
