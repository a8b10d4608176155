"""Where a multi-scale (VAR) tokenizer step spends its time, against single-scale on one grid.

    python benchmarks/profile_multiscale.py                 # the var preset's CIFAR-10 model
    python benchmarks/profile_multiscale.py --threads 1 --batch 64 --repeats 7

Both tokenizers are the same conv autoencoder (32x32 images, down 4x to an 8x8 latent of D
channels, width ``--width``) with one codebook of K codes: ``vq.kind=single`` quantizes the
8x8 grid once; ``vq.kind=multiscale`` runs VAR's residual pass over ``--scales`` (one search
per scale, bicubic upsampling and a phi conv per scale, EMA update pooled over scales). A step
is the model's forward (quantize) + MSE reconstruction and VQ loss + backward, no optimizer.
The two steps are timed interleaved (median), then one multi-scale step and one single-scale
step run under torch's profiler, and the ops that take the most self time are listed with the
quantizer's share, so the next change can go where the time is.

Writes ``multiscale_profile_cpu_torch<version>.txt`` to ``--out-dir``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from _timing import interleaved_ms


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--k", type=int, default=1024)
    p.add_argument("--scales", default="1,2,3,4,6,8")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    return p.parse_args()


def build(kind: str, args: argparse.Namespace) -> torch.nn.Module:
    from vqlab.config.parse import build_config
    from vqlab.models.registry import build_model

    values = {"model.kind": "conv", "model.width": args.width, "model.downsample": 4,
              "model.latent_dim": args.dim, "vq.codebook_size": args.k, "vq.update": "ema",
              "vq.kind": kind, "data.name": "cifar10", "data.path": "unused"}  # fmt: skip
    if kind == "multiscale":
        values["vq.scales"] = args.scales
    config = build_config(values, [])
    torch.manual_seed(0)
    return build_model(config.model, config.vq, (3, 32, 32)).train()


def make_step(model: torch.nn.Module, x: torch.Tensor):
    def step() -> None:
        out = model(x)
        loss = (out.recon - x).square().mean() + out.vq.loss
        loss.backward()
        model.zero_grad(set_to_none=True)

    return step


def top_ops(step, rows: int = 14) -> tuple[str, float]:
    """The profiler's table of one step (self CPU time) and the step's total ms."""
    with torch.profiler.profile() as prof:
        with torch.profiler.record_function("step"):
            step()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
    total = sum(e.self_cpu_time_total for e in prof.key_averages()) / 1e3
    return table, total


def quantizer_share(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median ms of the encoder, the quantizer (forward + backward of its loss) and the rest."""
    times: dict[str, list] = {"encoder": [], "quantizer": []}
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        with torch.no_grad():
            z = model.encoder(x)
        t1 = time.perf_counter()
        zq = z.clone().requires_grad_(True)
        out = model.quantizer(zq)
        (out.loss + out.quantized.square().mean()).backward()
        t2 = time.perf_counter()
        times["encoder"].append(t1 - t0)
        times["quantizer"].append(t2 - t1)
    return {name: 1e3 * statistics.median(t[1:]) for name, t in times.items()}


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x = torch.rand(args.batch, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    models = {kind: build(kind, args) for kind in ("single", "multiscale")}
    steps = {kind: make_step(m, x) for kind, m in models.items()}
    ms = interleaved_ms(steps, args.repeats)
    lines = [
        f"# benchmarks/profile_multiscale.py {vars(args)}",
        f"# torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"load average at end {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d %H:%M')}",
        f"step ms (median of {args.repeats}, interleaved): single {ms['single']:.1f}, "
        f"multiscale {ms['multiscale']:.1f}, ratio {ms['multiscale'] / ms['single']:.2f}",
    ]
    for kind, model in models.items():
        share = quantizer_share(model, x, args.repeats)
        lines.append(f"{kind}: encoder forward {share['encoder']:.1f} ms, quantizer forward + "
                     f"backward {share['quantizer']:.1f} ms")  # fmt: skip
    for kind, fn in steps.items():
        table, total = top_ops(fn)
        lines += ["", f"## {kind}: one step under the profiler ({total:.1f} ms self time)", table]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"multiscale_profile_cpu_torch{torch.__version__.replace('+', '-')}.txt"
    out.write_text(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
