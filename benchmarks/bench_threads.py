"""Does load hurt vqlab more than the peer? The VQ train step under each CPU thread setting.

    python benchmarks/bench_threads.py                 # N=16,384, D=32, K=4,096
    python benchmarks/bench_threads.py --settings 1:ACTIVE,2:ACTIVE,2:PASSIVE

Each setting ``threads:wait_policy`` runs in its own child process (OpenMP reads
``OMP_WAIT_POLICY`` once, when torch loads it), which times vqlab's VQ train step (forward,
backward, EMA update: ``bench_vq.py``'s step) and vector-quantize-pytorch's, interleaved step by
step, median of ``--repeats``. The ratio vqlab / peer within one child is what to read on a
shared machine; the 1-minute load average is recorded with each row.

Why the wait policy: with the default (GNU OpenMP spins before it sleeps) every parallel
region ends in a barrier where one thread spins while the other waits for a core that another
process holds, so on an oversubscribed machine each parallel op costs about a scheduler time
slice whatever its size. A step made of many small ops (a tiled search) pays that more often
than one made of a few large ones. ``PASSIVE`` makes waiting threads sleep at once.

Writes ``threads_cpu_torch<version>.csv`` and ``.json`` to ``--out-dir``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=16_384)
    p.add_argument("--d", type=int, default=32)
    p.add_argument("--k", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--settings", default="1:ACTIVE,2:ACTIVE,2:PASSIVE",
                   help="comma-separated threads:OMP_WAIT_POLICY")  # fmt: skip
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    return p.parse_args()


def child(args: argparse.Namespace) -> dict:
    """In this process's thread setting: median ms of both train steps, interleaved."""
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_vq import make_vq, vq_forward

    torch.manual_seed(0)
    z0 = torch.randn(16, args.n // 16, args.d)
    steps = {}
    for kind in ("vqlab", "peer"):
        vq = make_vq(kind, args.d, args.k, torch.device("cpu"))
        if isinstance(vq, str):
            return {"status": f"{kind}: {vq}"}
        vq.train()

        def step(vq=vq, kind=kind) -> None:
            z = z0.clone().requires_grad_(True)
            quantized, _, loss = vq_forward(kind, vq, z)
            (loss + quantized.square().mean()).backward()

        steps[kind] = step
    from _timing import interleaved_ms

    ms = interleaved_ms(steps, args.repeats)
    return {"torch_threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(), "vqlab_ms": ms["vqlab"],
            "peer_ms": ms["peer"], "x_peer": ms["vqlab"] / ms["peer"]}  # fmt: skip


def main() -> None:
    args = parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    rows = []
    for setting in args.settings.split(","):
        threads, policy = setting.split(":")
        env = {**os.environ, "OMP_NUM_THREADS": threads, "OMP_WAIT_POLICY": policy}
        cmd = [sys.executable, __file__, "--child", "--n", str(args.n), "--d", str(args.d),
               "--k", str(args.k), "--repeats", str(args.repeats)]  # fmt: skip
        load0 = os.getloadavg()[0]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        row = {"threads": int(threads), "wait_policy": policy, "n": args.n, "d": args.d,
               "k": args.k, **json.loads(out.stdout.strip().splitlines()[-1]),
               "loadavg_before": load0, "loadavg_after": os.getloadavg()[0]}  # fmt: skip
        rows.append(row)
        print(row, flush=True)
    import torch
    from _timing import write_rows

    write_rows(args.out_dir / f"threads_cpu_torch{torch.__version__.replace('+', '-')}", rows)


if __name__ == "__main__":
    main()
