"""Compile the fused nearest-code kernel for a CUDA target without a GPU.

Triton can lower a kernel all the way to a cubin ahead of time: only ``ptxas`` (shipped in the
triton wheel) is needed, not a device or a driver. This script does that for every launch
configuration the autotuner's pruner keeps, at each D, in both precisions, with the installed
triton, and prints per configuration whether it compiled, the registers per thread, the
local-memory bytes (register spills), the shared memory Triton allocated against the pruner's
estimate and the device limit, and whether the scoring dot became ``wgmma`` (sm_90 tensor
cores), ``mma.sync`` or plain FMAs. Compile seconds are near 0 where Triton's on-disk cache
already held the kernel.

It answers what the CPU interpreter cannot: does the kernel as written compile for the GPU
under this triton, does any kept configuration need more shared memory than the device has,
and does anything spill. It says nothing about speed.

    python benchmarks/compile_kernel.py                       # sm_90 (H100), all D
    python benchmarks/compile_kernel.py --d 32 256 --jobs 2
    python benchmarks/compile_kernel.py --arch 80 --smem-limit 166912   # A100

Writes ``benchmarks/results/compile_sm{arch}_triton{version}.csv`` (and ``.json``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

warnings.filterwarnings("ignore", message="TRITON_DEFAULT_FP_FUSION")  # triton 3.9 notice
if os.environ.get("TRITON_INTERPRET"):
    sys.exit("compile_kernel.py: unset TRITON_INTERPRET (the interpreter compiles nothing)")

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

import vqlab.quantizers.ops.triton_nearest as tn  # noqa: E402
import vqlab.quantizers.ops.triton_tuning as tuning  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
H100_SMEM_OPTIN = 232_448  # bytes: shared_memory_per_block_optin of an H100 (227 KiB)
DS = (1, 8, 32, 64, 128, 256, 512)
# inner strides of contiguous tensors: 1, which the JIT specialises into constants
UNIT_STRIDES = ("stride_xd", "stride_sd", "stride_cd", "stride_rd")


def signature(fast: bool, x_dtype: str) -> dict[str, str]:
    """Argument types as the launcher sees them for contiguous inputs of dtype ``x_dtype``.

    Like the JIT, integer arguments equal to 1 (:data:`UNIT_STRIDES`) are constants.
    """
    scored = "*bf16" if fast else x_dtype  # fast scores the bf16 copies, exact the inputs
    types = {
        "x_ptr": x_dtype,
        "xs_ptr": scored,
        "xl_ptr": scored,
        "c_ptr": scored,
        "c_sq_ptr": "*fp32",
        "r_ptr": x_dtype,
        "idx_ptr": "*i64",
        "dist_ptr": "*fp32",
        "disc_ptr": "*fp32",
    }
    constant = (*UNIT_STRIDES, "D", "FAST", "BLOCK_N", "BLOCK_K", "BLOCK_D")
    return {
        name: "constexpr" if name in constant else types.get(name, "i32")
        for name in tn._nearest_kernel.arg_names
    }


def constants(d: int, fast: bool, meta: dict) -> dict:
    return {**dict.fromkeys(UNIT_STRIDES, 1), "D": d, "FAST": fast, **meta}


def divisibility(d: int) -> dict:
    """The JIT's 16-divisibility hints: every pointer (torch allocations are aligned), and the
    row counts and row strides when they are multiples of 16 (N and K are taken as such)."""
    names = tn._nearest_kernel.arg_names
    hinted = [n for n in names if n.endswith("_ptr")] + ["N", "K", "k_per_split"]
    if d % 16 == 0:
        hinted += ["stride_xn", "stride_sn", "stride_cn", "stride_rn"]
    return {(names.index(n),): [["tt.divisibility", 16]] for n in hinted if n in names}


def kept_configs(d: int, fast: bool, smem_limit: int) -> list[triton.Config]:
    """What the autotuner's pruner keeps on a device with ``smem_limit`` bytes per block."""
    return tuning._keep(tuning._configs(fast), d, fast, smem_limit)


def resources(cubin: bytes) -> dict:
    """Registers, stack and local memory per thread, as ``cuobjdump -res-usage`` reads them."""
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([str(tool), "-res-usage", f.name], capture_output=True, text=True)
    m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", out.stdout)
    if not m:
        return {"regs": None, "stack": None, "local": None}
    return {"regs": int(m[1]), "stack": int(m[2]), "local": int(m[4])}


def compile_one(job: tuple) -> dict:
    d, fast, x_dtype, meta, num_warps, num_stages, arch, smem_limit = job
    row = {
        "precision": "fast" if fast else "exact",
        "D": d,
        "x_dtype": x_dtype.lstrip("*"),
        "BLOCK_N": meta["BLOCK_N"],
        "BLOCK_K": meta["BLOCK_K"],
        "BLOCK_D": meta["BLOCK_D"],
        "num_warps": num_warps,
        "num_stages": num_stages,
    }
    cfg = triton.Config(meta, num_warps=num_warps, num_stages=num_stages)
    row["smem_estimate"] = tuning._smem_bytes(cfg, d, fast)
    src = ASTSource(
        tn._nearest_kernel,
        signature(fast, x_dtype),
        constexprs=constants(d, fast, meta),
        attrs=divisibility(d),
    )
    target = GPUTarget("cuda", arch, 32)
    t0 = time.perf_counter()
    try:
        kernel = triton.compile(
            src, target=target, options={"num_warps": num_warps, "num_stages": num_stages}
        )
    except Exception as e:  # noqa: BLE001 - the row records what broke
        row.update(ok=False, error=f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
        row["compile_s"] = round(time.perf_counter() - t0, 1)
        return row
    row["compile_s"] = round(time.perf_counter() - t0, 1)
    ptx = kernel.asm.get("ptx", "")
    row.update(resources(kernel.asm["cubin"]))
    row["smem"] = kernel.metadata.shared
    row["fits"] = kernel.metadata.shared <= smem_limit
    row["dot"] = "wgmma" if "wgmma" in ptx else "mma.sync" if "mma.sync" in ptx else "fma"
    row.update(ok=True, error="")
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", type=int, default=90, help="compute capability x10 (90 = H100)")
    p.add_argument("--smem-limit", type=int, default=H100_SMEM_OPTIN, help="bytes per block")
    p.add_argument("--d", type=int, nargs="+", default=list(DS))
    p.add_argument("--precision", choices=("exact", "fast", "both"), default="both")
    p.add_argument("--x-dtype", default="fp32", choices=("fp32", "fp16", "bf16"))
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)

    fasts = {"exact": (False,), "fast": (True,), "both": (False, True)}[args.precision]
    smem = args.smem_limit
    jobs = [
        (d, fast, "*" + args.x_dtype, c.kwargs, c.num_warps, c.num_stages, args.arch, smem)
        for fast in fasts
        for d in args.d
        for c in kept_configs(d, fast, args.smem_limit)
    ]
    print(
        f"compiling {len(jobs)} configurations for sm_{args.arch} with triton "
        f"{triton.__version__} (no GPU), {args.jobs} at a time",
        flush=True,
    )
    head = "precision    D  tile (N,K,D) w/s     regs local   smem  estimate  fits  dot      s"
    print(head)
    rows = []
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for row in pool.map(compile_one, jobs):
            rows.append(row)
            tile = f"{row['BLOCK_N']},{row['BLOCK_K']},{row['BLOCK_D']}"
            ws = f"{row['num_warps']}/{row['num_stages']}"
            if row["ok"]:
                print(
                    f"{row['precision']:<9}{row['D']:>4}  {tile:<13}{ws:<6}{row['regs']:>6}"
                    f"{row['local']:>6}{row['smem']:>7}{row['smem_estimate']:>10}"
                    f"  {'yes' if row['fits'] else 'NO':<5} {row['dot']:<8}{row['compile_s']:>4}",
                    flush=True,
                )
            else:
                print(f"{row['precision']:<9}{row['D']:>4}  {tile:<13}{ws:<6}FAILED {row['error']}")

    failed = [r for r in rows if not r["ok"]]
    too_big = [r for r in rows if r["ok"] and not r["fits"]]
    spills = [r for r in rows if r["ok"] and r["local"]]
    print(
        f"\n{len(rows) - len(failed)}/{len(rows)} compiled; {len(too_big)} over the "
        f"{args.smem_limit}-byte shared-memory limit; {len(spills)} spill registers"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"compile_sm{args.arch}_{args.x_dtype}_triton{triton.__version__}"
    csv_path, json_path = args.out / f"{stem}.csv", args.out / f"{stem}.json"
    with open(csv_path, "w", newline="") as f:
        fields = list(dict.fromkeys(k for r in rows for k in r))  # failed rows have fewer
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    meta = {
        "command": "python " + " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "triton": triton.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "arch": args.arch,
        "smem_limit": args.smem_limit,
        "rows": rows,
    }
    json_path.write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {csv_path} and {json_path.name}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
