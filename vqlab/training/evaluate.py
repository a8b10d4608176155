"""Evaluation on the test set: encoder outputs, diagnostics and the arrays plots read."""

from __future__ import annotations

import numpy as np
import torch

from vqlab.data.dataset import Dataset
from vqlab.diagnostics import (
    class_separation,
    diagnose,
    effective_rank,
    mode_stats,
    probe_accuracy,
)
from vqlab.models.autoencoder import VQAutoencoder

EVAL_BATCH = 1024
SAMPLES_FILE = "eval_samples.npz"
SAMPLES_MAX = 2000


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
def encode_latents(model: VQAutoencoder, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Encoder outputs of every row of x as they are: (N, D, h, w) for a conv encoder."""
    was_training = model.training
    model.eval()
    out = torch.cat(
        [model.encode(x[i : i + EVAL_BATCH].to(device)) for i in range(0, len(x), EVAL_BATCH)]
    )
    model.train(was_training)
    return out


@torch.no_grad()
def evaluate(
    model: VQAutoencoder,
    data: Dataset,
    device: torch.device,
    *,
    quantize: bool,
    probes: bool = True,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Diagnostics on the test set -> (metrics, a sample of arrays for plots).

    With ``quantize`` the embeddings are taken in the quantizer's search space
    (``to_code_space``: after a ``code_dim`` projection or normalisation), where they are
    compared with the codebook. ``probes=False`` leaves out the linear probes (``probe_accuracy``,
    ``token_probe_accuracy``), the slow part, for the evaluations during training.
    """
    was_training = model.training
    model.eval()
    q = model.quantizer
    z_all, idx_all, recon_all = [], [], []
    for i in range(0, data.test_x.shape[0], EVAL_BATCH):
        out = model(data.test_x[i : i + EVAL_BATCH].to(device), quantize=quantize)
        if quantize:
            z_all.append(q.to_code_space(out.z_e))  # (B * positions, d)
        else:
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
        probes=probes,
        reconstructions=recon.reshape(recon.shape[0], -1),
        inputs=x.reshape(x.shape[0], -1),
        means=None if data.means is None else data.means.to(device),
        mode_radius=data.mode_radius,
    )
    if labels is not None:
        metrics.update(_label_metrics(z_e, indices, codebook, labels, per_position, probes))
    if indices is not None and hasattr(q, "split_indices"):
        metrics["per_scale"] = per_scale_metrics(q, indices.reshape(x.shape[0], -1))
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


def per_scale_metrics(quantizer, indices: torch.Tensor) -> list[dict[str, float]]:
    """Collapse per scale of a multi-scale quantizer: indices (N, L), coarse scale first ->
    ``[{scale, perplexity, usage, dead_codes}, ...]``, one entry per scale."""
    from vqlab.diagnostics.usage import code_counts, dead_codes, perplexity, usage

    out = []
    for side, level in zip(quantizer.scales, quantizer.split_indices(indices)):
        counts = code_counts(level, quantizer.codebook_size)
        out.append(
            {
                "scale": int(side),
                "perplexity": perplexity(counts),
                "usage": usage(counts),
                "dead_codes": int(dead_codes(counts)),
            }
        )
    return out


def _label_metrics(
    z_e: torch.Tensor,
    indices: torch.Tensor | None,
    codebook: torch.Tensor | None,
    labels: torch.Tensor,
    per_position: int,
    probes: bool = True,
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
        if probes:
            out["probe_accuracy"] = probe_accuracy(pooled, labels)
        out["embedding_effective_rank"] = effective_rank(pooled)
        if indices is not None:
            out.update(mode_stats(indices, labels.repeat_interleave(per_position), len(codebook)))
    if indices is not None and probes:
        z_q = codebook[indices].reshape(n, per_position, -1).mean(1)  # (n, D)
        out["token_probe_accuracy"] = probe_accuracy(z_q, labels)
    return out
