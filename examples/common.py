"""What both example loops share and is not the point of them: arguments, data, the encoder
and decoder, batches, and the measurement at the end.

The data and the encoder/decoder come from vqlab's config, data and model builders so that the
loops train exactly the model ``vqlab train`` trains under the same ``--config``/``--set``
(the comparison in results/plugin-cpu needs that); the quantizer and the training loop are the
examples' own, and nothing here imports vqlab's training engine.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from vqlab import load_config
from vqlab.data.dataset import load_dataset
from vqlab.diagnostics import code_counts, perplexity, usage
from vqlab.models.registry import build_model


def parse_args(argv: list[str] | None, description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", default="configs/synthetic.yaml", help="a vqlab config file")
    p.add_argument("--set", action="append", default=[], help="KEY=VALUE, as vqlab train")
    p.add_argument("--deferred", action="store_true", help="wrap the quantizer (the plug-in)")
    p.add_argument("--out", type=Path, default=None, help="write the metrics here (JSON)")
    p.add_argument("--sample-window", type=int, default=None, help="DeferredQuantizer option")
    return p.parse_args(argv)


def setup(args: argparse.Namespace):
    """(config, data, encoder, decoder): the settings, data and networks of ``vqlab train``."""
    config = load_config(args.config, args.set)
    torch.manual_seed(config.seed)
    data = load_dataset(config.data, config.seed)
    model = build_model(config.model, config.vq, data.input_shape)
    return config, data, model.encoder, model.decoder


def plugin_options(config, args: argparse.Namespace) -> dict:
    """DeferredQuantizer's settings from the config, as ``vqlab train --set
    train.strategy=deferred`` reads them: the switch at ``train.pretrain_steps``, a sample of
    ``vq.init_samples`` rows, ``vq.kmeans_iters`` Lloyd steps, the run's seed."""
    return {
        "switch_at": config.train.pretrain_steps,
        "init_samples": config.vq.init_samples,
        "kmeans_iters": config.vq.kmeans_iters,
        "seed": config.seed,
        "sample_window": args.sample_window,
    }


def batches(n: int, batch_size: int, steps: int, seed: int):
    """``steps`` index batches of shuffled epochs, seeded."""
    gen = torch.Generator().manual_seed(seed)
    perm, pos = torch.randperm(n, generator=gen), 0
    for _ in range(steps):
        if pos + batch_size > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        yield perm[pos : pos + batch_size]
        pos += batch_size


@torch.no_grad()
def measure(config, data, encoder: nn.Module, indices_of, decode, seconds: float) -> dict:
    """Usage and perplexity of the codes over the test set (vqlab's definitions), and the
    reconstruction MSE; ``indices_of(z_e)`` and ``decode(z_e)`` run the example's quantizer."""
    for m in (encoder,):
        m.eval()
    ids, sq, n = [], 0.0, 0
    for i in range(0, data.test_x.shape[0], 512):
        x = data.test_x[i : i + 512]
        z = encoder(x)
        ids.append(indices_of(z).reshape(-1))
        sq += float(((decode(z) - x) ** 2).sum())
        n += x.numel()
    counts = code_counts(torch.cat(ids), config.vq.codebook_size)
    return {
        "usage": usage(counts),
        "perplexity": perplexity(counts),
        "recon_mse": sq / n,
        "codebook_size": config.vq.codebook_size,
        "seconds": round(seconds, 2),
    }


def report(metrics: dict, out: Path | None) -> None:
    print(json.dumps(metrics))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(metrics, indent=2))


def clock() -> float:
    return time.perf_counter()
