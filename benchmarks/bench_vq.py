"""Time vqlab's nearest-code search and VQ train step against plain torch and the peer.

    python benchmarks/bench_vq.py                 # CUDA: N=65,536, D in {32, 256}, K up to 262k
    python benchmarks/bench_vq.py --quick         # CPU-sized shapes: torch chunked vs cdist
    python benchmarks/bench_vq.py --plot FILE.csv # redraw the plot of an earlier run
    TRITON_INTERPRET=1 python benchmarks/bench_vq.py --smoke --sections search,train
                                                  # toy shapes; the kernel in triton's interpreter

Sections (each row: median time of repeats after warm-up, peak memory, agreement):
- ``search``: ``nearest_code`` through the fused Triton kernel (exact and fast), the chunked torch
  path, plain ``torch.cdist(x, c).argmin(1)`` (out of memory reported as such), and the bf16
  GEMM ``x.bf16 @ c.bf16.T`` alone, which writes the N x K scores the fused kernel never
  writes: the floor that the issue's targets are measured against. Agreement is the fraction
  of rows whose index equals the fp32 reference (the chunked torch search).
- ``train``: one VQ step (forward, backward, EMA update) and one eval forward, through
  ``vqlab.quantizers.vq.VectorQuantizer`` (with the search it picks by default, and with
  ``precision="fast"``) and vector-quantize-pytorch 1.32.0 (``VectorQuantize``, optional).
- ``agreement``: fast against exact search on random, clustered and offset data.

Writes ``benchmarks/results/vq_<device>_torch<ver>_triton<ver>.{json,csv,png}``.
"""

from __future__ import annotations

import argparse
import csv
import functools
import gc
import importlib.metadata
import json
import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from vqlab.quantizers import distance
from vqlab.quantizers.distance import nearest_code, nearest_code_torch

GiB = 2**30
FULL = {"n": 65_536, "dims": (32, 256), "ks": (1024, 16_384, 65_536, 262_144)}
QUICK = {"n": 4096, "dims": (32,), "ks": (1024, 4096)}
SMOKE = {"n": 64, "dims": (8,), "ks": (32,)}  # seconds even in triton's CPU interpreter
TARGET_MS = 1500.0  # time spent on the repeats of one row
MIN_REPEATS, WARMUP = 3, 2  # --smoke: 1 and 1 (a test of the script, not a timing)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small shapes (the CPU default)")
    p.add_argument("--smoke", action="store_true", help="toy shapes, 3 repeats: a test run")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--sections", default="search,train,agreement")
    p.add_argument("--budget-s", type=float, default=480.0, help="skip rows after this long")
    p.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--plot", type=Path, help="only draw the plot of this results CSV")
    return p.parse_args()


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def measure(fn: Callable[[], object], dev: torch.device, target_ms: float | None = None) -> dict:
    """Warm up (``WARMUP`` runs: compile, autotune, caches), then time repeats: median in ms,
    and the peak memory of one more run (GiB, everything allocated at that moment included)."""
    for _ in range(WARMUP):
        fn()
    sync(dev)
    t0 = time.perf_counter()
    fn()
    sync(dev)
    est_ms = (time.perf_counter() - t0) * 1e3
    target_ms = TARGET_MS if target_ms is None else target_ms
    repeats = int(min(30, max(MIN_REPEATS, target_ms / max(est_ms, 1e-3))))
    times = []
    for _ in range(repeats):
        if dev.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    peak = None
    if dev.type == "cuda":
        gc.collect()
        torch.cuda.reset_peak_memory_stats(dev)
        fn()
        sync(dev)
        peak = torch.cuda.max_memory_allocated(dev) / GiB
    return {"ms": statistics.median(times), "repeats": repeats, "peak_gib": peak}


def guarded(fn: Callable[[], dict], dev: torch.device) -> dict:
    """Run one measurement; an out-of-memory becomes a row that says so."""
    try:
        return fn()
    except torch.OutOfMemoryError:
        return {"status": "OOM"}
    finally:
        gc.collect()
        if dev.type == "cuda":
            torch.cuda.empty_cache()


def triton_ok(dev: torch.device) -> bool:
    """The kernel runs: on CUDA, or on the CPU in triton's interpreter (TRITON_INTERPRET=1)."""
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    return (dev.type == "cuda" or interpret) and distance.triton_available()


def bench_search(n: int, d: int, k: int, dev: torch.device) -> list[dict]:
    g = torch.Generator(device=dev).manual_seed(d * 7 + k)
    x = torch.randn(n, d, device=dev, generator=g)
    codebook = torch.randn(k, d, device=dev, generator=g)
    ref = nearest_code_torch(x, codebook).indices

    def agree(idx: torch.Tensor) -> float:
        return (idx == ref).double().mean().item()

    methods: dict[str, Callable[[], torch.Tensor]] = {
        "torch_chunked": lambda: nearest_code(x, codebook, backend="torch").indices,
        "cdist_argmin": lambda: torch.cdist(x, codebook).argmin(dim=1),
    }
    if triton_ok(dev):
        for precision in ("exact", "fast"):
            methods[f"triton_{precision}"] = functools.partial(
                lambda p: nearest_code(x, codebook, backend="triton", precision=p).indices,
                precision,
            )
        from vqlab.quantizers.ops.triton_nearest import nearest_code_triton

        # the top-8 list alone: what the certificate (and its fallback) costs on top
        methods["triton_fast_uncertified"] = lambda: (
            nearest_code_triton(x, codebook, precision="fast", certify=False).indices
        )
        x_bf, c_bf = x.bfloat16(), codebook.bfloat16()
        methods["bf16_gemm_floor"] = lambda: x_bf @ c_bf.T
    rows = []
    for name, fn in methods.items():

        def run(fn=fn, name=name) -> dict:
            res = measure(fn, dev)
            if name != "bf16_gemm_floor":
                res["agreement"] = agree(fn())
            return res

        rows.append({"section": "search", "method": name, "n": n, "d": d, "k": k,
                     **guarded(run, dev)})  # fmt: skip
    return rows


def make_vq(
    kind: str, d: int, k: int, dev: torch.device, search: str | None = None
) -> torch.nn.Module | str:
    """A fresh quantizer, or a string saying why there is none. search: vqlab's precision."""
    if kind == "vqlab":
        try:
            from vqlab.quantizers.vq import VectorQuantizer
        except ImportError as e:
            return f"not available ({e})"
        return VectorQuantizer(d, k, update="ema", search=search or "exact").to(dev)
    try:
        from vector_quantize_pytorch import VectorQuantize
    except ImportError:
        return "not installed"
    return VectorQuantize(dim=d, codebook_size=k, decay=0.99, commitment_weight=0.25).to(dev)


def vq_forward(kind: str, vq: torch.nn.Module, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(quantized, indices, loss) of either quantizer."""
    if kind == "vqlab":
        out = vq(z)
        return out.quantized, out.indices, out.loss
    quantized, indices, loss = vq(z)
    return quantized, indices, loss.sum()


def bench_train(n: int, d: int, k: int, dev: torch.device) -> list[dict]:
    g = torch.Generator(device=dev).manual_seed(d + k)
    z0 = torch.randn(16, n // 16, d, device=dev, generator=g)  # (B, T, D): N tokens
    variants = [("vqlab", None), ("vqlab", "fast"), ("peer", None)]
    if not triton_ok(dev):
        variants = [("vqlab", None), ("peer", None)]
    rows = []
    for kind, precision in variants:
        name = f"{kind}_{precision}" if precision else kind
        row = {"section": "train", "method": name, "n": n, "d": d, "k": k}
        vq = make_vq(kind, d, k, dev, precision)
        if isinstance(vq, str):
            rows.append({**row, "status": vq})
            continue

        def step(vq=vq, kind=kind) -> None:
            z = z0.clone().requires_grad_(True)
            quantized, _, loss = vq_forward(kind, vq, z)
            # a stand-in decoder loss, so the straight-through gradient is exercised
            (loss + quantized.square().mean()).backward()

        @torch.no_grad()
        def evaluate(vq=vq, kind=kind) -> torch.Tensor:
            return vq_forward(kind, vq, z0)[1]

        def run(vq=vq, step=step, evaluate=evaluate) -> dict:
            vq.train()
            res = measure(step, dev)
            vq.eval()
            ev = measure(evaluate, dev)
            idx = evaluate().reshape(-1)
            ref = nearest_code_torch(z0.reshape(-1, d), vq.codebook.reshape(k, d)).indices
            return {**res, "eval_ms": ev["ms"], "eval_peak_gib": ev["peak_gib"],
                    "agreement": (idx == ref).double().mean().item()}  # fmt: skip

        rows.append({**row, **guarded(run, dev)})
        del vq
    return rows


def clustered(n: int, k: int, d: int, dev: torch.device, spread: float, offset: float):
    """Codes in tight groups of 16 around shared centres, and data near the same centres."""
    g = torch.Generator(device=dev).manual_seed(n + k + d)
    centres = 3.0 * torch.randn(max(k // 16, 1), d, device=dev, generator=g) + offset
    codebook = centres.repeat_interleave(16, 0)[:k]
    codebook = codebook + spread * torch.randn(k, d, device=dev, generator=g)
    x = centres[torch.randint(0, centres.shape[0], (n,), device=dev, generator=g)]
    return x + spread * torch.randn(n, d, device=dev, generator=g), codebook


def as_near_as(pick: torch.Tensor, ref: torch.Tensor, x: torch.Tensor, c: torch.Tensor):
    """(N,) bool: ``pick`` is as near (fp64) as ``ref`` up to fp32 score rounding (ties aside)."""
    x64, c64 = x.double(), c.double()
    d_pick = (x64 - c64[pick]).pow(2).sum(1)
    d_ref = (x64 - c64[ref]).pow(2).sum(1)
    return d_pick <= d_ref + 2.0**-22 * (x64.pow(2).sum(1) + c64.pow(2).sum(1).max())


def fp64_nearest(x: torch.Tensor, c: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """(N,) fp64 argmin, chunked over rows."""
    parts = [torch.cdist(x[i : i + chunk].double(), c.double()).argmin(1) for i in
             range(0, x.shape[0], chunk)]  # fmt: skip
    return torch.cat(parts)


def bench_agreement(n: int, dev: torch.device, truth_rows: int = 2048) -> list[dict]:
    """Fast against exact search on data where bf16 scores are most and least at risk.

    Columns: ``agreement`` (same index as the fp32 reference), ``as_near`` (as near as the
    reference up to fp32 rounding: ties aside), on ``truth_rows`` rows the fraction equal
    to the fp64 argmin, for fast and for the fp32 reference itself, and ``fallback`` (the
    fraction of rows the fast mode's certificate sent to the exact search).
    """
    from vqlab.quantizers.ops.triton_nearest import nearest_code_triton

    rows = []
    for d in (8, 32, 256):
        for k in (1024, 16_384, 262_144):
            data = {
                "random": (torch.randn(n, d, device=dev), torch.randn(k, d, device=dev)),
                "clustered_0.1": clustered(n, k, d, dev, spread=0.1, offset=0.0),
                "clustered_0.01": clustered(n, k, d, dev, spread=0.01, offset=0.0),
                "offset_100": clustered(n, k, d, dev, spread=0.3, offset=100.0),
            }
            for name, (x, codebook) in data.items():
                exact = nearest_code_torch(x, codebook).indices
                stats: dict = {}
                fast = nearest_code_triton(x, codebook, precision="fast", stats=stats).indices
                truth = fp64_nearest(x[:truth_rows], codebook)
                rate = lambda hit: hit.double().mean().item()  # noqa: E731
                row = {"section": "agreement", "method": f"fast_vs_exact:{name}", "n": n, "d": d}
                rows.append({**row, "k": k, "agreement": rate(fast == exact),
                             "as_near": rate(as_near_as(fast, exact, x, codebook)),
                             "fast_vs_fp64": rate(fast[:truth_rows] == truth),
                             "exact_vs_fp64": rate(exact[:truth_rows] == truth),
                             "fallback": stats["fallback_rows"] / stats["rows"]})  # fmt: skip
    return rows


def add_ratios(rows: list[dict]) -> None:
    """Per shape: time over the bf16 GEMM floor, and over the peer's train step."""
    floor = {
        (r["d"], r["k"]): r["ms"] for r in rows if r["method"] == "bf16_gemm_floor" and "ms" in r
    }
    peer = {(r["d"], r["k"]): r["ms"] for r in rows if r["method"] == "peer" and "ms" in r}
    for r in rows:
        key = (r["d"], r["k"])
        if "ms" in r and key in floor and r["method"] != "bf16_gemm_floor":
            r["x_bf16_gemm"] = r["ms"] / floor[key]
        if r["section"] == "train" and "ms" in r and key in peer and r["method"] != "peer":
            r["x_peer"] = r["ms"] / peer[key]


def targets(rows: list[dict]) -> list[str]:
    """The issue's H100 targets, each as measured against its bound."""
    out = []
    for r in rows:
        if r["section"] == "train" and r["d"] == 32 and r["k"] == 16_384 and "ms" in r:
            if r["method"].startswith("vqlab") and "x_peer" in r:
                out.append(
                    f"K=16k D=32 train step {r['method']}: {r['x_peer']:.3f} x peer "
                    f"(target <= 0.1), peak {r['peak_gib']:.3f} GiB (target <= 1)"
                )
        if r["k"] == 262_144 and "x_bf16_gemm" in r and r["section"] in ("search", "train"):
            out.append(f"K=262k D={r['d']} {r['section']} {r['method']}: "
                       f"{r['x_bf16_gemm']:.2f} x bf16 GEMM (target <= 2)")  # fmt: skip
    return out


def environment(dev: torch.device) -> dict:
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.machine()
    env = {"device": name, "torch": torch.__version__, "python": platform.python_version()}
    for dist in ("triton", "vector-quantize-pytorch"):
        try:
            env[dist.replace("-", "_")] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            env[dist.replace("-", "_")] = "none"
    return env


def slug(s: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", s.lower()).strip("-")


def write(rows: list[dict], env: dict, dev: torch.device, out_dir: Path) -> Path:
    name = "cpu" if dev.type == "cpu" else slug(env["device"])
    # built as a string: Path.with_suffix would eat the ".0" of a version
    stem = f"vq_{name}_torch{slug(env['torch'])}_triton{slug(env['triton'])}"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps({"environment": env, "rows": rows}, indent=1))
    keys = list(dict.fromkeys(key for r in rows for key in r))
    with (out_dir / f"{stem}.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    return out_dir / f"{stem}.csv"


def plot(csv_path: Path) -> Path:
    """Search time against K, one line per method and D, read back from the results CSV."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with csv_path.open() as f:
        rows = [r for r in csv.DictReader(f) if r["section"] in ("search", "train") and r["ms"]]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, section in zip(axes, ("search", "train")):
        series: dict[tuple, list] = {}
        for r in rows:
            if r["section"] == section:
                series.setdefault((r["method"], r["d"]), []).append((int(r["k"]), float(r["ms"])))
        for (method, d), pts in sorted(series.items()):
            pts.sort()
            ax.plot(*zip(*pts), marker="o", label=f"{method} D={d}")
        ax.set(xscale="log", yscale="log", xlabel="codebook size K", ylabel="ms (median)",
               title=f"{section}: N={rows[0]['n'] if rows else '?'}")  # fmt: skip
        ax.legend(fontsize=7)
    fig.tight_layout()
    out = csv_path.parent / (csv_path.name.removesuffix(".csv") + ".png")
    fig.savefig(out, dpi=120)
    return out


def print_rows(rows: list[dict]) -> None:
    cols = ["section", "method", "d", "k", "ms", "peak_gib", "eval_ms", "agreement", "as_near",
            "fast_vs_fp64", "exact_vs_fp64", "fallback", "x_bf16_gemm", "x_peer",
            "status"]  # fmt: skip
    print(" | ".join(cols))
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
        print(" | ".join(cells))


def main() -> None:
    args = parse_args()
    if args.plot:
        print(plot(args.plot))
        return
    want = (
        args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    dev = torch.device(want)
    shapes = QUICK if args.quick or dev.type == "cpu" else FULL
    if args.smoke:
        global TARGET_MS, MIN_REPEATS, WARMUP
        shapes, TARGET_MS, MIN_REPEATS, WARMUP = SMOKE, 0.0, 1, 1
    sections = args.sections.split(",")
    started = time.perf_counter()
    rows: list[dict] = []
    # D-major, so a run cut short by the budget still has both sections for D=32
    plan = [(s, d, k) for d in shapes["dims"] for s in ("search", "train") if s in sections
            for k in shapes["ks"]]  # fmt: skip
    for section, d, k in plan:
        if time.perf_counter() - started > args.budget_s:
            rows.append({"section": section, "method": "*", "n": shapes["n"], "d": d, "k": k,
                         "status": "skipped: time budget"})  # fmt: skip
            continue
        bench = bench_search if section == "search" else bench_train
        new = bench(shapes["n"], d, k, dev)
        rows.extend(new)
        print_rows(new)
        write(rows, environment(dev), dev, args.out_dir)  # partial results survive a kill
    if "agreement" in sections and triton_ok(dev):
        if time.perf_counter() - started < args.budget_s:
            rows.extend(bench_agreement(shapes["n"], dev))
    add_ratios(rows)
    env = environment(dev)
    env["seconds"] = round(time.perf_counter() - started, 1)
    csv_path = write(rows, env, dev, args.out_dir)
    print(f"\n{env}\nwrote {csv_path} and .json; plot {plot(csv_path)}\n")
    print_rows(rows)
    for line in targets(rows):
        print(line)


if __name__ == "__main__":
    main()
