"""A CPU model of the fast nearest-code kernel's arithmetic: how often its certificate fails.

    python benchmarks/model_fast_search.py                     # synthetic data
    python benchmarks/model_fast_search.py --runs 'results/cifar10-cpu/runs/*4096*'

The fused fast kernel (``vqlab.quantizers.ops.triton_nearest``) scores against a bf16 copy of
the centred codebook, keeps the best 2 codes of every tile in a list of 8, re-scores those in
fp32, and certifies each row with :func:`_certify` from the lowest score it did not re-score
(each tile's third-best, and what fell out of the list); rows it cannot certify are searched
again exactly. This script replays that on the CPU without Triton: the same interleaved
copy, bf16 rounding and tiles, scores in fp64 (the kernel's fp32 accumulation errs far less
than the bf16 rounding modelled here), and the module's own :func:`_certify`. For each data
set it prints the fraction of rows sent to the exact search (``fallback``), the rows whose
certificate passed on a farther code than the fp64 nearest (``unsound``: must be 0), and how
often the top-8 list alone, without the certificate, picked a code as near as the fp64
nearest (relative 1e-6: exact duplicates of a code tie).

With ``--runs``, it also encodes 64 test images with each trained run (``vqlab train``
output) and uses their latents and the run's codebook: real encoder outputs.
"""

from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_vq import clustered  # noqa: E402

from vqlab.quantizers.ops.certify import certify_nearest as _certify  # noqa: E402
from vqlab.quantizers.ops.triton_prep import interleave  # noqa: E402


def model(x: torch.Tensor, c: torch.Tensor, block_k: int = 128) -> dict:
    """Replay the fast search on rows ``x`` (N, D) and codes ``c`` (K, D)."""
    n, k = x.shape[0], c.shape[0]
    mu = c.mean(0)
    rounded = (c - mu).bfloat16().double()
    g, s = interleave(k)
    p = torch.arange(g * s)
    code = (p % g) * s + p // g  # copy row -> code
    valid = code < k
    copy = torch.zeros(g * s, c.shape[1], dtype=torch.float64)
    copy[valid] = rounded[code[valid]]
    c_sq = copy.square().sum(1)
    c_sq[~valid] = float("inf")
    scores = c_sq[None] - 2.0 * (x.double() - mu.double()) @ copy.T  # (N, rows of the copy)
    pad = (-scores.shape[1]) % block_k
    scores = torch.cat([scores, torch.full((n, pad), float("inf"), dtype=scores.dtype)], 1)
    tiles = scores.view(n, -1, block_k)
    top = tiles.topk(min(3, block_k), dim=2, largest=False)
    offsets = torch.arange(tiles.shape[1])[None, :, None] * block_k
    kept_v = top.values[:, :, :2].reshape(n, -1)
    kept_p = (top.indices[:, :, :2] + offsets).reshape(n, -1)
    order = kept_v.argsort(1)
    listed = code.clamp(max=k - 1)[kept_p.gather(1, order[:, :8])]  # (N, 8) codes
    inf = torch.full((n,), float("inf"), dtype=torch.float64)
    ninth = kept_v.gather(1, order[:, 8:9]).squeeze(1) if kept_v.shape[1] > 8 else inf
    discarded = torch.minimum(top.values[:, :, 2].min(1).values, ninth)
    rescored = (x[:, None, :] - c[listed]).square().sum(2)  # fp32, as the kernel
    best, at = rescored.min(1)
    pick = listed.gather(1, at[:, None]).squeeze(1)
    truth = torch.cdist(x.double(), c.double()).argmin(1)
    ok = _certify(x, mu, c_sq.float(), discarded.float(), best, torch.bfloat16)
    x64, c64 = x.double(), c.double()
    farther = (x64 - c64[pick]).square().sum(1) > (x64 - c64[truth]).square().sum(1) * (1 + 1e-6)
    return {
        "fallback": ok.logical_not().double().mean().item(),
        "unsound": int((ok & farther).sum()),
        "top8_alone_as_near": farther.logical_not().double().mean().item(),
    }


def synthetic(n: int) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    cpu = torch.device("cpu")
    out = []
    for d in (8, 32, 256):
        for k in (1024, 16_384):
            g = torch.Generator().manual_seed(d + k)
            x, c = torch.randn(n, d, generator=g), torch.randn(k, d, generator=g)
            out += [
                (f"random D={d} K={k}", x, c),
                (f"clustered_0.1 D={d} K={k}", *clustered(n, k, d, cpu, 0.1, 0.0)),
                (f"clustered_0.01 D={d} K={k}", *clustered(n, k, d, cpu, 0.01, 0.0)),
                (f"offset_100 D={d} K={k}", *clustered(n, k, d, cpu, 0.3, 100.0)),
            ]  # fmt: skip
    return out


@torch.no_grad()
def from_runs(pattern: str, n: int) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    from vqlab.data.dataset import load_dataset
    from vqlab.training.checkpoint import load_checkpoint

    out = []
    for run in sorted(glob.glob(pattern)):
        ae, cfg, _ = load_checkpoint(run)
        z = ae.encode(load_dataset(cfg.data, 0).test_x[:64])  # (B, d, h, w)
        z = z.movedim(1, -1).reshape(-1, z.shape[1])[:n]
        codebook = getattr(ae.quantizer, "codebook", None)
        if codebook is None or codebook.shape[1] != z.shape[1]:
            # low-dim codes search a projection of z, and the peer keeps its own layout
            print(f"skipped {Path(run).name}: its search does not compare z with a codebook")
            continue
        out.append((Path(run).name, z.float(), codebook.detach().float()))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=2048)
    p.add_argument("--block-k", type=int, default=128, help="codes per tile (64 or 128 on GPU)")
    p.add_argument("--runs", help="glob of run folders whose latents and codebook to use")
    args = p.parse_args()
    data = from_runs(args.runs, args.rows) if args.runs else synthetic(args.rows)
    print(f"{'data':<55} {'fallback':>9} {'unsound':>8} {'top8 alone':>11}")
    for name, x, c in data:
        r = model(x, c, args.block_k)
        top8 = r["top8_alone_as_near"]
        print(f"{name:<55} {r['fallback']:>9.2%} {r['unsound']:>8} {top8:>11.2%}")


if __name__ == "__main__":
    main()
