"""The prior compute curve: class consistency and g-FD against prior compute, MaskGIT and VAR,
standard vs deferred tokens, 2 seeds each.

Every point is the replicate's own experiment with one thing changed, the prior's budget
(``train.steps``) or size, on the replicate's own tokens, featnet, sampler and N: so the
replicate's committed point is one point of the curve (read from its ``results.csv``, not
trained again) and the others are comparable with it.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 nohup nice -n 19 python results/prior-curve-cpu/curve.py \
        [--kinds var,maskgit] [--jobs 2] > runs/prior-curve/curve.log 2>&1 &

Sources (a kind is skipped while its replicate has not written tokens and results.csv):
- VAR: ``results/var-cpu`` (``vqlab replicate var --preset cpu``): tokens/<strategy>.npz of
  the ``prior_init`` tokenizers;
- MaskGIT: ``results/generation-cpu`` (``vqlab replicate generation --preset cpu``).
Resumable: finished priors and scored sample sets are skipped (``runs/prior-curve/<kind>``),
and curve.csv / curve.md here are rewritten at the end. Compute per point = steps x the idle
CPU seconds of one train step at that size on one thread
(``benchmarks/results/idle-2026-12-03/prior_cpu_torch2.13.0-cpu.csv``).
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np

from vqlab.experiments.generation import GENERATION_PRESETS, prior_runs, sample_and_score
from vqlab.experiments.sweep import RUNS_DIR, run_sweep
from vqlab.experiments.var import VAR_PRESETS
from vqlab.reports.markdown import markdown_table
from vqlab.reports.results import read_results, write_results

DATA = "../shared/data/cifar10"
WORK = Path("runs/prior-curve")
HERE = Path("results/prior-curve-cpu")
STEP_COST = Path("benchmarks/results/idle-2026-12-03/prior_cpu_torch2.13.0-cpu.csv")
SOURCES = {"var": (Path("results/var-cpu"), VAR_PRESETS["cpu"]),
           "maskgit": (Path("results/generation-cpu"), GENERATION_PRESETS["cpu"])}  # fmt: skip
SIZES = {"small": (2, 128, 4), "base": (4, 256, 4)}
# (kind, size, steps) besides each replicate's own point (small at its preset's steps)
POINTS = [("var", "small", 500), ("maskgit", "small", 500), ("maskgit", "small", 1500)]
TARGET = 0.5  # the class consistency the issue asks the cpu preset to reach where it can


def step_costs() -> dict[tuple[str, str], float]:
    """(kind, size) -> idle seconds of one vqlab train step at batch 64, one thread."""
    rows = read_results(STEP_COST)
    return {(r["prior"], r["size"]): r["value"] / 1000 for r in rows
            if r["impl"] == "vqlab" and r["metric"] == "train_step_ms"}  # fmt: skip


def tokenizer_folders(src: Path, kind: str, preset: dict) -> dict[str, Path]:
    """The replicate's tokenizer run per strategy (the pair its priors were trained on)."""
    runs = src / "tokenizers" / RUNS_DIR
    found = {}
    for strategy in ("standard", "deferred"):
        want = f"train.strategy={strategy}"
        if kind == "var":
            want += f"__vq.ms_init={preset['prior_init']}"
        hits = [d for d in runs.glob("*") if d.name.endswith(want)]
        if len(hits) != 1:
            raise SystemExit(f"{kind}: expected one tokenizer run ending {want} in {runs}")
        found[strategy] = hits[0]
    return found


def point_preset(preset: dict, size: str, steps: int) -> dict:
    p = copy.deepcopy(preset)
    depth, width, heads = SIZES[size]
    p["prior"].update({"prior.depth": depth, "prior.width": width, "prior.heads": heads,
                       "train.steps": steps, "train.eval_every": steps})  # fmt: skip
    return p


def run_point(kind: str, size: str, steps: int, jobs: int, seeds: list[int] | None) -> list[dict]:
    src, preset = SOURCES[kind]
    tokens = {s: src / "tokens" / f"{s}.npz" for s in ("standard", "deferred")}
    tokenizers = tokenizer_folders(src, kind, preset)
    p = point_preset(preset, size, steps)
    out = WORK / kind / f"{size}__steps={steps}"
    train = copy.deepcopy(p)
    if seeds is not None:  # train these seeds now; the point reports every finished seed
        train["seeds"] = seeds
    run_sweep(prior_runs(tokens, train), out / "priors", jobs=jobs, progress=False)
    rows = run_sweep(prior_runs(tokens, p), out / "priors", progress=False, report_only=True)
    rows = [r for r in rows if r["status"] == "skipped (finished)"]
    featnet = src / "tokenizers" / "featnet"
    sample_and_score(out, rows, tokens, tokenizers, featnet, DATA, p, False)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kinds", default="var,maskgit")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument(
        "--var-src", type=Path, help="a replicate var folder other than results/var-cpu"
    )
    ap.add_argument("--maskgit-src", type=Path, help="other than results/generation-cpu")
    ap.add_argument("--seeds", help="prior seeds of the new points (default: the preset's)")
    args = ap.parse_args()
    for kind, src in (("var", args.var_src), ("maskgit", args.maskgit_src)):
        if src is not None:
            SOURCES[kind] = (src, SOURCES[kind][1])
    costs, curve = step_costs(), []
    seeds = None if args.seeds is None else [int(s) for s in args.seeds.split(",")]
    for kind in args.kinds.split(","):
        src, preset = SOURCES[kind]
        if not (src / "results.csv").is_file() or not (src / "tokens").is_dir():
            print(f"{kind}: {src} has no results.csv / tokens yet; skipped", flush=True)
            continue
        own = ("small", preset["prior"]["train.steps"])
        points = [(s, n) for k, s, n in POINTS if k == kind and (s, n) != own] + [own]
        for size, steps in points:
            rows = read_results(src / "results.csv") if (size, steps) == own else (
                run_point(kind, size, steps, args.jobs, seeds))  # fmt: skip
            for r in rows:
                if r.get("class_consistency") in (None, ""):  # failed, or not sampled yet
                    continue
                curve.append({
                    "kind": kind, "size": size, "steps": steps, "tokenizer": r["tokenizer"],
                    "seed": r["seed"], "compute_cpu_h": steps * costs[(kind, size)] / 3600,
                    "class_consistency": r["class_consistency"], "g_fd": r["g_fd"],
                    "source": str(src) if (size, steps) == own else str(WORK / kind),
                })  # fmt: skip
            print(f"{kind} {size} {steps}: done", flush=True)
    if curve:
        write_curve(curve)


def fit(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """Least-squares line of class consistency against log10(compute): (slope, intercept)."""
    if len({x for x, _ in points}) < 2:
        return None
    x = np.log10([p[0] for p in points])
    slope, intercept = np.polyfit(x, [p[1] for p in points], 1)
    return float(slope), float(intercept)


def write_curve(curve: list[dict]) -> None:
    write_results(HERE / "curve.csv", curve)
    table, lines = [], []
    for kind in sorted({r["kind"] for r in curve}):
        pts = []
        for size, steps in sorted({(r["size"], r["steps"]) for r in curve if r["kind"] == kind}):
            at = [r for r in curve if (r["kind"], r["size"], r["steps"]) == (kind, size, steps)]
            row = {
                "prior": kind,
                "size": f"{size} {SIZES[size][0]}x{SIZES[size][1]}",
                "steps": steps,
                "compute (CPU h per prior)": f"{at[0]['compute_cpu_h']:.2f}",
            }
            for metric in ("class_consistency", "g_fd"):
                m = {s: [r[metric] for r in at if r["tokenizer"] == s]
                     for s in ("standard", "deferred")}  # fmt: skip
                for s, v in m.items():
                    sd = np.std(v, ddof=1) if len(v) > 1 else 0.0
                    row[f"{metric} {s}"] = f"{np.mean(v):.3f} ± {sd:.3f} (n={len(v)})"
                row[f"{metric} gap (deferred - standard)"] = (
                    f"{np.mean(m['deferred']) - np.mean(m['standard']):+.3f}"
                )
            table.append(row)
            pts += [(r["compute_cpu_h"], r["class_consistency"]) for r in at]
        line = fit(pts)
        if line is None:
            lines.append(f"- {kind}: one compute point; no slope to extrapolate.")
            continue
        slope, icpt = line
        where = (f"10^(({TARGET} - {icpt:.3f}) / {slope:.3f}) = "
                 f"{10 ** ((TARGET - icpt) / slope):.3g} CPU h per prior" if slope > 0
                 else "never (the fitted slope is not positive)")  # fmt: skip
        lines.append(
            f"- {kind}: class consistency = {icpt:.3f} + {slope:.3f} log10(CPU h) over "
            f"{len(pts)} priors (both tokenizers); {TARGET} reached at {where}. A line in log "
            "compute through so few points is a rough guide, not a law."
        )
    cols = list(table[0])
    (HERE / "curve.md").write_text(markdown_table(table, cols) + "\n\n" + "\n".join(lines) + "\n")
    print((HERE / "curve.md").read_text(), flush=True)


if __name__ == "__main__":
    main()
