"""Time vqlab k-means against scikit-learn and faiss, from the same initial centroids.

    python benchmarks/bench_kmeans.py --device cpu --n 100000 --dim 64 --k 1024 --iters 20
    python benchmarks/bench_kmeans.py --device cuda   # defaults: 1M x 64 -> 16,384 centroids
    python benchmarks/bench_kmeans.py --device cpu --seeding-sweep   # seeding only, by k

Every Lloyd run starts from one shared k-means++ init (made by vqlab), so the timings compare
Lloyd iterations alone and the inertias differ only by arithmetic and empty-cluster policy.
Seeding is timed on its own: plain k-means++ (``n_trials=1``), greedy k-means++ (the default,
``2 + floor(ln k)`` candidates per pick) and k-means|| (``init="kmeans||"``), with the final
inertia each reaches after Lloyd. Every inertia is measured the same way, by
``nearest_code`` against the returned centroids. scikit-learn and faiss (optional dependency,
``pip install faiss-cpu``) run on the CPU; they are skipped on CUDA unless ``--baselines``.

Writes ``benchmarks/results/kmeans_<device>_torch<version>.json`` and ``.csv``. With
``--seeding-sweep`` it times only plain against greedy k-means++ seeding at N x D (by device,
see SWEEP_N) for each k of ``--sweep-ks``, one timed run each after a small warm-up, and
writes ``kmeans_seeding_<device>_torch<version>.json`` and ``.csv``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from vqlab.quantizers.distance import nearest_code
from vqlab.quantizers.kmeans import default_trials, kmeans, kmeans_parallel, kmeans_plusplus

SIZES = {"cpu": (100_000, 64, 1024), "cuda": (1_000_000, 64, 16_384)}
SWEEP_N = {"cpu": 32_768, "cuda": 1_000_000}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--n", type=int, help="points (default: by device, see SIZES)")
    p.add_argument("--dim", type=int, help="dimension (default: by device)")
    p.add_argument("--k", type=int, help="centroids (default: by device)")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3, help="timed runs; the median is reported")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--baselines", action="store_true", help="run sklearn/faiss even on CUDA")
    p.add_argument("--seeding-sweep", action="store_true", help="time plain vs greedy seeding")
    p.add_argument("--lloyd-only", action="store_true", help="skip the seeding rows")
    p.add_argument("--sweep-ks", default="1024,4096,16384", help="comma-separated k values")
    p.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    return p.parse_args()


def make_data(n: int, dim: int, k: int, seed: int, device: torch.device) -> torch.Tensor:
    """(n, dim) float32 Gaussian mixture with k modes: clustered like encoder outputs."""
    g = torch.Generator().manual_seed(seed)
    means = 4.0 * torch.randn(k, dim, generator=g)
    x = means[torch.randint(k, (n,), generator=g)] + torch.randn(n, dim, generator=g)
    return x.to(device)


def timed(
    fn: Callable[[], object], device: torch.device, repeats: int, warmup: bool = True
) -> tuple[object, list]:
    """Run ``fn`` once to warm up (unless not ``warmup``), then ``repeats`` times; returns the
    last output and the times."""
    out = fn() if warmup else None
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return out, times


def inertia_of(x: torch.Tensor, centroids: torch.Tensor) -> float:
    c = torch.as_tensor(centroids, dtype=torch.float32, device=x.device)
    return nearest_code(x, c).distances.double().sum().item()


def row(method: str, stage: str, times: list, inertia: float, **extra) -> dict:
    return {
        "method": method,
        "stage": stage,
        "seconds": statistics.median(times),
        "seconds_all": [round(t, 4) for t in times],
        "inertia": inertia,
        **extra,
    }


def bench_seeding(x: torch.Tensor, args: argparse.Namespace, dev: torch.device) -> list[dict]:
    """Time plain and greedy k-means++ and k-means||; score each init before and after Lloyd."""
    rows = []
    seeders: list[tuple[str, Callable[..., torch.Tensor]]] = [
        ("kmeans++ plain", lambda *a: kmeans_plusplus(*a, n_trials=1)),
        ("kmeans++", kmeans_plusplus),
        ("kmeans||", kmeans_parallel),
    ]
    for name, seed_fn in seeders:
        init, t = timed(lambda f=seed_fn: f(x, args.k, args.seed), dev, args.repeats)
        final = kmeans(x, args.k, args.iters, init=init).inertia[-1]
        rows.append(row("vqlab", f"init {name}", t, inertia_of(x, init), inertia_after_lloyd=final))
    return rows


def bench_seeding_sweep(args: argparse.Namespace, dev: torch.device) -> list[dict]:
    """Plain (``n_trials=1``) against greedy k-means++ seeding for each k: time and potential.

    One timed run per (k, seeding) after a small warm-up: a greedy run at N = 32,768 and
    k = 16,384 takes over a minute on a 2-core CPU. Each row records the 1-minute load
    average, since on a shared machine other jobs can slow a run several times over.
    """
    n, dim = args.n or SWEEP_N[dev.type], args.dim or 64
    ks = [int(k) for k in args.sweep_ks.split(",")]
    rows = []
    for k in ks:
        x = make_data(n, dim, k, args.seed, dev)
        trials = default_trials(k)
        if k == ks[0]:  # warm-up: first calls allocate and load kernels
            for n_trials in (1, trials):
                kmeans_plusplus(x, 64, args.seed, n_trials=n_trials)
        for name, n_trials in [("kmeans++ plain", 1), ("kmeans++ greedy", trials)]:
            init, t = timed(
                lambda t_=n_trials, x_=x, k_=k: kmeans_plusplus(x_, k_, args.seed, n_trials=t_),
                dev,
                repeats=1,
                warmup=False,
            )
            rows.append(
                row(
                    "vqlab",
                    f"init {name}",
                    t,
                    inertia_of(x, init),
                    n=n,
                    dim=dim,
                    k=k,
                    n_trials=n_trials,
                    loadavg_1min=os.getloadavg()[0],
                )
            )
        rows[-1]["time_ratio_greedy_vs_plain"] = rows[-1]["seconds"] / rows[-2]["seconds"]
        rows[-1]["potential_ratio_greedy_vs_plain"] = rows[-1]["inertia"] / rows[-2]["inertia"]
        print_table(rows[-2:])
    return rows


def bench_lloyd(
    x: torch.Tensor,
    init: torch.Tensor,
    args: argparse.Namespace,
    dev: torch.device,
    baselines: bool,
) -> list[dict]:
    """Lloyd iterations from one shared init: vqlab, then scikit-learn and faiss on the CPU.

    The methods run in turn within each repeat (after one warm-up run each), so on a shared
    machine a load that comes and goes falls on all of them alike; the baselines get the same
    number of threads as torch (faiss.omp_set_num_threads, threadpoolctl for scikit-learn).
    """
    iters = args.iters
    runs: dict[str, Callable[[], object]] = {"vqlab": lambda: kmeans(x, args.k, iters, init=init)}
    x_np, init_np = x.cpu().numpy(), init.cpu().numpy()
    threads = torch.get_num_threads()
    if baselines:
        try:
            from sklearn.cluster import KMeans
            from threadpoolctl import threadpool_limits

            def sk():
                km = KMeans(args.k, init=init_np, n_init=1, max_iter=iters, tol=0,
                            algorithm="lloyd")  # fmt: skip
                with threadpool_limits(threads):
                    return km.fit(x_np)

            runs["sklearn"] = sk
        except ImportError:
            print("scikit-learn not installed")
        try:
            import faiss

            faiss.omp_set_num_threads(threads)

            def fa():
                # max_points_per_centroid: keep every point (faiss subsamples to 256 * k)
                km = faiss.Kmeans(x_np.shape[1], args.k, niter=iters, seed=args.seed,
                                  verbose=False)  # fmt: skip
                km.cp.max_points_per_centroid = x_np.shape[0]
                if hasattr(km.cp, "early_stop_threshold"):  # newer faiss stops on a stall
                    km.cp.early_stop_threshold = -1.0
                km.train(x_np, init_centroids=init_np)
                return km

            runs["faiss"] = fa
        except ImportError:
            print("faiss not installed (pip install -e .[bench])")
    outs = {name: fn() for name, fn in runs.items()}  # warm-up
    times: dict[str, list] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            outs[name] = fn()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    rows = [row("vqlab", "lloyd", times["vqlab"], inertia_of(x, outs["vqlab"].centroids),
                iters_run=iters, device=dev.type, threads=threads)]  # fmt: skip
    if "sklearn" in outs:
        km = outs["sklearn"]
        rows.append(row("sklearn", "lloyd", times["sklearn"], inertia_of(x, km.cluster_centers_),
                        iters_run=km.n_iter_, threads=threads))  # fmt: skip
    if "faiss" in outs:
        km = outs["faiss"]
        rows.append(row("faiss", "lloyd", times["faiss"], inertia_of(x, km.centroids),
                        iters_run=len(km.obj), threads=threads))  # fmt: skip
    return rows


def add_ratios(rows: list[dict]) -> None:
    """Per-iteration time of vqlab over each baseline's, and inertia difference in %.

    Per iteration, because scikit-learn stops early once no label changes (even with tol=0),
    while vqlab and faiss (early stop switched off) run every iteration.
    """
    lloyd = {r["method"]: r for r in rows if r["stage"] == "lloyd"}
    for r in lloyd.values():
        r["seconds_per_iter"] = r["seconds"] / r["iters_run"]
    ours = lloyd["vqlab"]
    for name in ("sklearn", "faiss"):
        if name in lloyd:
            ratio = ours["seconds_per_iter"] / lloyd[name]["seconds_per_iter"]
            ours[f"time_per_iter_ratio_vs_{name}"] = ratio
            diff = ours["inertia"] / lloyd[name]["inertia"] - 1.0
            ours[f"inertia_diff_pct_vs_{name}"] = 100.0 * diff


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def environment(dev: torch.device, x: torch.Tensor, args: argparse.Namespace) -> dict:
    env = {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "n": x.shape[0],
        "dim": x.shape[1],
        "k": args.k,
        "iters": args.iters,
        "repeats": args.repeats,
        "seed": args.seed,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    for mod in ("sklearn", "faiss"):
        try:
            env[mod] = __import__(mod).__version__
        except ImportError:
            env[mod] = None
    return env


def write(
    rows: list[dict], env: dict, dev: torch.device, out_dir: Path, prefix: str = "kmeans"
) -> str:
    """Write JSON and CSV named by device and torch version; returns the shared path stem."""

    def slug(s: str) -> str:
        return re.sub(r"[^a-z0-9.]+", "-", s.lower()).strip("-")

    name = "cpu" if dev.type == "cpu" else env["device"]
    # a plain string stem: Path.with_suffix would cut "torch2.13.0" at its last dot
    stem = str(out_dir / f"{prefix}_{slug(name)}_torch{slug(env['torch'])}")
    out_dir.mkdir(parents=True, exist_ok=True)
    Path(stem + ".json").write_text(json.dumps({"env": env, "rows": rows}, indent=2) + "\n")
    keys = sorted({key for r in rows for key in r}, key=lambda s: (s not in rows[0], s))
    with open(stem + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows({**r, "seconds_all": " ".join(map(str, r["seconds_all"]))} for r in rows)
    return stem


def print_table(rows: list[dict]) -> None:
    print(f"{'method':<9}{'stage':<15}{'seconds':>10}{'inertia':>16}  notes")
    for r in rows:
        notes = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in r.items()
            if k not in ("method", "stage", "seconds", "seconds_all", "inertia")
        )
        print(
            f"{r['method']:<9}{r['stage']:<15}{r['seconds']:>10.3f}{r['inertia']:>16.6g}  {notes}"
        )


def main() -> None:
    args = parse_args()
    name = args.device if args.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if args.seeding_sweep:
        rows = bench_seeding_sweep(args, dev)
        env = environment(dev, torch.empty(rows[0]["n"], rows[0]["dim"]), args)
        env["k"], env["repeats"] = [r["k"] for r in rows[::2]], 1
        print_table(rows)
        print(f"wrote {write(rows, env, dev, args.out_dir, 'kmeans_seeding')}.json/.csv")
        return
    n, dim, k = SIZES[dev.type]
    args.n, args.dim, args.k = args.n or n, args.dim or dim, args.k or k
    x = make_data(args.n, args.dim, args.k, args.seed, dev)
    env = environment(dev, x, args)
    print(json.dumps(env))
    rows = [] if args.lloyd_only else bench_seeding(x, args, dev)
    init = kmeans_plusplus(x, args.k, args.seed)
    rows += bench_lloyd(x, init, args, dev, baselines=dev.type == "cpu" or args.baselines)
    add_ratios(rows)
    print_table(rows)
    print(f"wrote {write(rows, env, dev, args.out_dir)}.json/.csv")


if __name__ == "__main__":
    main()
