"""The one training loop. Standard and deferred quantization differ only in the Schedule."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from vqlab.config import RunConfig
from vqlab.data.dataset import Dataset, load_dataset
from vqlab.diagnostics import (
    class_separation,
    diagnose,
    effective_rank,
    mode_stats,
    probe_accuracy,
)
from vqlab.models.autoencoder import VQAutoencoder
from vqlab.models.registry import build_model
from vqlab.training.checkpoint import save_checkpoint
from vqlab.training.logging import RunWriter
from vqlab.training.schedule import Schedule

EVAL_BATCH = 1024
SAMPLES_FILE = "eval_samples.npz"
SAMPLES_MAX = 2000


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda was asked for but no CUDA device is available")
    return torch.device(name)


class BatchSampler:
    """Seeded epochs of shuffled indices; ``position`` is the data position within the epoch."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size = n, min(batch_size, n)
        self.gen = torch.Generator().manual_seed(seed)
        self.perm = torch.randperm(n, generator=self.gen)
        self.position = 0

    def next(self) -> torch.Tensor:
        if self.position + self.batch_size > self.n:
            self.perm = torch.randperm(self.n, generator=self.gen)
            self.position = 0
        idx = self.perm[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return idx


@torch.no_grad()
def encode_all(model: VQAutoencoder, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Encoder outputs of every row of x, flattened to (N * positions, D)."""
    was_training = model.training
    model.eval()
    chunks = []
    q = model.quantizer
    for i in range(0, x.shape[0], EVAL_BATCH):
        z = model.encode(x[i : i + EVAL_BATCH].to(device))
        chunks.append(z.movedim(q.channel_dim, -1).reshape(-1, q.dim))
    model.train(was_training)
    return torch.cat(chunks)


@torch.no_grad()
def evaluate(
    model: VQAutoencoder, data: Dataset, device: torch.device, *, quantize: bool
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Diagnostics on the test set -> (metrics, a sample of arrays for plots)."""
    was_training = model.training
    model.eval()
    q = model.quantizer
    z_all, idx_all, recon_all = [], [], []
    for i in range(0, data.test_x.shape[0], EVAL_BATCH):
        out = model(data.test_x[i : i + EVAL_BATCH].to(device), quantize=quantize)
        z_all.append(out.z_e.movedim(q.channel_dim, -1).reshape(-1, q.dim))
        recon_all.append(out.recon)
        if out.vq is not None:
            idx_all.append(out.vq.indices.reshape(-1))
    model.train(was_training)
    z_e, recon = torch.cat(z_all), torch.cat(recon_all)
    x = data.test_x.to(device)
    per_position = z_e.shape[0] // x.shape[0]
    indices = torch.cat(idx_all) if idx_all else None
    codebook = q.codebook.detach() if quantize else None
    labels = None if data.test_labels is None else data.test_labels.to(device)
    per_image = per_position > 1  # images: many positions (tokens) per labelled sample
    metrics = diagnose(
        codebook=codebook,
        embeddings=z_e,
        indices=indices,
        labels=None if per_image else labels,
        reconstructions=recon.reshape(recon.shape[0], -1),
        inputs=x.reshape(x.shape[0], -1),
        means=None if data.means is None else data.means.to(device),
        mode_radius=data.mode_radius,
    )
    if labels is not None:
        metrics.update(_label_metrics(z_e, indices, codebook, labels, per_position))
    # images keep a small sample: 256 images of 32x32 are already 3 MB of pixels
    n = min(SAMPLES_MAX if not per_image else 256, x.shape[0])
    samples = {
        "x": x[:n].reshape(n, -1).cpu().numpy(),
        "z_e": z_e[: n * per_position].cpu().numpy(),
        "recon": recon[:n].reshape(n, -1).cpu().numpy(),
        "codebook": q.codebook.detach().cpu().numpy(),
    }
    if data.test_labels is not None:
        samples["labels"] = data.test_labels[:n].numpy()
    if data.means is not None:
        samples["means"] = data.means.numpy()
    if idx_all:
        samples["indices"] = torch.cat(idx_all)[: n * per_position].cpu().numpy()
    return metrics, samples


def _label_metrics(
    z_e: torch.Tensor,
    indices: torch.Tensor | None,
    codebook: torch.Tensor | None,
    labels: torch.Tensor,
    per_position: int,
) -> dict[str, float]:
    """Class metrics of samples: embeddings mean-pooled over each sample's positions (n, D).

    For vector data (one position per sample) pooling changes nothing. ``token_probe_accuracy``
    is the same linear probe on the quantized vectors, i.e. what the tokens keep of the class.
    """
    n = labels.shape[0]
    pooled = z_e.reshape(n, per_position, -1).mean(1)  # (n, D)
    out: dict[str, float] = {}
    if per_position > 1:  # for vectors, diagnose() computed these with the labels already
        out["class_separation"] = class_separation(pooled, labels)
        out["probe_accuracy"] = probe_accuracy(pooled, labels)
        out["embedding_effective_rank"] = effective_rank(pooled)
        if indices is not None:
            out.update(mode_stats(indices, labels.repeat_interleave(per_position), len(codebook)))
    if indices is not None:
        z_q = codebook[indices].reshape(n, per_position, -1).mean(1)  # (n, D)
        out["token_probe_accuracy"] = probe_accuracy(z_q, labels)
    return out


def init_codebook(model: VQAutoencoder, data: Dataset, config: RunConfig, device) -> dict:
    """k-means (or another ``vq.init``) on a seeded sample of the current encoder's outputs."""
    gen = torch.Generator().manual_seed(config.seed + 17)
    n = min(config.vq.init_samples, data.train_x.shape[0])
    rows = torch.randperm(data.train_x.shape[0], generator=gen)[:n]
    z = encode_all(model, data.train_x[rows], device)
    model.quantizer.init_from_data(
        z, method=config.vq.init, iters=config.vq.kmeans_iters, seed=config.seed
    )
    return {"init_samples": int(z.shape[0]), "init_method": config.vq.init}


def train(
    config: RunConfig,
    out: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Train one run into the folder ``out``; returns the summary (also in ``summary.json``)."""
    t0 = time.perf_counter()
    writer = RunWriter(out, overwrite=overwrite)
    writer.start(config, command)
    try:
        summary = _run(config, writer, progress)
    finally:
        writer.close()
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    writer.summary(summary)
    return summary


def _run(config: RunConfig, writer: RunWriter, progress: bool) -> dict[str, Any]:
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    data = load_dataset(config.data, config.seed)
    model = build_model(config.model, config.vq, data.input_shape).to(device)
    tc = config.train
    schedule = Schedule(tc.strategy, tc.steps, tc.pretrain_steps)
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    sampler = BatchSampler(data.train_x.shape[0], tc.batch_size, config.seed)
    bar = tqdm(
        range(tc.steps),
        desc=f"{tc.strategy} K={config.vq.codebook_size}",
        disable=not progress,
        leave=False,
    )
    for step in bar:
        if schedule.init_at(step):
            info = init_codebook(model, data, config, device)
            writer.log({"step": step, "phase": "init", **info})
        quantize = schedule.quantize_at(step)
        x = data.train_x[sampler.next()].to(device)
        out = model(x, quantize=quantize)
        recon_loss = F.mse_loss(out.recon, x)
        loss = recon_loss + (out.vq.loss if out.vq is not None else 0.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        last = step == tc.steps - 1
        if step % tc.log_every == 0 or last:
            row = {
                "step": step,
                "phase": schedule.phase(step),
                "loss": loss.item(),
                "recon_loss": recon_loss.item(),
            }
            if out.vq is not None:
                row.update({k: v.item() for k, v in out.vq.losses.items()})
            if step % tc.eval_every == 0 or last:
                metrics, _ = evaluate(model, data, device, quantize=quantize)
                row.update({"eval": True, **metrics})
            writer.log(row)
            bar.set_postfix(phase=schedule.phase(step), loss=f"{loss.item():.4f}")
    metrics, samples = evaluate(model, data, device, quantize=True)
    np.savez_compressed(writer.out / SAMPLES_FILE, **samples)
    save_checkpoint(model, config, writer.out / "checkpoint", data.input_shape)
    return {
        "strategy": tc.strategy,
        "codebook_size": config.vq.codebook_size,
        "steps": tc.steps,
        **metrics,
    }
