"""Embeddings collapse (arXiv 2411.16550): too little encoder capacity merges the classes.

Sweeps the encoder's hidden width on the synthetic mixture (and, with ``--data``, the conv base
width on CIFAR-10) and measures how separable the embeddings and the tokens stay.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vqlab.experiments.protocol import Job, Replication, Rows
from vqlab.experiments.sweep import expand
from vqlab.experiments.synthetic import SYNTHETIC_BASE
from vqlab.reports.markdown import markdown_table
from vqlab.reports.plots import plot_against

PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {
        "widths": [2, 4, 8, 16, 32, 64, 128],
        "synthetic": {"train.steps": 3000, "train.pretrain_steps": 1500},
        "conv_widths": [4, 8, 16],
        "conv": {
            "train.steps": 600,
            "train.pretrain_steps": 300,
            "train.batch_size": 64,
            "vq.codebook_size": 1024,
        },
    },
    "gpu": {
        "widths": [2, 4, 8, 16, 32, 64, 128],
        "synthetic": {"train.steps": 6000, "train.pretrain_steps": 3000},
        "conv_widths": [8, 16, 32, 64, 128],
        "conv": {
            "train.steps": 4000,
            "train.pretrain_steps": 2000,
            "train.batch_size": 256,
            "vq.codebook_size": 1024,
        },
    },
}
METRICS = ["class_separation", "probe_accuracy", "token_probe_accuracy",
           "embedding_effective_rank", "recon_mse", "perplexity"]  # fmt: skip


def capacity_runs(preset: str, data: str | Path | None) -> list:
    p = PRESETS[preset]
    base = {**SYNTHETIC_BASE, **p["synthetic"], "data.dim": 8, "model.latent_dim": 8,
            "vq.codebook_size": 64}  # fmt: skip
    grid = {"model.hidden": [str(w) for w in p["widths"]],
            "train.strategy": ["standard", "deferred"]}  # fmt: skip
    runs = expand(base, [], grid)
    if data is not None:
        from vqlab.experiments.cifar import CIFAR_BASE, CIFAR_PRESETS

        conv = {k: v for k, v in CIFAR_PRESETS[preset].items() if k != "sizes"}
        conv_base = {**CIFAR_BASE, **conv, **p["conv"], "data.path": str(data)}
        conv_grid = {"model.width": [str(w) for w in p["conv_widths"]],
                     "train.strategy": ["standard", "deferred"]}  # fmt: skip
        runs += expand(conv_base, [], conv_grid)
    return runs


def replicate_capacity(job: Job) -> Rows:
    """Encoder capacity sweep -> results.csv, plots against width, report.md."""
    out, preset, data = job.out, job.preset, job.data
    rows = job.sweep(capacity_runs(preset, data))
    (out / "plots").mkdir(exist_ok=True)
    mlp_rows = [r for r in rows if "model.hidden" in r and r.get("model.hidden")]
    plot_against(
        mlp_rows,
        "model.hidden",
        METRICS,
        out / "plots" / "synthetic_vs_width.png",
        xlabel="encoder hidden width",
        title="Gaussian mixture: capacity sweep",
    )
    text = [
        f"# Embeddings collapse: encoder capacity sweep ({preset} preset)",
        "",
        "Synthetic: 10-peak mixture at dim 8 (as `vqlab replicate synthetic`), K=64, MLP encoder "
        "whose hidden width is the capacity knob. `class_separation` is the mean distance "
        "between class means over the mean distance to the own class mean; `probe_accuracy` a "
        "linear probe on the embeddings, `token_probe_accuracy` the same probe on the quantized "
        "vectors; `embedding_effective_rank` the entropy rank of the embeddings.",
        "",
        "![synthetic capacity sweep](plots/synthetic_vs_width.png)",
        "",
        markdown_table(mlp_rows, ["status", "model.hidden", "strategy", *METRICS, "usage"]),
        "",
    ]
    conv_rows = [r for r in rows if r.get("model.width")]
    if conv_rows:
        plot_against(
            conv_rows,
            "model.width",
            METRICS,
            out / "plots" / "cifar_vs_width.png",
            xlabel="conv base width",
            title="CIFAR-10: capacity sweep",
        )
        text += [
            f"CIFAR-10 (`{data}`; the shared copy is JPEG re-encoded), conv VQ-VAE, "
            f"K={PRESETS[preset]['conv']['vq.codebook_size']}; class "
            "metrics on embeddings mean-pooled per image.",
            "",
            "![CIFAR-10 capacity sweep](plots/cifar_vs_width.png)",
            "",
            markdown_table(conv_rows, ["status", "model.width", "strategy", *METRICS, "usage"]),
            "",
        ]
    text += job.how_made(f"- preset: `{preset}`; {job.jobs} runs at a time")
    job.write_report(text)
    return rows


REPLICATION = Replication("capacity", PRESETS, replicate_capacity)
