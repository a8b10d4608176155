"""``vqlab evaluate``: a tokenizer's image quality and collapse diagnostics in one ``eval.json``.

- ``r_fd``, ``r_kd`` (``r_kd_std``): FD and KD between the test images and their
  reconstructions, in the feature space of a vqlab feature net (not FID: the report names the
  net by its sha256), with the real-against-real floor beside them (``floor_fd``,
  ``floor_kd``: a train subset of the same size against the test images);
- ``psnr``, ``ssim`` on the uint8 pictures, ``recon_mse`` on the training scale [-1, 1];
- ``perceptual_distance``: LPIPS's baseline form in the *evaluation* feature net's maps (a
  tokenizer trained with ``loss.perceptual`` used another net); ``lpips`` only where real
  LPIPS ran (``lpips=True`` and the package with its weights);
- the collapse diagnostics of the test set and a verdict in words
  (:mod:`vqlab.diagnostics.verdict`).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from vqlab.data.dataset import load_dataset
from vqlab.diagnostics.verdict import collapse_verdict, data_reference
from vqlab.evaluation.errors import FeatNetError
from vqlab.evaluation.featnet import load_featnet
from vqlab.evaluation.frechet import fd_kd
from vqlab.evaluation.image_metrics import psnr, ssim
from vqlab.outdir import check_out
from vqlab.tokenizer import BATCH, Tokenizer
from vqlab.training.evaluate import evaluate
from vqlab.training.logging import prepare_out_dir, write_json


def check_featnet_fits(net: torch.nn.Module, input_shape: tuple[int, ...]) -> None:
    """A feature net scores images of the size and channels it was trained on: its features of
    other images are not comparable (it pools adaptively, so nothing else would say so)."""
    shape = getattr(net, "info", {}).get("image_shape")  # [C, H, W] of its training images
    if shape is None:
        return
    if list(shape) != list(input_shape):
        (c, h, w), (tc, th, tw) = shape, input_shape
        raise FeatNetError(
            f"the feature net was trained on {w}x{h} images with {c} channels; this tokenizer's "
            f"are {tw}x{th} with {tc}: train a feature net on this data"
        )


def reconstruct(tok: Tokenizer, x: torch.Tensor) -> torch.Tensor:
    """decode(encode(x)) of float images (N, C, H, W), batched -> (N, C, H, W) on the CPU."""
    return torch.cat(
        [tok.decode(tok.encode(x[i : i + BATCH])).cpu() for i in range(0, len(x), BATCH)]
    )


def evaluate_tokenizer(
    run: str | Path,
    data_path: str | Path,
    featnet: str | Path,
    out: str | Path | None = None,
    *,
    limit: int = 0,
    lpips: bool = False,
    command: str = "",
    progress: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Score the tokenizer of ``run`` on the test split at ``data_path`` (the first ``limit``
    images of a fixed random subset when ``limit > 0``); writes ``out/eval.json`` and
    ``out/report.md`` when ``out`` is given (a non-empty ``out`` only with ``overwrite``).
    Returns the metrics."""
    t0 = time.perf_counter()
    if out is not None:
        check_out(out, overwrite=overwrite)
    tok = Tokenizer.from_pretrained(run)
    net = load_featnet(featnet)
    check_featnet_fits(net, tok.input_shape)
    dc = dataclasses.replace(tok.config.data, path=str(data_path), test_limit=limit)
    data = load_dataset(dc, tok.config.seed)
    real = tok.to_uint8(data.test_x)
    recon = reconstruct(tok, data.test_x)
    fake = tok.to_uint8(recon)
    r = fd_kd(real, fake, net, progress=progress)
    gen = torch.Generator().manual_seed(0)
    floor_rows = torch.randperm(data.train_x.shape[0], generator=gen)[: len(real)]
    floor = fd_kd(tok.to_uint8(data.train_x[floor_rows]), real, net, progress=progress)
    metrics: dict[str, Any] = {
        "r_fd": r["fd"],
        "r_kd": r["kd"],
        "r_kd_std": r["kd_std"],
        "floor_fd": floor["fd"],
        "floor_kd": floor["kd"],
        "n": r["n_real"],
        "featnet_sha256": r["featnet_sha256"],
        "psnr": psnr(real, fake),
        "ssim": ssim(real, fake),
        "recon_mse": float(torch.mean((recon - data.test_x) ** 2)),
        "perceptual_distance": perceptual_distance(net, data.test_x, recon),
    }
    if lpips:
        from vqlab.losses import load_lpips

        metrics["lpips"] = perceptual_distance(None, data.test_x, recon, loss=load_lpips())
    diag, _ = evaluate(tok.model, data, tok.device, quantize=True)
    metrics.update(diag)
    reference = data_reference(data.test_x, data.test_labels)
    metrics.update(reference)
    metrics.update(collapse_verdict(metrics, dim=tok.config.model.latent_dim, reference=reference))
    metrics["seconds"] = round(time.perf_counter() - t0, 3)
    if out is not None:
        out = prepare_out_dir(out, overwrite=overwrite)
        write_json(out / "eval.json", metrics)
        (out / "report.md").write_text(eval_report(run, metrics, command))
    return metrics


@torch.no_grad()
def perceptual_distance(
    net: torch.nn.Module | None, x: torch.Tensor, y: torch.Tensor, *, loss=None
) -> float:
    """Mean LPIPS-baseline distance of image pairs (N, C, H, W) in [-1, 1] through ``net``."""
    from vqlab.losses import PerceptualLoss

    loss = loss if loss is not None else PerceptualLoss(net, reduction="none")
    total = 0.0
    for i in range(0, len(x), BATCH):
        total += float(loss(x[i : i + BATCH], y[i : i + BATCH]).sum())
    return total / max(len(x), 1)


def eval_report(run: str | Path, m: dict[str, Any], command: str) -> str:
    from vqlab.reports.markdown import markdown_table, provenance

    sha = (m.get("featnet_sha256") or "")[:12]
    quality = [
        {"metric": f"r-FD (featnet {sha})", "value": m["r_fd"], "floor": m["floor_fd"]},
        {"metric": f"r-KD (featnet {sha})", "value": m["r_kd"], "floor": m["floor_kd"]},
        *({"metric": k, "value": m[k], "floor": ""} for k in ("psnr", "ssim", "recon_mse")),
        {
            "metric": "perceptual distance (featnet maps)",
            "value": m["perceptual_distance"],
            "floor": "",
        },
    ]
    skip = {"verdict", "featnet_sha256"}
    rest = [
        {"metric": k, "value": v} for k, v in m.items() if k not in skip and not isinstance(v, list)
    ]
    return (
        f"# Evaluation of {run}\n\n" + "\n\n".join(m["verdict"]) + "\n\n## Image quality\n\n"
        f"FD in the feature space of featnet {sha} (a vqlab-trained classifier, not Inception: "
        f"this is not FID). The floor is a train subset against the test images, N={m['n']}.\n\n"
        f"{markdown_table(quality, ['metric', 'value', 'floor'])}\n\n## Everything measured\n\n"
        f"{markdown_table(rest, ['metric', 'value'])}\n\n## How this was made\n\n"
        f"{provenance(command or 'vqlab evaluate', m['seconds'])}\n"
    )
