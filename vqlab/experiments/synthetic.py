"""The synthetic replication: standard vs deferred on the papers' 10-peak Gaussian mixture.

Also the base config (:data:`SYNTHETIC_BASE`) that the capacity and init studies start from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vqlab.experiments.protocol import Job, Replication, Rows
from vqlab.experiments.sweep import RUNS_DIR, expand, run_name
from vqlab.reports.markdown import markdown_table
from vqlab.reports.plots import plot_over_training, plot_tokens, plot_vs_codebook_size
from vqlab.training.evaluate import SAMPLES_FILE

# Synthetic mixture: the papers' 10 peaks x 1,000 points; widths, steps and sizes are [open]
# choices (PAPER.md) made here and written into every report.
SYNTHETIC_BASE: dict[str, Any] = {
    "data.name": "gaussian_mixture",
    "data.peaks": 10,
    "data.samples_per_peak": 1000,
    "data.std": 0.5,
    "data.spread": 10.0,
    "model.kind": "mlp",
    "model.hidden": 64,
    "model.depth": 2,
    "vq.update": "ema",
    "vq.beta": 0.25,
    "vq.decay": 0.99,
    "vq.eps": 1e-5,
    "vq.kmeans_iters": 20,
    "vq.init_samples": 10000,
    "train.batch_size": 256,
    "train.lr": 1e-3,
    "train.log_every": 50,
    "train.eval_every": 250,
}
PRESETS = {
    "cpu": {"train.steps": 3000, "train.pretrain_steps": 1500, "sizes": [16, 64, 256]},
    "gpu": {"train.steps": 6000, "train.pretrain_steps": 3000, "sizes": [16, 64, 256, 1024]},
}
SYNTHETIC_COLUMNS = [
    "data.dim",
    "strategy",
    "codebook_size",
    "perplexity",
    "usage",
    "dead_codes",
    "codebook_mean_l2",
    "embedding_mean_l2",
    "coverage_ratio",
    "codebook_mean_cos_dist",
    "effective_dim",
    "quant_mse",
    "recon_mse",
    "modes_with_tokens",
    "mode_entropy",
    "modes_in_recon",
    "recon_mode_accuracy",
    "class_separation",
    "probe_accuracy",
    "seconds",
]


def _find(rows: list[dict], **match: Any) -> dict | None:
    for r in rows:
        if all(str(r.get(k)) == str(v) for k, v in match.items()) and r.get("status") != "failed":
            return r
    return None


def _findings(rows: list[dict], dims: list[int], k: int) -> list[str]:
    """Plain sentences comparing the strategies at the largest K, from the measured rows."""
    lines = []
    for dim in dims:
        s = _find(rows, **{"data.dim": dim, "strategy": "standard", "codebook_size": k})
        d = _find(rows, **{"data.dim": dim, "strategy": "deferred", "codebook_size": k})
        if not (s and d):
            lines.append(f"- dim {dim}, K={k}: a run is missing or failed; see results.csv.")
            continue
        lines.append(
            f"- dim {dim}, K={k}: standard used {k - s['dead_codes']}/{k} codes "
            f"(perplexity {s['perplexity']:.1f}, codebook spread {s['codebook_mean_l2']:.2f} "
            f"against embedding spread {s['embedding_mean_l2']:.2f}); deferred used "
            f"{k - d['dead_codes']}/{k} (perplexity {d['perplexity']:.1f}, spread "
            f"{d['codebook_mean_l2']:.2f} against {d['embedding_mean_l2']:.2f}). Test recon MSE "
            f"{s['recon_mse']:.4g} (standard) against {d['recon_mse']:.4g} (deferred); modes "
            f"holding tokens {s.get('modes_with_tokens')} against {d.get('modes_with_tokens')}."
        )
    return lines


def replicate_synthetic(job: Job) -> Rows:
    """Standard vs deferred on the 10-peak mixture at dim 8 and dim 2, several codebook sizes
    (the mixture is drawn from the seed: no ``--data``)."""
    out, p = job.out, job.settings
    base = {
        **SYNTHETIC_BASE,
        "train.steps": p["train.steps"],
        "train.pretrain_steps": p["train.pretrain_steps"],
    }
    dims = [8, 2]
    runs = []
    for dim in dims:
        grid = {
            "data.dim": [str(dim)],
            "model.latent_dim": [str(dim)],
            "vq.codebook_size": [str(k) for k in p["sizes"]],
            "train.strategy": ["standard", "deferred"],
        }
        runs += expand(base, [], grid)
    rows = job.sweep(runs)
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    k_max = max(p["sizes"])

    def run_dir(dim: int, k: int, strategy: str) -> Path:
        assignment = {
            "data.dim": str(dim),
            "model.latent_dim": str(dim),
            "vq.codebook_size": str(k),
            "train.strategy": strategy,
        }
        return out / RUNS_DIR / run_name(assignment)

    figures = []
    for dim in dims:
        found = {s: run_dir(dim, k_max, s) / SAMPLES_FILE for s in ("standard", "deferred")}
        found = {s: f for s, f in found.items() if f.is_file()}
        if found:
            name = f"tokens_dim{dim}_K{k_max}.png"
            plot_tokens(found, plots / name, f"10-peak mixture, dim {dim}, K={k_max}")
            figures.append((f"Tokens against data and embeddings, dim {dim}, K={k_max}", name))
    plot_vs_codebook_size(
        rows,
        ["perplexity", "usage", "codebook_mean_l2", "recon_mse"],
        plots / "vs_codebook_size.png",
        group="data.dim",
        title="standard vs deferred against codebook size",
    )
    figures.append(
        ("Perplexity, usage, codebook spread and recon MSE against K", "vs_codebook_size.png")
    )
    for dim in dims:
        runs = {s: run_dir(dim, k_max, s) for s in ("standard", "deferred")}
        runs = {s: r for s, r in runs.items() if (r / "metrics.jsonl").is_file()}
        name = f"spread_over_training_dim{dim}_K{k_max}.png"
        plot_over_training(
            runs,
            ["codebook_mean_l2", "embedding_mean_l2", "perplexity"],
            plots / name,
            f"dim {dim}, K={k_max}",
        )
        figures.append((f"Codebook spread over training, dim {dim}, K={k_max}", name))
    _write_synthetic_report(job, rows, figures, base, dims, k_max)
    return rows


def _write_synthetic_report(job: Job, rows, figures, base, dims, k_max) -> None:
    settings = ", ".join(f"`{k}={v}`" for k, v in base.items())
    text = [
        "# Synthetic replication: standard vs deferred quantization",
        "",
        "Ten Gaussians with equal std and means uniform in [-spread, spread]^dim (PAPER.md, "
        "'Synthetic data'); MLP encoder/decoder; EMA codebook. Both strategies get the same "
        "total step budget, the same k-means init (same sample size, k-means++ then Lloyd) and "
        "the same seed; deferred spends `train.pretrain_steps` of it as a plain autoencoder. "
        "Metrics are on a held-out test draw from the same mixture (DESIGN.md metric names; "
        "`recon_mse` on the raw data scale).",
        "",
        "## What was measured",
        "",
        *_findings(rows, dims, k_max),
        "",
        "## All runs",
        "",
        markdown_table(rows, ["status", *SYNTHETIC_COLUMNS]),
        "",
        "## Plots",
        "",
    ]
    for caption, name in figures:
        text += [f"### {caption}", "", f"![{caption}](plots/{name})", ""]
    text += job.how_made(
        f"- preset: `{job.preset}`; runs trained {job.jobs} at a time (`--jobs`)",
        f"- settings: {settings}",
    )
    job.write_report(text)


REPLICATION = Replication("synthetic", PRESETS, replicate_synthetic)
