"""The table of issue 21 §1: standard vs deferred through the plug-in vs deferred through
vqlab's engine, for both example loops, on the synthetic mixture and on CIFAR-10.

    nice -n 19 python benchmarks/plugin_table.py --data synthetic --seeds 0,1,2 \
        --out results/plugin-cpu
    nice -n 19 python benchmarks/plugin_table.py --data cifar10 --seeds 0,1 \
        --out results/plugin-cpu --set data.path=../shared/data/cifar10

Every run is a subprocess (an example script, or ``python -m vqlab train``) with the same config
and ``--set`` overrides; each writes one JSON (``runs/<data>/<arm>__seed=<s>.json``). Finished
runs are skipped, so the same command resumes. ``report.md`` is rebuilt from every JSON found.
Arms (loop: quantizer; how):
- taming: examples/taming_vqvae.py (nn.Embedding codebook, gradient-trained, beta on
  commitment), standard and --deferred; the engine's counterpart is ``vq.update=grad``;
- vqtorch: examples/vqtorch_model.py (vector-quantize-pytorch's VectorQuantize, EMA), standard
  and --deferred; the engine's counterpart is ``vq.impl=vector_quantize_pytorch``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "synthetic": ("configs/synthetic.yaml", []),
    # sized for a shared 2-core CPU: 250 steps of batch 32 (the switch at 125), K=256
    "cifar10": (
        "configs/cifar10.yaml",
        [
            "train.steps=250",
            "train.pretrain_steps=125",
            "train.batch_size=32",
            "train.eval_every=250",
            "vq.codebook_size=256",
            "vq.init_samples=8192",
            "data.test_limit=1000",
        ],
    ),
}
ENGINE = {"taming": ["vq.update=grad"], "vqtorch": ["vq.impl=vector_quantize_pytorch"]}
EXAMPLES = {"taming": "examples/taming_vqvae.py", "vqtorch": "examples/vqtorch_model.py"}


def arms(loop: str, engine_standard: bool, window: int | None) -> dict[str, tuple]:
    """arm name -> (kind, extra args): ``example`` runs the loop, ``engine`` runs vqlab train."""
    out = {
        f"{loop}/standard": ("example", []),
        f"{loop}/deferred-plugin": ("example", ["--deferred"]),
        f"{loop}/deferred-engine": ("engine", ["train.strategy=deferred"]),
    }
    if window:  # the reservoir over every pretraining call, not the default last tenth
        out[f"{loop}/deferred-plugin-all"] = (
            "example",
            ["--deferred", "--sample-window", str(window)],
        )
    if engine_standard:
        out[f"{loop}/standard-engine"] = ("engine", ["train.strategy=standard"])
    return out


def command(kind, loop, extra, config, sets, seed, run_dir) -> list[str]:
    py = sys.executable
    base = [*sets, f"seed={seed}", "device=cpu"]
    if kind == "example":
        args = [py, EXAMPLES[loop], "--config", config, "--out", str(run_dir / "metrics.json")]
        return args + [a for s in base for a in ("--set", s)] + extra
    every = [*base, *ENGINE[loop], *extra]
    return [py, "-m", "vqlab", "train", "--config", config, "--out", str(run_dir), "--quiet",
            "--overwrite"] + [a for s in every for a in ("--set", s)]  # fmt: skip


def run_one(cmd: list[str], run_dir: Path, result: Path, kind: str) -> dict:
    run_dir.mkdir(parents=True, exist_ok=True)
    # one torch thread per run: tiny ops on a shared 2-core CPU (as the test suite does)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'examples'}",
    }
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    source = run_dir / ("metrics.json" if kind == "example" else "summary.json")
    m = json.loads(source.read_text())
    row = {k: m[k] for k in ("usage", "perplexity", "recon_mse", "codebook_size")}
    row.update(wall_s=round(wall, 1), command=shlex.join(cmd))
    result.parent.mkdir(parents=True, exist_ok=True)
    result.write_text(json.dumps(row, indent=2))
    return row


def summarise(out: Path) -> None:
    """report.md: mean and spread over seeds per (data, arm), then every run."""
    rows = []
    for f in sorted(out.glob("runs/*/*.json")):
        arm, seed = f.stem.split("__seed=")
        rows.append({"data": f.parent.name, "arm": arm.replace("--", "/"), "seed": int(seed),
                     **json.loads(f.read_text())})  # fmt: skip
    lines = ["# Deferred quantization through the plug-in (issue 21 §1)", "",
             "Mean ± sample std over seeds (min-max in brackets); usage and perplexity of the "
             "codes on the test set, recon MSE on the data's scale. Wall: seconds per run "
             "(subprocess, on a shared 2-core CPU under nice -n 19).", "",
             "| data | arm | seeds | usage | perplexity | recon MSE | wall s |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    order = ["standard", "deferred-plugin", "deferred-engine", "deferred-plugin-all",
             "deferred-plugin-counts", "standard-engine"]  # fmt: skip
    rows.sort(key=lambda r: (r["data"] != "synthetic", r["arm"].split("/")[0],
                             order.index(r["arm"].split("/")[1]), r["seed"]))  # fmt: skip
    groups: dict[tuple, list] = {}
    for r in rows:
        groups.setdefault((r["data"], r["arm"]), []).append(r)
    for (data, arm), rs in groups.items():
        cells = [_spread([r[k] for r in rs]) for k in ("usage", "perplexity", "recon_mse")]
        wall = sum(r["wall_s"] for r in rs) / len(rs)
        lines.append(f"| {data} | {arm} | {len(rs)} | " + " | ".join(cells) + f" | {wall:.0f} |")
    total = sum(r["wall_s"] for r in rows)
    lines += ["", f"Total wall time of the {len(rows)} runs: {total / 60:.1f} min.", "",
              "## Runs", "", "| data | arm | seed | usage | perplexity | recon MSE | wall s |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['data']} | {r['arm']} | {r['seed']} | {r['usage']:.4f} | "
                     f"{r['perplexity']:.1f} | {r['recon_mse']:.5f} | {r['wall_s']} |")  # fmt: skip
    lines += ["", "## Commands", ""] + [f"- `{r['command']}`" for r in rows]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def _spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    fmt = ".4f" if max(abs(v) for v in values) < 10 else ".1f"
    return f"{mean:{fmt}} ± {sd:{fmt}} [{min(values):{fmt}}-{max(values):{fmt}}]"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=sorted(CONFIGS), required=True)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--loops", default="taming,vqtorch")
    p.add_argument("--engine-standard", action="store_true")
    p.add_argument(
        "--window",
        type=int,
        default=None,
        help="also an arm sampling this many calls (the whole pretraining)",
    )
    p.add_argument("--out", type=Path, default=ROOT / "results" / "plugin-cpu")
    p.add_argument(
        "--arms", default="", help="only these arms (comma-separated, e.g. deferred-engine)"
    )
    p.add_argument("--report-only", action="store_true", help="rewrite report.md, run nothing")
    args = p.parse_args(argv)
    if args.report_only:
        summarise(args.out)
        return
    config, sets = CONFIGS[args.data]
    sets = [*sets, *args.set]
    for seed in (int(s) for s in args.seeds.split(",")):
        for loop in args.loops.split(","):
            for arm, (kind, extra) in arms(loop, args.engine_standard, args.window).items():
                if args.arms and arm.split("/")[1] not in args.arms.split(","):
                    continue
                result = (
                    args.out / "runs" / args.data / f"{arm.replace('/', '--')}__seed={seed}.json"
                )
                if result.exists():
                    continue
                run_dir = Path("/tmp/vqlab-plugin-table") / args.data / f"{arm}__{seed}"
                cmd = command(kind, loop, extra, config, sets, seed, run_dir)
                row = run_one(cmd, run_dir, result, kind)
                print(f"{args.data} {arm} seed={seed}: {row}", flush=True)
                summarise(args.out)
    summarise(args.out)


if __name__ == "__main__":
    main()
