"""The prior compute curve: class consistency and g-FD against prior compute, MaskGIT and VAR,
standard vs deferred tokens, 2 seeds. Resumable: finished priors and scored sample sets are
skipped, an unfinished prior resumes from its checkpoint; curve.csv / curve.md are rewritten
after every run, so whatever finished is readable at any time.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 nohup nice -n 19 /work/main/.venv/bin/python \
        results/prior-curve-cpu/curve.py > runs/prior-curve/curve.log 2>&1 &

Tokenizers (trained first when missing, MSE only to save CPU, the generation/var cpu preset's
model otherwise: width 16, K=1024, 500 steps, deferred = 250 pretrain + 250 VQ):
- MaskGIT: single-scale standard and deferred (runs/prior-curve/tokenizers);
- VAR: multi-scale (scales 1,2,3,4,6,8) standard and deferred with vq.loss_on=final, finding
  1's runs (runs/var-findings/*__final__g32, trained by run_f1.sh).
Priors: the cpu presets' recipe (batch 64, lr 1e-3, warmup 100, cosine, dropout 0.1, class
dropout 0.1) with the new per-prior defaults (label smoothing 0; VAR sampled at top-k 900 /
top-p 0.96), at the (size, steps) points of GRID, in that order. N samples (classes in turn)
against N test images in the committed featnet; compute = steps x the measured CPU seconds of
one train step at that size (step_cost.json, one thread).
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from vqlab.config import build_config
from vqlab.experiments.generation import sample_and_score, tokenize_all
from vqlab.experiments.sweep import run_sweep
from vqlab.reports.markdown import markdown_table
from vqlab.reports.results import write_results

DATA = "../shared/data/cifar10"
FEATNET = Path("results/featnet-cifar10")
WORK = Path("runs/prior-curve")
RESULTS = Path("results/prior-curve-cpu")
N = 1000
SEEDS = (0, 1)
SIZES = {"small": (2, 128, 4), "base": (4, 256, 4), "large": (6, 384, 6)}
# (kind, size, steps), cheapest first: each point adds both tokenizers x both seeds
GRID = [
    ("maskgit", "small", 500), ("var", "small", 500),
    ("maskgit", "small", 1500), ("var", "small", 1500),
    ("maskgit", "base", 1500), ("var", "base", 1500),
    ("maskgit", "small", 4500), ("var", "small", 4500),
    ("maskgit", "base", 4500), ("var", "base", 4500),
    ("maskgit", "large", 4500), ("var", "large", 4500),
]  # fmt: skip
# KINDS=maskgit runs the MaskGIT points only (while run_f1.sh still trains the VAR tokenizers)
KINDS = os.environ.get("KINDS", "maskgit,var").split(",")
TOKENIZER = [
    "data.name=cifar10", f"data.path={DATA}", "data.test_limit=2000", "model.kind=conv",
    "model.latent_dim=64", "model.downsample=4", "model.width=16", "vq.codebook_size=1024",
    "vq.update=ema", "vq.beta=0.25", "vq.decay=0.99", "vq.init=kmeans",
    "vq.init_samples=32768", "vq.kmeans_iters=10", "train.batch_size=64", "train.steps=500",
    "train.pretrain_steps=250", "train.lr=5e-4", "train.eval_every=250", "train.log_every=50",
]  # fmt: skip


def tokenizer(kind: str, strategy: str) -> Path:
    if kind == "var":  # finding 1's loss_on=final runs (the same settings), trained there
        run = Path("runs/var-findings") / f"{strategy}__final__g32"
        if not (run / "summary.json").is_file():
            env = {**os.environ, "STRATEGIES": strategy, "LOSS_ON_LIST": "final"}
            subprocess.run(["results/var-findings-cpu/run_f1.sh"], check=True, env=env)
        return run
    run = WORK / "tokenizers" / f"{kind}__{strategy}"
    if (run / "summary.json").is_file():
        return run
    sets = [*TOKENIZER, f"train.strategy={strategy}"]
    cmd = [sys.executable, "-m", "vqlab", "train", "--quiet"]
    if (run / "checkpoint").is_dir():
        cmd += ["--resume", str(run)]
    else:
        cmd += ["--out", str(run), "--overwrite", *(a for s in sets for a in ("--set", s))]
    subprocess.run(cmd, check=True)
    return run


def prior_values(kind: str, size: str, steps: int, tokens: Path, seed: int) -> dict:
    depth, width, heads = SIZES[size]
    return {
        "task": "prior", "data.name": "tokens", "data.path": str(tokens), "seed": seed,
        "prior.kind": kind, "prior.depth": depth, "prior.width": width, "prior.heads": heads,
        "prior.dropout": 0.1, "prior.class_dropout": 0.1, "train.steps": steps,
        "train.batch_size": 64, "train.lr": 1e-3, "train.warmup_steps": 100,
        "train.lr_schedule": "cosine", "train.weight_decay": 0.05, "train.log_every": 100,
        "train.eval_every": steps, "train.checkpoint_every": 250,
    }  # fmt: skip


def step_cost() -> dict:
    path = RESULTS / "step_cost.json"
    if not path.is_file():
        return {}
    rows = json.loads(path.read_text())["rows"]
    return {(r["kind"], r["depth"], r["width"]): r["cpu_s_per_step"] for r in rows}


def write_curve(rows: list[dict]) -> None:
    cols = ["kind", "size", "steps", "tokenizer", "seed", "compute_cpu_h", "class_consistency",
            "g_fd", "val_loss", "wall_s"]  # fmt: skip
    write_results(RESULTS / "curve.csv", rows)
    (RESULTS / "curve.md").write_text(markdown_table(rows, cols) + "\n")


def main() -> None:
    costs, rows = step_cost(), []
    tokens: dict[str, dict[str, Path]] = {}
    for kind, size, steps in GRID:
        if kind not in KINDS:
            continue
        if kind not in tokens:
            toks = {s: tokenizer(kind, s) for s in ("standard", "deferred")}
            tokens[kind] = {"runs": toks, "files": tokenize_all(WORK / kind, DATA, toks, False)}
        for seed in SEEDS:
            for strategy in ("standard", "deferred"):
                name = f"{kind}__{size}__steps={steps}__{strategy}__seed={seed}"
                values = prior_values(kind, size, steps, tokens[kind]["files"][strategy], seed)
                t0 = time.perf_counter()
                done = run_sweep(
                    [(name, {"tokenizer": strategy}, build_config(values))],
                    WORK / "priors", progress=False,
                )  # fmt: skip
                row = dict(done[0])
                p = {"samples": N, "sample": []}  # the per-prior sampler defaults
                sample_and_score(WORK, [row], tokens[kind]["files"], tokens[kind]["runs"],
                                 FEATNET, DATA, p, False)  # fmt: skip
                depth, width, _ = SIZES[size]
                per_step = costs.get((kind, depth, width))
                rows.append({
                    "kind": kind, "size": f"{size} ({depth}x{width})", "steps": steps,
                    "tokenizer": strategy, "seed": seed,
                    "compute_cpu_h": None if per_step is None else steps * per_step / 3600,
                    "class_consistency": row.get("class_consistency"), "g_fd": row.get("g_fd"),
                    "val_loss": row.get("val_loss"), "wall_s": time.perf_counter() - t0,
                    "featnet_sha256": row.get("featnet_sha256"),
                })  # fmt: skip
                write_curve(rows)


if __name__ == "__main__":
    main()
