"""Plots that read result files (results.csv, metrics.jsonl, eval_samples.npz); they never train."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no screen here or on CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vqlab.training.logging import read_metrics  # noqa: E402

COLORS = {"standard": "tab:red", "deferred": "tab:blue"}


def _save(fig: plt.Figure, out: str | Path, title: str) -> Path:
    """Title, lay out, write the PNG and free the figure."""
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return Path(out)


def pca_2d(fit: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Project ``fit`` and ``others`` (rows of the same width) on fit's first two PCs."""
    mean = fit.mean(0)
    if fit.shape[1] <= 2:
        pad = lambda a: np.pad(a, ((0, 0), (0, 2 - a.shape[1])))  # noqa: E731
        return [pad(a) for a in (fit, *others)]
    _, _, vt = np.linalg.svd(fit - mean, full_matrices=False)
    return [(a - mean) @ vt[:2].T for a in (fit, *others)]


def position_labels(labels: np.ndarray | None, rows: int) -> np.ndarray | None:
    """Labels (N,) of N samples, repeated for ``rows`` = N * P embeddings (P positions per
    image, row-major per image as ``evaluate`` stores them); unchanged when P = 1."""
    if labels is None or len(labels) == rows:
        return labels
    if len(labels) == 0 or rows % len(labels):
        return None  # they cannot be aligned: plotted without colours
    return np.repeat(labels, rows // len(labels))


def plot_tokens(samples: dict[str, str | Path], out: str | Path, title: str = "") -> Path:
    """One row per label (strategy): data with reconstructions, and embeddings with tokens.

    samples: label -> path of an ``eval_samples.npz`` (x, recon, z_e, codebook, labels, indices).
    """
    fig, axes = plt.subplots(len(samples), 2, figsize=(10, 4.6 * len(samples)), squeeze=False)
    for row, (label, path) in enumerate(samples.items()):
        s = np.load(path)
        colors = s["labels"] if "labels" in s else None
        ax = axes[row, 0]
        x2, r2 = pca_2d(s["x"], s["recon"])
        ax.scatter(x2[:, 0], x2[:, 1], c=colors, cmap="tab10", s=4, alpha=0.35, label="data")
        ax.scatter(r2[:, 0], r2[:, 1], c="k", s=6, marker=".", label="reconstruction")
        ax.set_title(f"{label}: data and reconstructions")
        ax.legend(loc="best", fontsize=8, markerscale=2)
        ax = axes[row, 1]
        used = np.zeros(len(s["codebook"]), dtype=bool)
        if "indices" in s:
            used[np.unique(s["indices"])] = True
        z2, c2 = pca_2d(s["z_e"], s["codebook"])
        # an image has many embeddings (one per position) but one label
        per_position = position_labels(colors, len(z2))
        ax.scatter(
            z2[:, 0], z2[:, 1], c=per_position, cmap="tab10", s=4, alpha=0.35, label="embeddings"
        )
        ax.scatter(
            c2[~used, 0],
            c2[~used, 1],
            facecolors="none",
            edgecolors="0.4",
            s=16,
            linewidths=0.6,
            label=f"dead tokens ({(~used).sum()})",
        )
        ax.scatter(
            c2[used, 0],
            c2[used, 1],
            c="k",
            marker="x",
            s=18,
            linewidths=0.8,
            label=f"used tokens ({used.sum()})",
        )
        ax.set_title(f"{label}: embeddings and tokens (PCA of embeddings)")
        ax.legend(loc="best", fontsize=8, markerscale=1.5)
    return _save(fig, out, title)


def plot_vs_codebook_size(
    rows: list[dict[str, Any]],
    metrics: list[str],
    out: str | Path,
    *,
    group: str = "",
    title: str = "",
) -> Path:
    """metric against codebook size (log2 axis), one line per strategy (and per ``group`` key)."""
    return plot_against(
        rows,
        "codebook_size",
        metrics,
        out,
        group=group,
        title=title,
        xlabel="codebook size K",
        show_k=True,
    )


def plot_against(
    rows: list[dict[str, Any]],
    x_key: str,
    metrics: list[str],
    out: str | Path,
    *,
    series: str = "strategy",
    group: str = "",
    title: str = "",
    xlabel: str = "",
    show_k: bool = False,
) -> Path:
    """One panel per metric against ``x_key`` (log2 axis); one line per ``series`` value (and
    per ``group`` value, dashed after the first). Failed runs are left out."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.8), squeeze=False)
    lines: dict[tuple, list[tuple[float, dict]]] = defaultdict(list)
    for r in rows:
        if r.get("status", "ok") == "failed" or r.get(x_key) in (None, ""):
            continue
        lines[(str(r.get(series)), r.get(group) if group else None)].append((float(r[x_key]), r))
    groups = sorted(str(k[1]) for k in lines)
    first_group = groups[0] if groups else None
    for ax, metric in zip(axes[0], metrics):
        for (name, g), pts in sorted(lines.items(), key=lambda kv: str(kv[0])):
            pts.sort(key=lambda p: p[0])
            label = name if g is None else f"{name}, {group.split('.')[-1]}={g}"
            ax.plot(
                [p[0] for p in pts],
                [p[1].get(metric) for p in pts],
                marker="o",
                color=COLORS.get(name),
                label=label,
                linestyle="-" if g is None or str(g) == first_group else "--",
            )
        if show_k and metric == "perplexity" and lines:
            ks = sorted({p[0] for pts in lines.values() for p in pts})
            ax.plot(ks, ks, color="0.6", linestyle=":", label="K (maximum)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel(xlabel or x_key)
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    return _save(fig, out, title)


def plot_over_training(
    runs: dict[str, str | Path], metrics: list[str], out: str | Path, title: str = ""
) -> Path:
    """Eval metrics from each run's metrics.jsonl against step; one line per run label."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.8), squeeze=False)
    for label, run_dir in runs.items():
        rows = [r for r in read_metrics(run_dir) if r.get("eval")]
        strategy = next((s for s in COLORS if s in label), None)
        for ax, metric in zip(axes[0], metrics):
            pts = [(r["step"], r[metric]) for r in rows if r.get(metric) is not None]
            if pts:
                ax.plot(*zip(*pts), marker=".", label=label, color=COLORS.get(strategy))
    for ax, metric in zip(axes[0], metrics):
        ax.set_xlabel("step")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    return _save(fig, out, title)


def plot_bars(
    rows: list[dict[str, Any]],
    metrics: list[str],
    out: str | Path,
    title: str = "",
    *,
    label: tuple[str, str] = ("recipe", "strategy"),
    group: str = "codebook_size",
) -> Path:
    """Horizontal bars: one row per ``label`` pair (say recipe and strategy), one bar per value
    of ``group`` (say codebook size), a panel per metric. Failed runs are left out."""
    ok = [r for r in rows if r.get("status", "ok") != "failed" and r.get(metrics[0]) is not None]
    name = lambda r: f"{r[label[0]]} ({r[label[1]]})"  # noqa: E731
    labels = list(dict.fromkeys(name(r) for r in ok))
    groups = list(dict.fromkeys(sorted(r[group] for r in ok)))
    keyed = {(name(r), r[group]): r for r in ok}
    height = 0.8 / max(1, len(groups))
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(4.4 * len(metrics), 0.32 * len(labels) + 1.6), squeeze=False
    )
    y = np.arange(len(labels))
    short = group.split(".")[-1]
    for ax, metric in zip(axes[0], metrics):
        for j, g in enumerate(groups):
            vals = [keyed.get((lab, g), {}).get(metric) for lab in labels]
            vals = [np.nan if v is None else float(v) for v in vals]
            ax.barh(y + j * height, vals, height=height, label=f"{short}={g}")
        ax.set_yticks(y + height * (len(groups) - 1) / 2)
        ax.set_yticklabels(labels if ax is axes[0, 0] else [], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(metric)
        ax.grid(axis="x", alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    return _save(fig, out, title)


def plot_per_scale_over_training(
    curves: dict[str, list[dict[str, Any]]], metric: str, out: str | Path, title: str = ""
) -> Path:
    """One panel per run label; one line per scale of ``metric`` against step. ``curves`` maps a
    label to rows with ``step``, ``scale`` and the metric (e.g. from a multi-scale tokenizer's
    eval rows)."""
    n = max(len(curves), 1)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), squeeze=False, sharey=True)
    for ax, (label, rows) in zip(axes[0], curves.items()):
        by_scale: dict[int, list[tuple[int, float]]] = defaultdict(list)
        for r in rows:
            if r.get(metric) is not None:
                by_scale[int(r["scale"])].append((int(r["step"]), float(r[metric])))
        for scale, pts in sorted(by_scale.items()):
            pts.sort()
            ax.plot(*zip(*pts), marker=".", label=f"p={scale}")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(metric)
    axes[0, 0].legend(fontsize=7)
    return _save(fig, out, title)
