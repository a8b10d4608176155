"""Time the MaskGIT and VAR priors: a train step against torch's TransformerEncoder, and sampling.

    python benchmarks/bench_prior.py                    # CPU: MaskGIT, small and base sizes
    python benchmarks/bench_prior.py --priors maskgit,var --threads 2
    python benchmarks/bench_prior.py --device cuda --sample-n 1024

Train step = ``maskgit_loss`` forward + backward + AdamW step at batch 64 over L=64 tokens plus
a class token (K=1024, 10 classes). The baseline is the same prior built on
``torch.nn.TransformerEncoder`` (norm_first=True, batch_first=True, GELU, same width, depth,
heads, MLP ratio and dropout), driven by the same loss, so the two differ only in the blocks.
Sampling throughput is sequences per second of ``maskgit_sample`` at T=8 (with and without
CFG, which doubles the batch); in eval mode the baseline takes torch's fused inference path.

VAR (``--priors var``): ``var_loss`` forward + backward + AdamW step at the same batch over the
``--scales`` sequence (L = sum p^2, 130 for 1,2,3,4,6,8) with a frozen ``MultiScaleQuantizer``
(D = ``--latent-dim``) giving the teacher-forcing inputs. Its baseline is the same embedding
and head around ``nn.TransformerEncoder`` with the block-causal mask, so the two differ in the
blocks (VAR's AdaLN modulation costs one extra ``Linear(width, 6 width)`` per block). Only the
train step is timed for VAR.

Rows alternate the two implementations step by step (``--interleave``, the default): on a
shared machine the load then falls on both alike, and the ratio of the medians is what to read.

Writes ``benchmarks/results/prior_<device>_torch<version>.json`` and ``.csv`` (``--out-dir``).
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

from vqlab.priors import VAR, MaskGIT, block_causal_mask, maskgit_loss, maskgit_sample, var_loss

SIZES = {"small": (2, 128, 4), "base": (4, 256, 4)}  # name -> (depth, width, heads)


def encoder(width: int, heads: int, depth: int, dropout: float, mlp: int) -> nn.Module:
    """torch's pre-LN encoder with the priors' GELU MLP, batch first."""
    layer = nn.TransformerEncoderLayer(
        width, heads, mlp * width, dropout, activation="gelu", batch_first=True,
        norm_first=True,
    )  # fmt: skip
    # enable_nested_tensor=False: no padding mask here, and it warns with norm_first
    return nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)


class TorchEncoderPrior(nn.Module):
    """The MaskGIT baseline: MaskGIT's embedding and head around ``nn.TransformerEncoder``."""

    def __init__(self, codebook_size, seq_len, num_classes, depth, width, heads, dropout, mlp):
        super().__init__()
        self.codebook_size, self.seq_len, self.num_classes = codebook_size, seq_len, num_classes
        self.mask_id = codebook_size
        self.tok_emb = nn.Embedding(codebook_size + num_classes + 2, width)
        self.pos_emb = nn.Parameter(0.02 * torch.randn(1, seq_len + 1, width))
        self.encoder = encoder(width, heads, depth, dropout, mlp)
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, codebook_size)

    def forward(self, ids: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        null = self.codebook_size + 1 + self.num_classes
        cls = torch.full((ids.shape[0],), null, device=ids.device)
        if labels is not None:
            cls = torch.where(labels < 0, null, self.codebook_size + 1 + labels)
        x = self.tok_emb(torch.cat([cls[:, None], ids], 1)) + self.pos_emb
        return self.head(self.ln_f(self.encoder(x)[:, 1:]))


class TorchEncoderVAR(nn.Module):
    """The VAR baseline: VAR's inputs (class start, ``Linear(D, width)`` of the teacher-forcing
    inputs, positions) and head around ``nn.TransformerEncoder`` with the block-causal mask.
    No AdaLN: the class reaches the finer scales through attention only."""

    def __init__(self, codebook_size, scales, latent_dim, num_classes, depth, width, heads,
                 dropout, mlp):  # fmt: skip
        super().__init__()
        self.codebook_size, self.scales, self.latent_dim = codebook_size, tuple(scales), latent_dim
        self.num_classes = num_classes
        self.seq_len = sum(p * p for p in scales)
        self.class_emb = nn.Embedding(num_classes + 1, width)
        self.pos_emb = nn.Parameter(0.02 * torch.randn(1, self.seq_len, width))
        self.word_embed = nn.Linear(latent_dim, width)
        self.encoder = encoder(width, heads, depth, dropout, mlp)
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, codebook_size)
        # torch's bool mask is True where attention is NOT allowed
        self.register_buffer("mask", ~block_causal_mask(self.scales), persistent=False)

    def forward(self, x_in: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """x_in (B, L - p_1^2, D), labels (B,) or None -> logits (B, L, K)."""
        b, first = x_in.shape[0], self.scales[0] ** 2
        rows = torch.full((b,), self.num_classes, device=x_in.device)
        if labels is not None:
            rows = torch.where(labels < 0, self.num_classes, labels)
        start = self.class_emb(rows)[:, None].expand(b, first, -1)
        h = torch.cat([start, self.word_embed(x_in)], 1) + self.pos_emb
        return self.head(self.ln_f(self.encoder(h, mask=self.mask)))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--priors", default="maskgit", help="comma-separated: maskgit, var")
    p.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["small", "base"])
    p.add_argument("--codebook-size", type=int, default=1024)
    p.add_argument("--seq-len", type=int, default=64, help="MaskGIT's L")
    p.add_argument("--scales", default="1,2,3,4,6,8", help="VAR's scales")
    p.add_argument("--latent-dim", type=int, default=32, help="VAR's quantizer D")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--batch", type=int, default=64, help="train-step batch")
    p.add_argument("--train-steps", type=int, default=5, help="timed steps; median reported")
    p.add_argument("--sample-n", type=int, default=64, help="sequences per sampling run (0: none)")
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


def interleaved(fns: list[Callable[[], object]], dev: torch.device, repeats: int) -> list[list]:
    """Seconds of each fn, called in turn ``repeats`` times after 2 warm-up rounds: a load that
    comes and goes falls on all of them alike."""
    for _ in range(2):
        for fn in fns:
            fn()
    times: list[list] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, t in zip(fns, times):
            sync(dev)
            t0 = time.perf_counter()
            fn()
            sync(dev)
            t.append(time.perf_counter() - t0)
    return times


def make_step(prior: str, model: nn.Module, args, dev, quantizer=None) -> Callable[[], None]:
    """One train step of ``model``: the prior's loss, backward, AdamW step."""
    g = torch.Generator(device=dev).manual_seed(0)
    k, nc = args.codebook_size, args.num_classes
    seq = model.seq_len
    ids = torch.randint(k, (args.batch, seq), generator=g, device=dev)
    labels = torch.randint(nc, (args.batch,), generator=g, device=dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.96))

    def step() -> None:
        if prior == "var":
            loss = var_loss(model, quantizer, ids, labels, generator=g).loss
        else:
            loss = maskgit_loss(model, ids, labels, generator=g).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def bench_sampling(model: nn.Module, base: dict, args, dev) -> list[dict]:
    """MaskGIT sampling throughput with and without CFG (rows tagged with ``base``)."""
    g = torch.Generator(device=dev).manual_seed(0)
    sample_labels = torch.arange(args.sample_n, device=dev) % args.num_classes
    rows = []
    for cfg in (0.0, 1.0):

        def sample(cfg: float = cfg) -> None:
            maskgit_sample(
                model, args.sample_n, labels=sample_labels, steps=args.steps, cfg=cfg,
                generator=g, batch_size=args.sample_n,
            )  # fmt: skip

        t = statistics.median(timed(sample, dev, args.repeats))
        metric = "sample_seq_per_s" + ("_cfg" if cfg else "")
        rows.append(base | {"metric": metric, "value": args.sample_n / t, "batch": args.sample_n})
    return rows


def build(prior: str, impl: str, size: str, args, dev) -> nn.Module:
    """A fresh prior of ``size`` (same seed for both implementations)."""
    depth, width, heads = SIZES[size]
    k, nc = args.codebook_size, args.num_classes
    torch.manual_seed(0)
    if prior == "var":
        scales = tuple(int(p) for p in args.scales.split(","))
        if impl == "vqlab":
            model = VAR(k, scales, args.latent_dim, nc, depth=depth, width=width, heads=heads,
                        dropout=0.1)  # fmt: skip
        else:
            model = TorchEncoderVAR(k, scales, args.latent_dim, nc, depth, width, heads, 0.1, 4)
    elif impl == "vqlab":
        model = MaskGIT(k, args.seq_len, nc, depth=depth, width=width, heads=heads, dropout=0.1)
    else:
        model = TorchEncoderPrior(k, args.seq_len, nc, depth, width, heads, dropout=0.1, mlp=4)
    return model.to(dev)


def frozen_quantizer(args, dev) -> nn.Module:
    """The multi-scale quantizer whose teacher-forcing inputs VAR reads (random codebook)."""
    from vqlab.quantizers.multiscale import MultiScaleQuantizer

    scales = tuple(int(p) for p in args.scales.split(","))
    torch.manual_seed(1)
    return MultiScaleQuantizer(args.latent_dim, args.codebook_size, scales).to(dev).eval()


def bench_size(prior: str, size: str, args, dev: torch.device) -> list[dict]:
    """Both implementations of ``prior`` at one size: train steps interleaved, then sampling."""
    depth, width, heads = SIZES[size]
    quantizer = frozen_quantizer(args, dev) if prior == "var" else None
    models = {impl: build(prior, impl, size, args, dev) for impl in ("vqlab", "torch_encoder")}
    steps = [make_step(prior, m, args, dev, quantizer) for m in models.values()]
    times = interleaved(steps, dev, args.train_steps)
    rows = []
    for (impl, model), t in zip(models.items(), times):
        base = {"prior": prior, "size": size, "impl": impl, "depth": depth, "width": width,
                "heads": heads, "params": sum(p.numel() for p in model.parameters())}  # fmt: skip
        rows.append(base | {"metric": "train_step_ms", "value": 1000 * statistics.median(t),
                            "batch": args.batch, "seq_len": model.seq_len})  # fmt: skip
        if prior == "maskgit" and args.sample_n > 0:
            rows += bench_sampling(model, base, args, dev)
    for r in rows:
        print(f"{prior:<8}{size:<6}{r['impl']:<14}{r['metric']:<22}{r['value']:>10.2f}", flush=True)
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


def add_ratios(rows: list[dict]) -> None:
    """Train step vqlab / torch_encoder per (prior, size), on the vqlab row."""
    ms = {(r["prior"], r["size"], r["impl"]): r["value"] for r in rows
          if r["metric"] == "train_step_ms"}  # fmt: skip
    for r in rows:
        key = (r["prior"], r["size"], "torch_encoder")
        if r["metric"] == "train_step_ms" and r["impl"] == "vqlab" and key in ms:
            r["x_torch_encoder"] = r["value"] / ms[key]
            print(f"{r['prior']} {r['size']}: vqlab / torch_encoder train step = "
                  f"{r['x_torch_encoder']:.2f}")  # fmt: skip


def main() -> None:
    args = parse_args()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(args.device)
    torch.set_num_threads(args.threads)
    env = environment(dev, args)
    print(json.dumps({k: v for k, v in env.items() if k != "args"}))
    rows: list[dict] = []
    for prior in args.priors.split(","):
        for size in args.sizes:
            rows += bench_size(prior, size, args, dev)
            write(rows, env, args.out_dir)  # what finished survives a timeout
    env["loadavg_at_end"] = os.getloadavg()
    add_ratios(rows)
    print(f"wrote {write(rows, env, args.out_dir)}.json/.csv")


if __name__ == "__main__":
    main()
