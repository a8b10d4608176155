"""Where ``vqlab tokenize`` spends its time on CIFAR-10: reading the data, the encoder, the search.

    python benchmarks/profile_tokenize.py --data ../shared/data/cifar10            # K = 1024
    python benchmarks/profile_tokenize.py --data ../shared/data/cifar10 --images 60000

``vqlab tokenize`` reads both splits (``load_dataset``: decoded once into vqlab's cache, then
memory-mapped) and runs ``Tokenizer.encode`` in batches of 256: the encoder, then the
quantizer's eval forward (one nearest-code search per batch). This script times those stages
separately on a tokenizer of the cifar10 cpu preset's shape (conv, width 16, 8x8 latents of
D = 64, single scale, K = ``--k``) with its initial weights (the cost of a stage does not
depend on what the weights learned): the data load twice (the first may decode, the second
reads the cache), then ``--images`` training images through the encoder and the quantizer,
stage by stage per batch. Images per second of encode + search are what a 60k-image run
would see after the load.

Writes ``tokenize_profile_cpu_torch<version>.txt`` to ``--out-dir``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="the CIFAR-10 folder")
    p.add_argument("--k", type=int, default=1024)
    p.add_argument("--images", type=int, default=5120, help="training images to encode")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from vqlab.config.parse import build_config
    from vqlab.data.dataset import load_dataset
    from vqlab.models.registry import build_model
    from vqlab.tokenizer import BATCH

    values = {"model.kind": "conv", "model.width": 16, "model.downsample": 4,
              "model.latent_dim": 64, "vq.codebook_size": args.k, "data.name": "cifar10",
              "data.path": args.data}  # fmt: skip
    config = build_config(values, [])
    loads = []
    for _ in range(2):
        t0 = time.perf_counter()
        data = load_dataset(config.data, config.seed)
        loads.append(time.perf_counter() - t0)
    torch.manual_seed(0)
    model = build_model(config.model, config.vq, data.input_shape).eval()
    x_all = data.train_x[: args.images]
    stages = {"to_tensor": 0.0, "encoder": 0.0, "search": 0.0}
    with torch.no_grad():
        for i in range(0, x_all.shape[0], BATCH):
            t0 = time.perf_counter()
            x = torch.as_tensor(x_all[i : i + BATCH]).float()
            t1 = time.perf_counter()
            z = model.encode(x)
            t2 = time.perf_counter()
            model.quantizer(z)
            t3 = time.perf_counter()
            stages["to_tensor"] += t1 - t0
            stages["encoder"] += t2 - t1
            stages["search"] += t3 - t2
    total = sum(stages.values())
    n = x_all.shape[0]
    lines = [
        f"# benchmarks/profile_tokenize.py --k {args.k} --images {args.images} "
        f"--threads {args.threads}",
        f"# torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"load average at end {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d %H:%M')}",
        f"load_dataset: first {loads[0]:.2f} s, second (cached) {loads[1]:.2f} s "
        f"({data.train_x.shape[0]} + {data.test_x.shape[0]} images)",
        f"{n} images in batches of {BATCH}: " + ", ".join(
            f"{name} {secs:.2f} s ({100 * secs / total:.0f}%)" for name, secs in stages.items()
        ),
        f"encode + search: {n / total:.0f} images/s; 60,000 images would take "
        f"{60_000 / (n / total):.0f} s after the load",
    ]  # fmt: skip
    text = "\n".join(lines) + "\n"
    print(text)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"tokenize_profile_cpu_torch{torch.__version__.replace('+', '-')}.txt"
    out.write_text(text)


if __name__ == "__main__":
    main()
