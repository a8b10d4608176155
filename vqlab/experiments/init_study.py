"""How the codebook is initialised (the papers' open question), at an equal step budget.

Each arm is (strategy, vq.init): k-means on the untrained encoder (standard), k-means on the
pretrained encoder (deferred), k-means++ seeding only, random normal and random uniform (both
fitted to the data's per-dimension statistics), random data points, and the means of a diagonal
Gaussian mixture fitted by EM (:mod:`vqlab.quantizers.gmm`) under either schedule.
"""

from __future__ import annotations

from pathlib import Path

from vqlab.experiments.protocol import Job, Replication, Rows
from vqlab.experiments.sweep import expand
from vqlab.experiments.synthetic import SYNTHETIC_BASE
from vqlab.reports.markdown import markdown_table
from vqlab.reports.plots import plot_bars
from vqlab.reports.results import write_results

ARMS = [
    ("standard", "kmeans"),
    ("deferred", "kmeans"),
    ("standard", "kmeans++"),
    ("deferred", "kmeans++"),
    ("standard", "random_normal"),
    ("standard", "random_uniform"),
    ("standard", "sample"),
    ("deferred", "random_normal"),
    ("standard", "gmm"),
    ("deferred", "gmm"),
]
STEPS = {"cpu": (3000, 1500), "gpu": (6000, 3000)}
COLUMNS = ["status", "data", "strategy", "init", "perplexity", "usage", "codebook_mean_l2",
           "coverage_ratio", "recon_mse", "modes_with_tokens", "token_probe_accuracy"]  # fmt: skip


def init_runs(preset: str, data: str | Path | None) -> list:
    steps, pre = STEPS[preset]
    base = {**SYNTHETIC_BASE, "train.steps": steps, "train.pretrain_steps": pre,
            "data.dim": 8, "model.latent_dim": 8, "vq.codebook_size": 256}  # fmt: skip
    runs = []
    for strategy, init in ARMS:
        runs += expand(base, [], {"train.strategy": [strategy], "vq.init": [init]})
    if data is not None:
        from vqlab.experiments.cifar import CIFAR_BASE, CIFAR_PRESETS

        conv = {k: v for k, v in CIFAR_PRESETS[preset].items() if k != "sizes"}
        cbase = {**CIFAR_BASE, **conv, "data.path": str(data), "vq.codebook_size": 1024}
        for strategy, init in ARMS:
            runs += expand(cbase, [], {"data.name": ["cifar10"], "train.strategy": [strategy],
                                       "vq.init": [init]})  # fmt: skip
    return runs


def replicate_init(job: Job) -> Rows:
    """Every init arm on the synthetic mixture (and CIFAR-10 with ``--data``) -> report.md."""
    out, preset = job.out, job.preset
    runs = init_runs(preset, job.data)
    rows = job.sweep(runs)
    for row, (_, _, cfg) in zip(rows, runs):
        row["data"], row["init"] = cfg.data.name, cfg.vq.init
    (out / "plots").mkdir(exist_ok=True)
    figures = []
    for data_name in dict.fromkeys(r["data"] for r in rows):
        name = f"init_{data_name}.png"
        plot_bars(
            [r for r in rows if r["data"] == data_name],
            ["perplexity", "usage", "recon_mse"],
            out / "plots" / name,
            f"codebook init at an equal budget: {data_name}",
            label=("init", "strategy"),
            group="data",
        )
        figures += [f"![init arms, {data_name}](plots/{name})", ""]
    text = [
        f"# Codebook initialisation at an equal budget ({preset} preset)",
        "",
        "Synthetic: 10-peak mixture at dim 8, K=256 (settings of `vqlab replicate synthetic`). "
        "`random_normal`/`random_uniform` draw codes from the per-dimension mean/std or box of "
        "the encoder outputs at init time; `sample` takes random encoder outputs; `kmeans++` is "
        "the seeding alone; `kmeans` adds Lloyd iterations; `gmm` takes the means of a diagonal "
        "Gaussian mixture fitted by EM from that k-means (`vq.kmeans_iters` Lloyd then as many "
        "EM steps).",
        "",
        markdown_table(rows, COLUMNS),
        "",
        *figures,
        *job.how_made(f"- preset: `{preset}`; {job.jobs} runs at a time"),
    ]
    job.write_report(text)
    write_results(out / "results.csv", rows)
    return rows


REPLICATION = Replication("init", STEPS, replicate_init)
