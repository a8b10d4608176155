"""Where the CPU nearest-code search spends its time, against this CPU's own bounds.

    python benchmarks/profile_search.py                       # D 8,32,64,256 x K 1k..64k
    python benchmarks/profile_search.py --dims 8 --ks 16384 --repeats 9

Everything is timed in one process, the variants of a shape interleaved repeat by repeat and
the median kept, so a load that comes and goes falls on all of them alike and the ratios hold
on a shared machine (the absolute times do not).

Bounds, measured in the same process:

- ``sgemm``: GFLOP/s of a compute-bound square fp32 product (``--peak-n`` cubed).
- ``stream``: GB/s of a copy (bytes read + written) at two sizes: a 4 MiB tile, which the
  search's distance tiles are sized to stay in (L2/L3), and 256 MiB (DRAM).

A search of N rows against K codes of D dims does ``2 N K D`` flops and must at least write and
read each of its ``N K`` fp32 scores once (8 bytes), since torch has no fused GEMM-argmin on
the CPU. Its bound is the larger of ``2 N K D / sgemm`` and ``8 N K / stream(tile)``: compute
at large D, the traffic of the score tile at small D (the crossover is near D = sgemm /
stream(tile) * 4 flops per byte). ``of_bound`` is that bound over the measured time.

Variants (the tile loop of ``nearest_code_torch``, same tiles):

- ``search``: ``nearest_code_torch`` as it is now.
- ``search_addmm``: the loop before issue 23: ``addmm(c_sq, x, c.T, alpha=-2)`` and
  ``min(dim=1)`` per tile of at most 512 codes.
- ``gemm_only``: the current loop's GEMM per tile, no row minimum (where the rest goes).
- ``min_only``: the row minimum of a cache-resident tile, as many times as the search has tiles.
- ``mm_full``: ``x @ c.T`` into one N x K matrix (what a plain GEMM costs, no tiles, no min).

Writes ``search_profile_cpu_torch<version>.csv`` and ``.json`` to ``--out-dir``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import time
from collections.abc import Callable
from pathlib import Path

import torch
from _timing import interleaved_ms, write_rows

from vqlab.quantizers.nearest_torch import (
    AUGMENT_MAX_D,
    CPU_TILE_BYTES,
    CPU_TILE_COLS,
    augmented_operands,
    cpu_tile_shape,
    nearest_code_torch,
    tile_shape,
)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dims", default="8,32,64,256")
    p.add_argument("--ks", default="1024,4096,16384,65536")
    p.add_argument("--gflop", type=float, default=2.0, help="work per search call: sets N")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--peak-n", type=int, default=2048)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--variants", default="search,search_addmm,gemm_only,min_only,mm_full")
    p.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    return p.parse_args()


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each fn, called in turn (one warm-up round first)."""
    return {name: ms / 1e3 for name, ms in interleaved_ms(fns, repeats).items()}


def bounds(peak_n: int, repeats: int) -> dict[str, float]:
    """sgemm GFLOP/s and copy GB/s (read + write) at a 4 MiB tile and at 256 MiB."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(peak_n, peak_n, generator=g), torch.randn(peak_n, peak_n, generator=g)
    out = torch.empty(peak_n, peak_n)
    tile_src, tile_dst = torch.randn(CPU_TILE_BYTES // 4), torch.empty(CPU_TILE_BYTES // 4)
    big_src, big_dst = torch.randn(2**26), torch.empty(2**26)

    def tile_copies() -> None:
        for _ in range(16):
            tile_dst.copy_(tile_src)

    t = interleaved({"gemm": lambda: torch.mm(a, b, out=out), "tile": tile_copies,
                     "dram": lambda: big_dst.copy_(big_src)}, repeats)  # fmt: skip
    return {
        "sgemm_gflops": 2 * peak_n**3 / t["gemm"] / 1e9,
        "stream_tile_gbs": 16 * 2 * CPU_TILE_BYTES / t["tile"] / 1e9,
        "stream_dram_gbs": 2 * 4 * 2**26 / t["dram"] / 1e9,
    }


def search_addmm(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """The tile loop as it was before issue 23 (addmm with the code norms as bias)."""
    n, k = x.shape[0], c.shape[0]
    c_sq = (c * c).sum(1)
    best_d = torch.full((n,), float("inf"))
    best_i = torch.zeros(n, dtype=torch.long)
    rows, cols = tile_shape(n, k, CPU_TILE_BYTES, CPU_TILE_COLS)  # the tiles of then
    for r0 in range(0, n, rows):
        xr, bd, bi = x[r0 : r0 + rows], best_d[r0 : r0 + rows], best_i[r0 : r0 + rows]
        for c0 in range(0, k, cols):
            d = torch.addmm(c_sq[c0 : c0 + cols], xr, c[c0 : c0 + cols].T, alpha=-2.0)
            dmin, imin = d.min(dim=1)
            better = dmin < bd
            bd = torch.where(better, dmin, bd)
            bi = torch.where(better, imin + c0, bi)
        best_d[r0 : r0 + rows], best_i[r0 : r0 + rows] = bd, bi
    return best_i


def gemm_only(x: torch.Tensor, c: torch.Tensor) -> None:
    """The current search's GEMMs, tile by tile, into one reused tile: no row minimum."""
    n, k = x.shape[0], c.shape[0]
    if x.shape[1] <= AUGMENT_MAX_D:
        (xa, ca), bias = augmented_operands(x, c), None
    else:
        xa, ca, bias = x, -2.0 * c, (c * c).sum(1)
    rows, cols = cpu_tile_shape(n, k)
    buf = torch.empty(rows, cols)
    for r0 in range(0, n, rows):
        xr = xa[r0 : r0 + rows]
        for c0 in range(0, k, cols):
            cc, out = ca[c0 : c0 + cols], buf[: xr.shape[0], : min(cols, k - c0)]
            if bias is None:
                torch.mm(xr, cc.T, out=out)
            else:
                torch.addmm(bias[c0 : c0 + cols], xr, cc.T, out=out)


def min_only(n: int, k: int) -> Callable[[], None]:
    """The row minima of a tile kept in cache, as many as the search of (n, k) takes."""
    rows, cols = cpu_tile_shape(n, k)
    tile = torch.randn(rows, cols)
    count = -(-n // rows) * -(-k // cols)

    def run() -> None:
        for _ in range(count):
            tile.min(dim=1)

    return run


def profile_shape(d: int, k: int, args, peak: dict) -> dict:
    n = int(min(65_536, max(1024, args.gflop * 1e9 / (2 * k * d))))
    g = torch.Generator().manual_seed(d + k)
    x, c = torch.randn(n, d, generator=g), torch.randn(k, d, generator=g)
    fns = {
        "search": lambda: nearest_code_torch(x, c),
        "search_addmm": lambda: search_addmm(x, c),
        "gemm_only": lambda: gemm_only(x, c),
        "min_only": min_only(n, k),
        "mm_full": lambda: x @ c.T,
    }
    fns = {name: fns[name] for name in args.variants.split(",")}
    t = interleaved(fns, args.repeats)
    flops, score_bytes = 2 * n * k * d, 8 * n * k
    t_compute = flops / (peak["sgemm_gflops"] * 1e9)
    t_traffic = score_bytes / (peak["stream_tile_gbs"] * 1e9)
    row = {"n": n, "d": d, "k": k, "bound": "compute" if t_compute >= t_traffic else "traffic",
           "bound_ms": 1e3 * max(t_compute, t_traffic)}  # fmt: skip
    for name, secs in t.items():
        row[f"{name}_ms"] = 1e3 * secs
        if name.startswith("search"):
            row[f"{name}_of_sgemm"] = flops / secs / (peak["sgemm_gflops"] * 1e9)
            row[f"{name}_of_bound"] = max(t_compute, t_traffic) / secs
    return row


def slug(s: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", s.lower()).strip("-")


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    env = {"torch": torch.__version__, "python": platform.python_version(),
           "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "interop_threads": torch.get_num_interop_threads(),
           "loadavg_at_start": os.getloadavg(),
           "date": time.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
    peak = bounds(args.peak_n, args.repeats)
    env.update(peak)
    print(json.dumps(env), flush=True)
    rows = []
    for d in (int(v) for v in args.dims.split(",")):
        for k in (int(v) for v in args.ks.split(",")):
            rows.append(profile_shape(d, k, args, peak))
            r = rows[-1]
            print(" ".join(f"{key}={v:.3g}" if isinstance(v, float) else f"{key}={v}"
                           for key, v in r.items()), flush=True)  # fmt: skip
    env["loadavg_at_end"] = os.getloadavg()
    write_rows(args.out_dir / f"search_profile_cpu_torch{slug(torch.__version__)}", rows, env=env)


if __name__ == "__main__":
    main()
