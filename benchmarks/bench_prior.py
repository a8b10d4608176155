"""Time the MaskGIT prior: a train step against torch's TransformerEncoder, and sampling.

    python benchmarks/bench_prior.py                    # CPU: small and base sizes
    python benchmarks/bench_prior.py --device cuda --sample-n 1024

Train step = ``maskgit_loss`` forward + backward + AdamW step at batch 64 over L=64 tokens plus
a class token (K=1024, 10 classes). The baseline is the same prior built on
``torch.nn.TransformerEncoder`` (norm_first=True, batch_first=True, GELU, same width, depth,
heads, MLP ratio and dropout), driven by the same loss, so the two differ only in the blocks.
Sampling throughput is sequences per second of ``maskgit_sample`` at T=8 (with and without
CFG, which doubles the batch); in eval mode the baseline takes torch's fused inference path.

Writes ``benchmarks/results/prior_<device>_torch<version>.json`` and ``.csv``.
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

import torch
from torch import nn

from vqlab.priors import MaskGIT, maskgit_loss, maskgit_sample

SIZES = {"small": (2, 128, 4), "base": (4, 256, 4)}  # name -> (depth, width, heads)


class TorchEncoderPrior(nn.Module):
    """The baseline: MaskGIT's embedding and head around ``nn.TransformerEncoder``."""

    def __init__(self, codebook_size, seq_len, num_classes, depth, width, heads, dropout, mlp):
        super().__init__()
        self.codebook_size, self.seq_len, self.num_classes = codebook_size, seq_len, num_classes
        self.mask_id = codebook_size
        self.tok_emb = nn.Embedding(codebook_size + num_classes + 2, width)
        self.pos_emb = nn.Parameter(0.02 * torch.randn(1, seq_len + 1, width))
        layer = nn.TransformerEncoderLayer(
            width, heads, mlp * width, dropout, activation="gelu", batch_first=True,
            norm_first=True,
        )  # fmt: skip
        # enable_nested_tensor=False: no padding mask here, and it warns with norm_first
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, codebook_size)

    def forward(self, ids: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        null = self.codebook_size + 1 + self.num_classes
        cls = torch.full((ids.shape[0],), null, device=ids.device)
        if labels is not None:
            cls = torch.where(labels < 0, null, self.codebook_size + 1 + labels)
        x = self.tok_emb(torch.cat([cls[:, None], ids], 1)) + self.pos_emb
        return self.head(self.ln_f(self.encoder(x)[:, 1:]))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["small", "base"])
    p.add_argument("--codebook-size", type=int, default=1024)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--batch", type=int, default=64, help="train-step batch")
    p.add_argument("--train-steps", type=int, default=5, help="timed steps; median reported")
    p.add_argument("--sample-n", type=int, default=64, help="sequences per sampling run")
    p.add_argument("--steps", type=int, default=8, help="decoding steps T")
    p.add_argument("--repeats", type=int, default=2, help="timed sampling runs; median")
    # 1 by default: on the shared 2-core CPU a second thread mostly waits (see tests/conftest.py)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    return p.parse_args()


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], dev: torch.device, repeats: int, warmup: int = 1) -> list:
    """Seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(dev)
        t0 = time.perf_counter()
        fn()
        sync(dev)
        times.append(time.perf_counter() - t0)
    return times


def bench_model(model: nn.Module, base: dict, args: argparse.Namespace, dev) -> list[dict]:
    """Train-step time and sampling throughput of one prior (rows tagged with ``base``)."""
    g = torch.Generator(device=dev).manual_seed(0)
    k, nc = args.codebook_size, args.num_classes
    ids = torch.randint(k, (args.batch, args.seq_len), generator=g, device=dev)
    labels = torch.randint(nc, (args.batch,), generator=g, device=dev)
    sample_labels = torch.arange(args.sample_n, device=dev) % nc
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.96))

    def step() -> None:
        out = maskgit_loss(model, ids, labels, generator=g)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    t = statistics.median(timed(step, dev, args.train_steps, warmup=2))
    rows = [base | {"metric": "train_step_ms", "value": 1000 * t, "batch": args.batch}]
    for cfg in (0.0, 1.0):

        def sample(cfg: float = cfg) -> None:
            maskgit_sample(
                model, args.sample_n, labels=sample_labels, steps=args.steps, cfg=cfg,
                generator=g, batch_size=args.sample_n,
            )  # fmt: skip

        t = statistics.median(timed(sample, dev, args.repeats))
        metric = "sample_seq_per_s" + ("_cfg" if cfg else "")
        rows.append(base | {"metric": metric, "value": args.sample_n / t, "batch": args.sample_n})
    for r in rows:
        print(f"{r['size']:<6}{r['impl']:<14}{r['metric']:<22}{r['value']:>10.2f}", flush=True)
    return rows


def bench_size(name: str, args: argparse.Namespace, dev: torch.device) -> list[dict]:
    """Both implementations at one size, from the same seed."""
    depth, width, heads = SIZES[name]
    k, seq, nc = args.codebook_size, args.seq_len, args.num_classes
    rows = []
    for impl in ("vqlab", "torch_encoder"):
        torch.manual_seed(0)
        if impl == "vqlab":
            model = MaskGIT(k, seq, nc, depth=depth, width=width, heads=heads, dropout=0.1)
        else:
            model = TorchEncoderPrior(k, seq, nc, depth, width, heads, dropout=0.1, mlp=4)
        base = {"size": name, "impl": impl, "depth": depth, "width": width, "heads": heads}
        base["params"] = sum(p.numel() for p in model.parameters())
        rows += bench_model(model.to(dev), base, args, dev)
    return rows


def device_name(dev: torch.device) -> str:
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"


def environment(dev: torch.device, args: argparse.Namespace) -> dict:
    return {
        "device": device_name(dev),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "loadavg_at_start": os.getloadavg(),  # the machine is shared: read timings with this
        "python": platform.python_version(),
        "torch": torch.__version__,
        "args": {k: str(v) for k, v in vars(args).items()},
    }


def write(rows: list[dict], env: dict, out_dir: Path) -> str:
    def slug(s: str) -> str:
        return re.sub(r"[^a-z0-9.]+", "-", s.lower()).strip("-")

    stem = str(out_dir / f"prior_{slug(env['device'])}_torch{slug(env['torch'])}")
    out_dir.mkdir(parents=True, exist_ok=True)
    Path(stem + ".json").write_text(json.dumps({"env": env, "rows": rows}, indent=2) + "\n")
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(stem + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    return stem


def main() -> None:
    args = parse_args()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(args.device)
    torch.set_num_threads(args.threads)
    env = environment(dev, args)
    print(json.dumps({k: v for k, v in env.items() if k != "args"}))
    rows = [r for name in args.sizes for r in bench_size(name, args, dev)]
    env["loadavg_at_end"] = os.getloadavg()
    for name in args.sizes:
        ms = {r["impl"]: r["value"] for r in rows if r["size"] == name and "train" in r["metric"]}
        print(f"{name}: vqlab / torch_encoder train step = {ms['vqlab'] / ms['torch_encoder']:.2f}")
    print(f"wrote {write(rows, env, args.out_dir)}.json/.csv")


if __name__ == "__main__":
    main()
