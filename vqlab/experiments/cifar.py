"""CIFAR-10: codebook size over powers of two, standard vs deferred at an equal step budget.

The papers' figure 4: test reconstruction MSE, perplexity, usage and codebook spread against K.
The data copy is whatever ``--data`` points at; ``../shared/data/cifar10`` is a JPEG re-encoding
of CIFAR-10, so pixels differ slightly from the original batches (every report says which).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vqlab.experiments.protocol import Job, Replication, Rows
from vqlab.experiments.sweep import RUNS_DIR, check_preset, expand, run_name
from vqlab.reports.markdown import markdown_table
from vqlab.reports.plots import plot_over_training, plot_vs_codebook_size

# Sizes, widths and steps are [open] in the papers; these are vqlab's choices, stated in reports.
CIFAR_BASE: dict[str, Any] = {
    "data.name": "cifar10",
    "model.kind": "conv",
    "model.latent_dim": 64,
    "model.downsample": 4,  # 32x32 -> 8x8 latents, as in the reference run of the issue
    "vq.update": "ema",
    "vq.beta": 0.25,
    "vq.decay": 0.99,
    "vq.init": "kmeans",
}
_CPU: dict[str, Any] = {  # a small model, few steps, 2,000 test images
    "model.width": 16,
    "train.batch_size": 64,
    "train.steps": 1000,
    "train.pretrain_steps": 500,
    "train.lr": 5e-4,
    "train.eval_every": 250,
    "train.log_every": 50,
    "vq.init_samples": 32768,
    "vq.kmeans_iters": 10,
    "data.test_limit": 2000,
}
CIFAR_PRESETS: dict[str, dict[str, Any]] = {
    # ~30 min on 2 CPU cores: K up to 4096
    "cpu": {**_CPU, "sizes": [256, 1024, 4096]},
    # the papers' full trend on 2 CPU cores: the cpu preset's model and budget at K = 2^4 ..
    # 2^16; the k-means sample grows to 2 K vectors where K passes 16384 (k-means needs at
    # least one per code). Measured with --jobs 2 on an idle machine (results/cifar10-wide-cpu):
    # 230-290 s a run at K <= 4096, 300-350 at 8192, 370-470 at 16384, 610-780 at 32768 and
    # 1740-2110 at 65536 (the seeding and the Lloyd steps grow as N K): ~2.5 hours in all
    "cpu-wide": {**_CPU, "sizes": [2**p for p in range(4, 17)]},
    # one H100, a few minutes a run: the reference run's scale (D=64, 8x8, batch 256, 4000 steps)
    "gpu": {
        "model.width": 64,
        "train.batch_size": 256,
        "train.steps": 4000,
        "train.pretrain_steps": 2000,
        "train.lr": 3e-4,
        "train.eval_every": 500,
        "train.log_every": 100,
        "vq.init_samples": 262144,
        "vq.kmeans_iters": 20,
        "data.test_limit": 0,
        "sizes": [2**p for p in range(6, 17)],
    },
}
BOTH = ("standard", "deferred")
COLUMNS = [
    "strategy", "codebook_size", "recon_mse", "perplexity", "usage", "dead_codes",
    "codebook_mean_l2", "codebook_mean_cos_dist", "embedding_mean_l2", "coverage_ratio",
    "effective_dim", "quant_mse", "probe_accuracy", "token_probe_accuracy", "seconds",
]  # fmt: skip


def cifar_runs(data: str | Path, preset: str) -> list:
    """The grid of (name, assignment, config) for a preset; validated before any run.

    Where K exceeds half the preset's ``vq.init_samples``, that run's k-means sample is 2 K
    vectors instead (the encoder gives 64 per image, so it is always there to draw)."""
    check_preset(preset, CIFAR_PRESETS)
    p = dict(CIFAR_PRESETS[preset])
    sizes = p.pop("sizes")
    base = {**CIFAR_BASE, **p, "data.path": str(data)}
    runs = []
    for k in sizes:
        values = {**base, "vq.init_samples": max(int(base["vq.init_samples"]), 2 * k)}
        grid = {"vq.codebook_size": [str(k)], "train.strategy": ["standard", "deferred"]}
        runs += expand(values, [], grid)
    return runs, base, sizes


def _findings(rows: list[dict], sizes: list[int]) -> list[str]:
    by = {
        (r.get("strategy"), r.get("codebook_size")): r for r in rows if r.get("status") != "failed"
    }
    # each run's status by its grid point, for the sizes without both runs finished
    status = {
        (r.get("train.strategy"), str(r.get("vq.codebook_size"))): r.get("status") for r in rows
    }
    lines = []
    for k in sizes:
        s, d = by.get(("standard", k)), by.get(("deferred", k))
        if not (s and d):
            states = "; ".join(f"{st}: {status.get((st, str(k)), 'missing')}" for st in BOTH)
            lines.append(f"- K={k}: no comparison yet ({states}); see results.csv.")
            continue
        mse = (d["recon_mse"] / s["recon_mse"] - 1) * 100
        lines.append(
            f"- K={k}: perplexity {s['perplexity']:.0f} (standard) vs {d['perplexity']:.0f} "
            f"(deferred); usage {100 * s['usage']:.1f}% vs {100 * d['usage']:.1f}%; test MSE "
            f"{s['recon_mse']:.4f} vs {d['recon_mse']:.4f} (deferred {mse:+.0f}%)."
        )
    return lines + _trend(by, sizes)


def _with_grid_point(rows: list[dict]) -> list[dict]:
    """Rows whose strategy and K show even where no summary gave them (a pending or failed run)."""
    return [
        {"strategy": r.get("train.strategy"), "codebook_size": r.get("vq.codebook_size"), **r}
        for r in rows
    ]


def _trend(by: dict, sizes: list[int]) -> list[str]:
    """The papers' two claims over K: where standard has the lower test MSE, and whether its
    perplexity flattens past 2^13 while deferred's keeps rising."""
    both = [k for k in sizes if ("standard", k) in by and ("deferred", k) in by]
    if len(both) < 3:
        return []
    wins = [k for k in both if by[("standard", k)]["recon_mse"] < by[("deferred", k)]["recon_mse"]]
    lines = [
        "- Standard has the lower test MSE at "
        + (f"K = {', '.join(map(str, wins))}" if wins else "no K")
        + f" of the {len(both)} sizes (the papers: standard is better at small K)."
    ]
    big = [k for k in both if k >= 2**13]
    if len(big) >= 2:
        lo, hi = big[0], big[-1]
        ppl = {s: (by[(s, lo)]["perplexity"], by[(s, hi)]["perplexity"]) for s in BOTH}
        growth = {s: b / a for s, (a, b) in ppl.items()}
        lines.append(
            f"- From K={lo} to K={hi} ({hi // lo}x the codes) perplexity grows "
            f"{growth['standard']:.2f}x for standard ({ppl['standard'][0]:.0f} -> "
            f"{ppl['standard'][1]:.0f}) and {growth['deferred']:.2f}x for deferred "
            f"({ppl['deferred'][0]:.0f} -> {ppl['deferred'][1]:.0f}) "
            "(the papers: standard flattens after 2^13, deferred keeps rising)."
        )
    return lines


def replicate_cifar10(job: Job) -> Rows:
    """Standard vs deferred on CIFAR-10 over codebook sizes; report.md, results.csv, plots/."""
    out, preset, data = job.out, job.preset, job.data
    runs, base, sizes = cifar_runs(data, preset)
    # decode once in this process so parallel workers share the cache instead of racing
    from vqlab.data.dataset import load_dataset

    load_dataset(runs[0][2].data, seed=0)
    rows = job.sweep(runs)
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    plot_vs_codebook_size(
        rows,
        ["recon_mse", "perplexity", "usage", "codebook_mean_l2", "codebook_mean_cos_dist"],
        plots / "vs_codebook_size.png",
        title=f"CIFAR-10 ({preset} preset): standard vs deferred against codebook size",
    )

    def trained(k: int) -> dict[str, Path]:
        dirs = {s: out / RUNS_DIR / run_name({"vq.codebook_size": str(k), "train.strategy": s})
                for s in BOTH}  # fmt: skip
        return {s: d for s, d in dirs.items() if (d / "metrics.jsonl").is_file()}

    # the largest K, or in a sweep cut short the largest K that has a run to show
    k = max((k for k in sizes if trained(k)), default=max(sizes))
    run_dirs = trained(k)
    plot_over_training(
        run_dirs,
        ["codebook_mean_l2", "codebook_mean_cos_dist", "perplexity"],
        plots / f"spread_over_training_K{k}.png",
        f"CIFAR-10, K={k}",
    )
    text = [
        f"# CIFAR-10: codebook size sweep ({preset} preset)",
        "",
        "Conv VQ-VAE (taming-style residual blocks, GroupNorm), EMA codebook, plain "
        "straight-through estimator, MSE loss only. Both strategies get the same total step "
        "budget and the same k-means init settings; deferred trains as a plain autoencoder for "
        "`train.pretrain_steps` first. `recon_mse` is per element on images scaled to [-1, 1] "
        "(x / 127.5 - 1); multiply by 0.25 for the [0, 1] scale.",
        "",
        f"Data: `{data}`. If this is `../shared/data/cifar10`, it is the JPEG re-encoded copy of "
        "CIFAR-10 (pixels differ slightly from the original python batches).",
        "",
        "## What was measured",
        "",
        *_findings(rows, sizes),
        "",
        "## All runs",
        "",
        markdown_table(_with_grid_point(rows), ["status", *COLUMNS]),
        "",
        "## Plots",
        "",
        "![metrics against codebook size](plots/vs_codebook_size.png)",
        "",
        f"![codebook spread over training](plots/spread_over_training_K{k}.png)",
        "",
        *job.how_made(
            f"- preset: `{preset}`; runs trained {job.jobs} at a time",
            "- settings: " + ", ".join(f"`{k}={v}`" for k, v in base.items()),
        ),
    ]
    job.write_report(text)
    return rows


REPLICATION = Replication("cifar10", CIFAR_PRESETS, replicate_cifar10, needs_data=True,
                          one_sweep=True)  # fmt: skip
