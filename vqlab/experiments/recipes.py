"""The anti-collapse recipes users reach for, in one harness, at an equal budget on CIFAR-10.

Every arm trains the same conv VQ-VAE on the same data with the same step budget, init sample
and evaluation; only the quantizer recipe (and the schedule, for deferred) differs:

- ``plain``: EMA codebook, k-means init, straight-through estimator;
- ``restart``: dead-code restart (``vq.dead_code_threshold``);
- ``rotation``: the rotation trick instead of straight-through (arXiv 2410.06424);
- ``cosine``: L2-normalised codes;
- ``low_dim``: codes in a low-dimensional space behind projections (``vq.code_dim``);
- ``simvq``: a frozen codebook through a learned linear map (arXiv 2411.02038);
- ``fsq``: no learned codebook at all, finite scalar quantization (arXiv 2309.15505) with the
  paper's recommended levels whose product is nearest K (1000 for 1024, 4375 for 4096, 15360
  for 16384);
- ``lfq``: lookup-free quantization (MAGVIT-v2), log2 K binary channels with its entropy penalty;

each under the standard schedule and under deferred quantization; plus the peer library
(vector-quantize-pytorch 1.32.0) inside the same model: its out-of-the-box settings, and its
dead-code restart at the issue's reference settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vqlab.experiments.cifar import CIFAR_BASE, CIFAR_PRESETS
from vqlab.experiments.protocol import Job, Replication, Rows
from vqlab.experiments.sweep import check_preset, expand
from vqlab.reports.markdown import markdown_table
from vqlab.reports.plots import plot_bars
from vqlab.reports.results import write_results

RESTART_THRESHOLD = 2.0  # the reference run (vector-quantize-pytorch, threshold 2)
CODE_DIM = 8
# name -> (vq.* overrides, strategies it runs under)
BOTH = ("standard", "deferred")
ARMS: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "plain": ({}, BOTH),
    "restart": ({"vq.dead_code_threshold": RESTART_THRESHOLD}, BOTH),
    "rotation": ({"vq.estimator": "rotation"}, BOTH),
    "cosine": ({"vq.normalize": True}, BOTH),
    "low_dim": ({"vq.code_dim": CODE_DIM}, BOTH),
    "simvq": ({"vq.simvq": True, "vq.update": "grad"}, BOTH),
    # what users pick instead of a learned codebook: implicit grids that cannot collapse
    "fsq": ({"vq.kind": "fsq"}, BOTH),
    "lfq": ({"vq.kind": "lfq"}, BOTH),
    # the peer's out-of-the-box VectorQuantize(dim, K): its own random init, decay 0.8,
    # commitment weight 1, rotation trick on
    "peer_default": (
        {
            "vq.impl": "vector_quantize_pytorch",
            "vq.init": "none",
            "vq.decay": 0.8,
            "vq.beta": 1.0,
            "vq.estimator": "rotation",
        },
        ("standard",),
    ),  # fmt: skip
    # the peer with the reference's dead-code restart, on vqlab's k-means init sample
    "peer_restart": (
        {"vq.impl": "vector_quantize_pytorch", "vq.dead_code_threshold": RESTART_THRESHOLD},
        BOTH,
    ),
}
PRESETS: dict[str, dict[str, Any]] = {
    # CIFAR's cpu model, fewer steps, on 2 CPU cores with --jobs 2: K=1024 and 4096 ~60 min,
    # K=16384 ~70 min more (19 runs of ~7 min)
    "cpu": {
        **{k: v for k, v in CIFAR_PRESETS["cpu"].items() if k != "sizes"},
        "train.steps": 500,
        "train.pretrain_steps": 250,
        "train.eval_every": 250,
        "data.test_limit": 1000,
        "sizes": [1024, 4096, 16384],
    },
    # one H100: the sizes at the CIFAR gpu preset's model and budget
    "gpu": {**CIFAR_PRESETS["gpu"], "sizes": [16384, 65536]},
}
COLUMNS = ["status", "recipe", "strategy", "codebook_size", "codes", "recon_mse", "usage",
           "perplexity", "dead_codes", "codebook_mean_l2", "coverage_ratio", "seconds"]  # fmt: skip


def recipe_runs(data: str | Path, preset: str, arms: list[str] | None = None) -> list:
    """(name, assignment, config) for every arm x strategy x K; validated before any run."""
    check_preset(preset, PRESETS)
    unknown = sorted(set(arms or []) - set(ARMS))
    if unknown:
        raise ValueError(f"unknown recipe arm(s) {unknown}; choose from {list(ARMS)}")
    p = dict(PRESETS[preset])
    sizes = [str(k) for k in p.pop("sizes")]
    runs = []
    for arm in arms or list(ARMS):
        overrides, strategies = ARMS[arm]
        base = {**CIFAR_BASE, **p, **overrides, "data.path": str(data)}
        grid = {"train.strategy": list(strategies), "vq.codebook_size": sizes}
        for name, assignment, cfg in expand(base, [], grid):
            runs.append((f"recipe={arm}__{name}", {"recipe": arm, **assignment}, cfg))
    return runs


def rank_recipes(rows: list[dict[str, Any]]) -> list[tuple[str, str, float]]:
    """(recipe, strategy, mean rank of test MSE over the codebook sizes), best first.

    Arms missing a size (failed or not run) are left out: a rank needs every size.
    """
    ok = [r for r in rows if r.get("status") != "failed" and r.get("recon_mse") is not None]
    sizes = sorted({r["codebook_size"] for r in ok})
    ranks: dict[tuple[str, str], list[int]] = {}
    for k in sizes:
        at_k = sorted((r for r in ok if r["codebook_size"] == k), key=lambda r: r["recon_mse"])
        for rank, r in enumerate(at_k, start=1):
            ranks.setdefault((r["recipe"], r["strategy"]), []).append(rank)
    full = [(arm, s, sum(v) / len(v)) for (arm, s), v in ranks.items() if len(v) == len(sizes)]
    return sorted(full, key=lambda t: t[2])


def _table_by_size(rows: list[dict[str, Any]]) -> str:
    """recipe x strategy rows, with MSE / usage / perplexity for each K side by side."""
    sizes = sorted({r["codebook_size"] for r in rows if r.get("codebook_size")})
    keyed = {(r["recipe"], r["strategy"], r["codebook_size"]): r for r in rows}
    out = []
    for arm, (_, strategies) in ARMS.items():
        for s in strategies:
            line: dict[str, Any] = {"recipe": arm, "strategy": s}
            for k in sizes:
                r = keyed.get((arm, s, k), {})
                if r.get("status") == "failed":
                    line[f"MSE K={k}"] = "failed"
                    continue
                line[f"MSE K={k}"] = r.get("recon_mse")
                line[f"usage K={k}"] = (
                    None if r.get("usage") is None else f"{100 * r['usage']:.1f}%"
                )
                line[f"ppl K={k}"] = r.get("perplexity")
            if any(v is not None for k, v in line.items() if k.startswith("MSE")):
                out.append(line)
    cols = ["recipe", "strategy"]
    for k in sizes:
        cols += [f"MSE K={k}", f"usage K={k}", f"ppl K={k}"]
    return markdown_table(out, cols)


def sweep_image_runs(runs: list, job: Job) -> Rows:
    """The job's sweep of CIFAR runs: the peer library is checked at once if an arm needs it
    (not after an hour of the other arms), and the images are decoded once, before the
    workers share the cache."""
    from vqlab.data.dataset import load_dataset

    if any(cfg.vq.impl != "vqlab" for _, _, cfg in runs):
        from vqlab.quantizers.peer import load_peer

        load_peer()
    load_dataset(runs[0][2].data, seed=0)
    return job.sweep(runs)


def replicate_recipes(job: Job, arms: list[str] | None = None) -> Rows:
    """Every recipe arm on CIFAR-10 at the preset's codebook sizes -> report.md, results.csv.
    ``arms``: a subset of ``ARMS`` (all by default)."""
    out, preset = job.out, job.preset
    runs = recipe_runs(job.data, preset, arms)
    rows = sweep_image_runs(runs, job)
    for row, (_, assignment, _) in zip(rows, runs):
        row["recipe"] = assignment["recipe"]
        row.setdefault("strategy", assignment["train.strategy"])
        # FSQ's grid is the product of its levels (1000 for K=1024): ranked at its nominal K,
        # with the size it really has in ``codes``
        row["codes"] = row.get("codebook_size") or int(assignment["vq.codebook_size"])
        row["codebook_size"] = int(assignment["vq.codebook_size"])
    write_results(out / "results.csv", rows)
    (out / "plots").mkdir(exist_ok=True)
    plot_bars(rows, ["recon_mse", "usage", "perplexity"], out / "plots" / "recipes.png",
                 title=f"CIFAR-10 recipes ({preset} preset)")  # fmt: skip
    ranking = rank_recipes(rows)
    _write_report(job, rows, ranking)
    return rows


def _write_report(job: Job, rows, ranking) -> None:
    preset, data = job.preset, job.data
    p = {k: v for k, v in PRESETS[preset].items() if k != "sizes"}
    best = ranking[0] if ranking else None
    text = [
        f"# Anti-collapse recipes at an equal budget on CIFAR-10 ({preset} preset)",
        "",
        "Same conv VQ-VAE, data, step budget, init sample and test set for every arm; only the "
        "quantizer recipe and the schedule differ. `restart` re-seeds codes whose EMA usage "
        f"falls below {RESTART_THRESHOLD} assignments per step; `low_dim` uses d={CODE_DIM} "
        "codes behind PCA-initialised projections; `simvq` trains W in C W by the codebook "
        "loss (update=grad). `peer_*` arms put vector-quantize-pytorch 1.32.0's "
        "`VectorQuantize` in the quantizer's place: `peer_default` with its out-of-the-box "
        "settings (own random init, decay 0.8, commitment 1, rotation trick), `peer_restart` "
        f"with threshold_ema_dead_code={RESTART_THRESHOLD} on vqlab's k-means init. `fsq` and "
        "`lfq` have no learned codebook: FSQ rounds a few bounded channels to fixed levels "
        "(the recommended set nearest K; `codes` is its real size), LFQ takes the signs of "
        "log2 K channels with an entropy penalty; under deferred they too pretrain without "
        "quantization. `recon_mse` is per element on images in [-1, 1] (x / 127.5 - 1).",
        "",
        "The issue's reference (another VQ library, H100, K=16384, its MSE scale not stated): "
        "standard with dead-code restart (threshold 2) MSE .00823 and usage 99.8%; deferred "
        "with plain straight-through .00922 and 47%; the rotation trick .0183 and 93%.",
        "",
        f"Data: `{data}` (the shared copy is CIFAR-10 re-encoded as JPEG).",
        "",
        "## Which recipe wins",
        "",
    ]
    if best:
        text += [
            f"Ranked by mean rank of test MSE over the codebook sizes: **{best[0]} ({best[1]})** "
            "is best here.",
            "",
            markdown_table(
                [
                    {"rank": i + 1, "recipe": a, "strategy": s, "mean MSE rank": r}
                    for i, (a, s, r) in enumerate(ranking)
                ],  # fmt: skip
                ["rank", "recipe", "strategy", "mean MSE rank"],
            ),
            "",
        ]
    else:
        text += ["No arm finished at every codebook size; see results.csv.", ""]
    text += [
        "## Results",
        "",
        _table_by_size(rows),
        "",
        "![recipes](plots/recipes.png)",
        "",
        "## All runs",
        "",
        markdown_table(rows, COLUMNS),
        "",
        *job.how_made(
            f"- preset: `{preset}`; runs trained {job.jobs} at a time",
            "- shared settings: " + ", ".join(f"`{k}={v}`" for k, v in {**CIFAR_BASE, **p}.items()),
        ),
    ]
    job.write_report(text)


REPLICATION = Replication("recipes", PRESETS, replicate_recipes, needs_data=True, one_sweep=True)
