"""The tokenizer task (``task=tokenizer``, the default): a VQ autoencoder and its losses.

One step: reconstruct this rank's shard of the batch, quantized or not as the schedule says,
and back-propagate ``MSE + loss.perceptual * perceptual + VQ losses + adaptive * loss.gan *
g_loss``; with ``loss.gan > 0`` the PatchGAN discriminator's loss on the same reconstruction
(detached) is back-propagated in the same pass into the discriminator alone (its parameters
are frozen while the generator's term is formed, so neither loss reaches the other network).
Both optimizers then step together. taming steps them one after the other with a fresh
forward in between; one forward is half the cost, and the discriminator is a step behind the
generator either way.

Deferred pretraining trains with the same reconstruction losses (MSE plus perceptual, and the
GAN from ``loss.gan_start``), just without VQ: the schedule says only when to quantize.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from vqlab.config import RunConfig
from vqlab.data.dataset import Dataset, load_dataset
from vqlab.errors import ConfigError
from vqlab.models.autoencoder import VQAutoencoder
from vqlab.models.registry import build_model
from vqlab.registry import QUANTIZERS
from vqlab.training.distributed import Dist, check_batch, shard, wrap
from vqlab.training.evaluate import SAMPLES_FILE, encode_all, evaluate
from vqlab.training.feed import BatchSampler, init_codebook
from vqlab.training.guard import is_finite, restore, snapshot
from vqlab.training.schedule import Schedule
from vqlab.training.tasks.base import StepLosses
from vqlab.validation import value_checks


class TokenizerTask:
    """The VQ autoencoder, its optimizer(s) and losses; see the module docstring."""

    def __init__(
        self, config: RunConfig, dist: Dist, schedule: Schedule, weights: Path | None = None
    ) -> None:
        self.config, self.dist, self.schedule = config, dist, schedule
        tc = config.train
        self.data: Dataset = load_dataset(config.data, config.seed)
        self.model: VQAutoencoder = build_model(
            config.model, config.vq, self.data.input_shape, device=dist.device
        )
        self.model.to(dist.device)
        self.input_shape = self.data.input_shape
        self.sampler = BatchSampler(self.data.train_x.shape[0], tc.batch_size, config.seed)
        check_batch(self.sampler.batch_size, dist)
        self._check_codebook_fits()
        self.modules: dict[str, nn.Module] = {"model": self.model}
        self.losses_config = config.loss
        self.perceptual = _perceptual_loss(config, dist.device)
        if config.loss.gan > 0:
            self.modules["discriminator"] = _discriminator(config, self.input_shape, dist.device)
        if weights is not None:  # a resume: before DDP copies rank 0's weights to every rank
            for name, module in self.modules.items():
                module.load_state_dict(load_file(str(weights / f"{name}.safetensors")))
        self.optimizers = {
            "model": torch.optim.Adam(
                self.model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay
            )
        }
        # a quantizer with parameters (update=grad) that deferred quantization bypasses at first
        # leaves them without gradients in those steps, which DDP must be told
        bypassed = tc.strategy == "deferred" and any(
            True for _ in self.model.quantizer.parameters()
        )
        self.net = wrap(self.model, dist, find_unused_parameters=bypassed)
        self.disc = None
        if "discriminator" in self.modules:
            disc = self.modules["discriminator"]
            lr = config.loss.disc_lr or tc.lr
            # taming's discriminator optimizer: Adam with beta1 = 0.5
            self.optimizers["discriminator"] = torch.optim.Adam(
                disc.parameters(), lr=lr, betas=(0.5, 0.9)
            )
            self.disc = wrap(disc, dist, find_unused_parameters=config.loss.gan_start > 0)
        self._samples: dict[str, np.ndarray] | None = None

    def describe(self) -> str:
        return f"{self.config.train.strategy} K={self.config.vq.codebook_size}"

    def phase(self, step: int) -> str:
        return self.schedule.phase(step)

    def _check_codebook_fits(self) -> None:
        """Refuse, before any step, a codebook the init could not fill from the training set."""
        vq = self.config.vq
        if not QUANTIZERS.get(vq.kind).fits_codebook:  # a fixed grid: K may exceed the data
            return
        if vq.init not in ("kmeans", "kmeans++", "sample", "gmm"):  # K distinct vectors or fits
            return
        positions = encode_all(self.model, self.data.train_x[:1], self.dist.device).shape[0]
        vectors = self.data.train_x.shape[0] * positions
        if vectors < vq.codebook_size:
            raise ConfigError(
                f"vq.codebook_size={vq.codebook_size} is larger than the {vectors} encoder "
                f"outputs of the training set; vq.init={vq.init} needs one per code"
            )

    def prepare(self, step: int) -> dict[str, Any] | None:
        if not self.schedule.init_at(step):
            return None
        info = init_codebook(self.model, self.data, self.config, self.dist.device, self.dist)
        return {"step": step, "phase": "init", **info}

    def losses(self, step: int) -> StepLosses:
        quantize = self.schedule.quantize_at(step)
        x = self.data.train_x[shard(self.sampler.next(), self.dist)].to(self.dist.device)
        # The engine's guard checks this step after the fact, on every rank alike. The
        # quantizer's own NaN/Inf input check would instead raise mid-forward, and under DDP on
        # one rank only, leaving the others waiting in a collective.
        blend = self.schedule.blend(step) if quantize else 1.0
        # blend only while the bridge is on: models with forward(x, quantize=) keep working
        bridge = {"blend": blend} if blend < 1 else {}
        with value_checks(False):
            out = self.net(x, quantize=quantize, **bridge)
        recon_loss = F.mse_loss(out.recon, x)
        loss = recon_loss + (out.vq.loss if out.vq is not None else 0.0)
        terms = {"recon_loss": recon_loss}
        if blend < 1:
            terms["blend"] = torch.tensor(blend)
        lc = self.losses_config
        if self.perceptual is not None:
            terms["perceptual_loss"] = self.perceptual(out.recon, x)
            loss = loss + lc.perceptual * terms["perceptual_loss"]
        terms.update(out.vq.losses if out.vq is not None else {})
        d_loss = None
        if self.disc is not None and step >= lc.gan_start:
            rec_total = recon_loss + lc.perceptual * terms.get("perceptual_loss", 0.0)
            g_terms, d_loss = self._gan_terms(x, out.recon, rec_total)
            loss = loss + g_terms["gan_weight"] * g_terms["g_loss"]
            terms.update(g_terms)
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        (loss if d_loss is None else loss + d_loss).backward()
        checks = {}
        if quantize:
            checks["codebook"] = is_finite(self.model.quantizer.codebook)
        return StepLosses({"loss": loss, **terms}, checks)

    def _gan_terms(
        self, x: torch.Tensor, recon: torch.Tensor, rec_total: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The generator's adversarial term with taming's adaptive weight, and the
        discriminator's loss (with the R1 penalty) on the detached reconstruction."""
        from vqlab.losses import (
            adaptive_weight,
            hinge_d_loss,
            hinge_g_loss,
            nonsaturating_d_loss,
            nonsaturating_g_loss,
            r1_penalty,
        )

        lc = self.losses_config
        hinge = lc.gan_loss == "hinge"
        disc = self.modules["discriminator"]
        disc.requires_grad_(False)  # the generator's term must not train the discriminator
        g_loss = (hinge_g_loss if hinge else nonsaturating_g_loss)(self.disc(recon))
        disc.requires_grad_(True)
        weight = lc.gan * adaptive_weight(
            rec_total, g_loss, self.model.last_layer, max_weight=lc.adaptive_max
        )
        real = x.detach().requires_grad_(lc.r1 > 0)
        logits_real = self.disc(real)
        logits_fake = self.disc(recon.detach())
        d_loss = (hinge_d_loss if hinge else nonsaturating_d_loss)(logits_real, logits_fake)
        terms = {"g_loss": g_loss, "gan_weight": weight, "d_loss": d_loss}
        if lc.r1 > 0:
            terms["r1_penalty"] = r1_penalty(logits_real, real)
            d_loss = d_loss + lc.r1 * terms["r1_penalty"]
        return terms, d_loss

    def save_volatile(self) -> dict[str, dict[str, torch.Tensor]]:
        # the EMA codebook update happens in forward, and so do batch-norm statistics of a
        # discriminator
        saved = {"quantizer": snapshot(self.model.quantizer)}
        if "discriminator" in self.modules:
            saved["discriminator"] = snapshot(self.modules["discriminator"])
        return saved

    def restore_volatile(self, saved: dict[str, dict[str, torch.Tensor]]) -> None:
        restore(self.model.quantizer, saved["quantizer"])
        if "discriminator" in saved:
            restore(self.modules["discriminator"], saved["discriminator"])

    def weights_finite(self) -> bool:
        return bool(is_finite(self.model.quantizer.codebook))

    def evaluate(self, step: int, *, final: bool) -> dict[str, Any]:
        # the linear probes are the slow part: only the final evaluation runs them
        quantize = final or self.schedule.quantize_at(step)
        metrics, samples = evaluate(
            self.model, self.data, self.dist.device, quantize=quantize, probes=final
        )
        if final:
            self._samples = samples
        return metrics

    def finish(self, out: Path, metrics: dict[str, Any]) -> dict[str, Any]:
        np.savez_compressed(out / SAMPLES_FILE, **self._samples)
        tc = self.config.train
        return {
            "strategy": tc.strategy,
            "codebook_size": self.config.vq.codebook_size,
            "steps": tc.steps,
            **metrics,
        }


def _perceptual_loss(config: RunConfig, device: torch.device) -> nn.Module | None:
    """The frozen network of ``loss.perceptual_net`` in LPIPS's baseline form, or None."""
    lc = config.loss
    if lc.perceptual <= 0:
        return None
    from vqlab.losses import PerceptualLoss, load_lpips

    if lc.perceptual_net == "lpips":
        return load_lpips().to(device)
    from vqlab.evaluation.featnet import load_featnet

    return PerceptualLoss(load_featnet(lc.perceptual_net)).to(device)


def _discriminator(
    config: RunConfig, input_shape: tuple[int, ...], device: torch.device
) -> nn.Module:
    """The PatchGAN of ``loss.disc_*``. GroupNorm rather than taming's BatchNorm: with batch
    statistics each image's logits depend on the rest of its batch (and on the rank's shard
    under DDP), which the R1 penalty and data parallelism both get wrong."""
    from vqlab.losses import PatchDiscriminator

    lc = config.loss
    if len(input_shape) != 3:
        raise ConfigError(f"loss.gan > 0 needs images; got samples of shape {input_shape}")
    side, least = min(input_shape[1:]), 3 * 2**lc.disc_layers
    if side < least:
        raise ConfigError(
            f"loss.disc_layers={lc.disc_layers} needs images of side >= {least}; these are "
            f"{side} pixels: use fewer layers"
        )
    disc = PatchDiscriminator(
        input_shape[0], width=lc.disc_width, layers=lc.disc_layers, norm="group"
    )
    return disc.to(device)
