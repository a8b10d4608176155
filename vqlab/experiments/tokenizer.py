"""The papers' tokenizer table on CIFAR-10: standard against deferred with the tokenizer losses.

``vqlab replicate tokenizer --data DATA --preset cpu --out DIR``: at K = 1024, 4096 and 16384,
both strategies with MSE + perceptual loss (no GAN, as the papers train), equal budgets; plus
one pair with the GAN on, to test the papers' remark that a GAN loss can hide the shrinkage.
Every run is then scored by ``vqlab evaluate``'s metrics in the *evaluation* feature net, never
the perceptual net it trained against (the report names both by sha256): r-FD and r-KD with the
real-against-real floor, MSE, perceptual distance, codebook spread, perplexity and usage.

The two feature nets are trained first (``featnet/`` and ``percepnet/`` in ``--out``) unless
the preset names existing folders; a finished net, like a finished run, is never retrained.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from vqlab.experiments.cifar import CIFAR_BASE, CIFAR_PRESETS
from vqlab.experiments.protocol import Job, Replication, Rows
from vqlab.experiments.sweep import RUNS_DIR, check_preset, expand
from vqlab.reports.markdown import markdown_table
from vqlab.reports.results import write_results

# the cpu preset: the cifar10 replication's cpu model at half its step budget, the losses of
# the papers' tokenizer table, ~1 hour on 2 CPU cores for the 8 runs (plus the feature nets)
TOKENIZER_PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {
        **{k: v for k, v in CIFAR_PRESETS["cpu"].items() if k != "sizes"},
        # half the cifar10 preset's budget: the perceptual net's forward and backward about
        # doubles a step's cost, and the 8 runs must fit about an hour on 2 cores
        "train.steps": 500,
        "train.pretrain_steps": 250,
        "train.eval_every": 125,
        "loss.perceptual": 0.1,  # MaskGIT's official tokenizer weight; vqlab's choice here
        "sizes": [1024, 4096, 16384],
        "gan_size": 4096,
        "loss.gan": 0.1,
        "loss.disc_layers": 2,  # 32x32 images -> a 6x6 grid of patch logits
        "featnet_steps": 0,  # 0: the feature net's own default size
        "percepnet_steps": 0,
    },
    # the papers' scale: 128-pixel image folders (ImageNet-100), 16x16 latents, K = 16384
    "gpu": {
        "data.name": "image_folder",
        "data.image_size": 128,
        "model.width": 128,
        "model.downsample": 8,
        "model.latent_dim": 32,
        "train.batch_size": 64,
        "train.steps": 20000,
        "train.pretrain_steps": 10000,
        "train.lr": 2e-4,
        "train.eval_every": 2000,
        "train.log_every": 100,
        "vq.init_samples": 262144,
        "vq.kmeans_iters": 20,
        "data.test_limit": 5000,
        "loss.perceptual": 0.1,
        "sizes": [16384],
        "gan_size": 16384,
        "loss.gan": 0.1,
        "featnet_steps": 0,
        "percepnet_steps": 0,
    },
}
COLUMNS = [
    "arm", "strategy", "codebook_size", "r_fd", "floor_fd", "r_kd", "recon_mse",
    "perceptual_distance", "psnr", "ssim", "codebook_mean_cos_dist", "codebook_mean_l2",
    "perplexity", "usage", "seconds",
]  # fmt: skip


def tokenizer_runs(data: str | Path, preset: str, percepnet: str | Path) -> tuple[list, dict]:
    """(name, assignment, config) of every run of a preset, validated before any run."""
    check_preset(preset, TOKENIZER_PRESETS)
    p = dict(TOKENIZER_PRESETS[preset])
    sizes, gan_size, gan = p.pop("sizes"), p.pop("gan_size"), p.pop("loss.gan")
    p.pop("featnet_steps"), p.pop("percepnet_steps")
    base = {**CIFAR_BASE, **p, "data.path": str(data), "loss.perceptual_net": str(percepnet)}
    strategies = ["standard", "deferred"]
    runs = expand(
        base, [], {"vq.codebook_size": [str(k) for k in sizes], "train.strategy": strategies}
    )
    runs += expand(
        base,
        [],
        {"vq.codebook_size": [str(gan_size)], "train.strategy": strategies, "loss.gan": [str(gan)]},
    )
    return runs, base


FEATURE_NETS = {"featnet": ("resnet", 0), "percepnet": ("vgg", 1)}


def feature_net(out: Path, which: str, data: str | Path, preset: str, progress: bool) -> Path:
    """Train (or reuse) ``out/featnet`` (the evaluation net: resnet, seed 0) or
    ``out/percepnet`` (the perceptual loss's: vgg, seed 1)."""
    from vqlab.evaluation.featnet import train_featnet

    p = TOKENIZER_PRESETS[preset]
    name = "image_folder" if p.get("data.name") == "image_folder" else "cifar10"
    arch, seed = FEATURE_NETS[which]
    if not (out / which / "featnet.json").is_file():
        steps = p[f"{which}_steps"]
        kw = {"steps": steps} if steps else {}
        train_featnet(name, data, out / which, arch=arch, seed=seed, progress=progress, **kw)
    return out / which


def _feature_nets(out: Path, data: str | Path, preset: str, progress: bool) -> tuple[Path, Path]:
    """Both nets: (the scoring featnet, the perceptual percepnet)."""
    return tuple(feature_net(out, w, data, preset, progress) for w in ("featnet", "percepnet"))


def _arm(row: dict) -> str:
    return "GAN" if float(row.get("loss.gan") or 0) > 0 else "MSE+perceptual"


def replicate_tokenizer(job: Job) -> Rows:
    """The tokenizer table (module docstring): report.md, results.csv, plots/."""
    from vqlab.evaluation.featnet import load_featnet
    from vqlab.runs.evaluate import evaluate_tokenizer

    out, data, preset = job.out, job.data, job.preset
    out.mkdir(parents=True, exist_ok=True)
    # the perceptual net before the runs, the scoring net only when they are done
    percepnet = feature_net(out, "percepnet", data, preset, job.progress)
    runs, base = tokenizer_runs(data, preset, percepnet)
    rows = job.sweep(runs)
    featnet = feature_net(out, "featnet", data, preset, job.progress)
    limit = int(base.get("data.test_limit", 0))
    for row in rows:
        row["arm"] = _arm(row)
        run_dir = out / RUNS_DIR / row["run"]
        if row.get("status") == "failed":
            continue
        done = run_dir / "eval" / "eval.json"  # a finished evaluation is not run again
        if done.is_file():
            scores = json.loads(done.read_text())
        else:
            scores = evaluate_tokenizer(run_dir, data, featnet, run_dir / "eval", limit=limit)
        scores["eval_seconds"] = scores.pop("seconds")
        row.update({k: v for k, v in scores.items() if not isinstance(v, list) and k not in row})
    write_results(out / "results.csv", rows)
    _recon_grids(out, rows)
    sha = {
        n: load_featnet(p).info["sha256"][:12]
        for n, p in (("eval", featnet), ("percep", percepnet))
    }
    _write_report(job, rows, base, sha)
    return rows


def _recon_grids(out: Path, rows: list[dict]) -> None:
    """plots/recon_K<k>_<arm>.png: test images, then the standard and deferred reconstructions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs: dict[tuple, dict[str, Path]] = {}
    for r in rows:
        if r.get("status") != "failed":
            pairs.setdefault((r["codebook_size"], r["arm"]), {})[r["strategy"]] = (
                out / RUNS_DIR / r["run"]
            )
    (out / "plots").mkdir(exist_ok=True)
    for (k, arm), dirs in pairs.items():
        if set(dirs) != {"standard", "deferred"}:
            continue
        samples = {s: np.load(d / "eval_samples.npz") for s, d in dirs.items()}
        x = samples["standard"]["x"]
        n = min(8, x.shape[0])
        side = int(round((x.shape[1] / 3) ** 0.5))
        panels = [("test images", x), *((s, samples[s]["recon"]) for s in ("standard", "deferred"))]
        fig, axes = plt.subplots(3, n, figsize=(n * 1.1, 3.6), squeeze=False)
        for row_i, (title, arr) in enumerate(panels):
            for j in range(n):
                img = arr[j].reshape(3, side, side).transpose(1, 2, 0)
                axes[row_i][j].imshow(np.clip((img + 1) / 2, 0, 1))
                axes[row_i][j].axis("off")
            axes[row_i][0].set_title(title, fontsize=8, loc="left")
        fig.suptitle(f"K={k}, {arm}", fontsize=9)
        fig.savefig(out / "plots" / f"recon_K{k}_{arm.replace('+', '_')}.png", dpi=110)
        plt.close(fig)


def _findings(rows: list[dict]) -> list[str]:
    by = {(r["arm"], r["codebook_size"], r["strategy"]): r for r in rows if "r_fd" in r}
    lines = []
    for arm, k in sorted({(a, k) for a, k, _ in by}):
        s, d = by.get((arm, k, "standard")), by.get((arm, k, "deferred"))
        if not (s and d):
            lines.append(f"- {arm}, K={k}: a run is missing or failed; see results.csv.")
            continue
        lines.append(
            f"- {arm}, K={k}: r-FD {s['r_fd']:.3f} (standard) vs {d['r_fd']:.3f} (deferred); "
            f"perplexity {s['perplexity']:.0f} vs {d['perplexity']:.0f}; usage "
            f"{100 * s['usage']:.1f}% vs {100 * d['usage']:.1f}%; MSE {s['recon_mse']:.4f} vs "
            f"{d['recon_mse']:.4f}."
        )
    lines += _gan_finding(by)
    return lines


def _gan_finding(by: dict) -> list[str]:
    """The papers' remark that a GAN loss can hide the shrinkage: does usage or perplexity
    differ with and without it, at the GAN pair's K?"""
    ks = {k for arm, k, _ in by if arm == "GAN"}
    out = []
    for k in sorted(ks):
        pairs = [
            (by.get(("GAN", k, s)), by.get(("MSE+perceptual", k, s)))
            for s in ("standard", "deferred")
        ]
        if not all(g and m for g, m in pairs):
            continue
        parts = [
            f"{s}: usage {100 * m['usage']:.1f}% -> {100 * g['usage']:.1f}%, perplexity "
            f"{m['perplexity']:.0f} -> {g['perplexity']:.0f}, "
            f"r-FD {m['r_fd']:.3f} -> {g['r_fd']:.3f}"
            for s, (g, m) in zip(("standard", "deferred"), pairs)
        ]
        out.append(f"- With the GAN on at K={k} (without -> with): " + "; ".join(parts) + ".")
    return out


def _write_report(job: Job, rows, base, sha) -> None:
    out, preset, data = job.out, job.preset, job.data
    train_min = sum(float(r.get("seconds") or 0) for r in rows) / 60
    eval_min = sum(float(r.get("eval_seconds") or 0) for r in rows) / 60
    floor = next((r["floor_fd"] for r in rows if "floor_fd" in r), float("nan"))
    text = [
        f"# CIFAR-10 tokenizer table ({preset} preset): standard vs deferred",
        "",
        "Conv VQ-VAE trained with MSE + perceptual loss (LPIPS's baseline form in the feature "
        f"maps of percepnet {sha['percep']}, a vqlab-trained VGG-style classifier), EMA codebook, "
        "equal step budgets. The GAN arm adds a PatchGAN discriminator (hinge loss, taming's "
        "adaptive weight).",
        "",
        f"r-FD and r-KD are FD/KD in the feature space of featnet {sha['eval']} (a vqlab-trained "
        "ResNet, a different network and seed from the perceptual one): **not FID**. "
        f"Real-against-real floor (train subset against the test images, same N): FD {floor:.3f}.",
        "",
        f"Data: `{data}`. If this is `../shared/data/cifar10`, it is the JPEG re-encoded copy of "
        "CIFAR-10.",
        "",
        "## What was measured",
        "",
        *_findings(rows),
        "",
        "## All runs",
        "",
        markdown_table(rows, ["status", *COLUMNS]),
        "",
        "## Reconstructions",
        "",
        *(f"![{p.stem}](plots/{p.name})" for p in sorted((out / "plots").glob("recon_*.png"))),
        "",
        *job.how_made(
            f"- preset: `{preset}`; runs trained {job.jobs} at a time",
            f"- compute: {train_min:.1f} min of training and {eval_min:.1f} min of evaluation "
            "summed over the runs (the wall time below is this invocation's; finished runs and "
            "evaluations are reused, not redone)",
            "- settings: " + ", ".join(f"`{k}={v}`" for k, v in base.items()),
        ),
    ]
    job.write_report(text)


REPLICATION = Replication("tokenizer", TOKENIZER_PRESETS, replicate_tokenizer, needs_data=True)
