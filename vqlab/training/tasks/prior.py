"""The prior task (``task=prior``): a generative prior over a token file's ids (MaskGIT, or
VAR over a multi-scale tokenizer's ids, whose frozen quantizer builds VAR's inputs).

Data is a token file (``data.name=tokens``, ``data.path``) as ``vqlab tokenize`` writes it, or any
file with the same keys. One step masks a random share of each sequence (``prior.mask_schedule``)
and trains the transformer to predict the masked ids (:func:`vqlab.priors.maskgit_loss`), with
AdamW (β = (0.9, 0.96), as MaskGIT) and ``train.lr`` under ``train.warmup_steps`` and
``train.lr_schedule`` (the engine applies it). The random masks draw from the global torch RNG,
which every checkpoint saves, so a resumed prior equals an uninterrupted one.

The summary holds ``val_loss``, ``val_masked_accuracy`` and ``val_perplexity`` over the masked
positions of the test ids, at ``prior.eval_mask_ratio`` and a fixed seed (VAR: ``val_loss``,
``val_accuracy``, ``val_perplexity`` over every position, teacher-forced).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from vqlab.config import RunConfig
from vqlab.memory import check_prior_memory
from vqlab.priors.facts import token_facts, write_facts
from vqlab.priors.maskgit import evaluate_prior, maskgit_loss
from vqlab.priors.pretrained import build_prior, load_quantizer
from vqlab.priors.tokens import TokenFileError, load_tokens
from vqlab.training.distributed import Dist, check_batch, shard, sum_over_ranks
from vqlab.training.feed import BatchSampler
from vqlab.training.guard import is_finite
from vqlab.training.schedule import Schedule
from vqlab.training.tasks.base import StepLosses

# One train step costs batch * (L + 1) * (CPU_TOKEN + CPU_RATE * work) seconds on one CPU
# thread, work = depth * 12 W^2 + W K per token. Fitted to MaskGIT's two idle steps on the 2-core
# EPYC (benchmarks/results/idle-2026-12-03/prior_cpu_torch2.13.0-cpu.csv: 0.558 s at 2 x 128,
# 2.316 s at 4 x 256, K=1024, batch 64, L=64); it puts VAR's (L=130) at 0.91x and 0.97x of
# theirs. The weight term alone (the rule before) read the small priors at half their cost.
CPU_RATE = 1.4659e-10
CPU_TOKEN = 5.724e-05
ANNOUNCE_SECONDS = 300  # longer CPU budgets are stated before training starts


def cpu_budget_seconds(config: RunConfig, tokens_len: int, codebook_size: int) -> float:
    """Estimated CPU seconds of a prior's training (see :data:`CPU_RATE`)."""
    pc, tc = config.prior, config.train
    work = pc.depth * 12 * pc.width**2 + pc.width * codebook_size
    return tc.steps * tc.batch_size * (tokens_len + 1) * (CPU_TOKEN + work * CPU_RATE)


class PriorTask:
    """MaskGIT over token ids; see the module docstring."""

    def __init__(
        self, config: RunConfig, dist: Dist, schedule: Schedule, weights: Path | None = None
    ) -> None:
        self.config, self.dist = config, dist
        tc = config.train
        self.tokens = t = load_tokens(config.data.path)
        if not len(t.test_ids):
            raise TokenFileError(
                f"{config.data.path}: test_ids is empty; a prior is evaluated on held-out rows "
                "(tokenize a dataset that has a test split)"
            )
        # K checked against the tokenizer; written to the run folder at the end (sampling)
        self.facts = token_facts(t, config.data.path)
        pc = config.prior
        check_prior_memory(
            t.codebook_size, t.seq_len, t.num_classes, pc.width, pc.depth, dist.device
        )
        seconds = cpu_budget_seconds(config, t.seq_len, t.codebook_size)
        if dist.device.type == "cpu" and dist.is_main and seconds > ANNOUNCE_SECONDS:
            print(
                f"vqlab: this prior trains {config.train.steps} steps on the CPU: about "
                f"{seconds / 3600:.1f} h (width {pc.width}, depth {pc.depth}, batch "
                f"{config.train.batch_size}, L={t.seq_len}, K={t.codebook_size}); lower "
                "train.steps or prior.width/depth for a quick try",
                file=sys.stderr,
                flush=True,
            )
        self.var = config.prior.kind == "var"
        self.quantizer = load_quantizer(self.tokens, dist.device) if self.var else None
        self.model = build_prior(config, self.tokens, self.quantizer).to(dist.device)
        self.input_shape = (self.tokens.seq_len,)
        n = self.tokens.train_ids.shape[0]
        self.sampler = BatchSampler(n, tc.batch_size, config.seed)
        check_batch(self.sampler.batch_size, dist)
        self.modules: dict[str, nn.Module] = {"model": self.model}
        if weights is not None:
            self.model.load_state_dict(load_file(str(weights / "model.safetensors")))
        if dist.enabled:  # every rank starts from rank 0's weights
            from vqlab.training.distributed import broadcast_module

            broadcast_module(self.model, dist)
        self.optimizers = {
            "model": torch.optim.AdamW(
                self.model.parameters(), lr=tc.lr, betas=(0.9, 0.96), weight_decay=tc.weight_decay
            )
        }
        self.train_ids = torch.as_tensor(self.tokens.train_ids, dtype=torch.long)
        self.train_labels = torch.as_tensor(self.tokens.train_labels, dtype=torch.long)

    def describe(self) -> str:
        t = self.tokens
        return f"{self.config.prior.kind} K={t.codebook_size} L={t.seq_len}"

    def phase(self, step: int) -> str:
        return "train"

    def prepare(self, step: int) -> dict[str, Any] | None:
        return None

    def losses(self, step: int) -> StepLosses:
        pc = self.config.prior
        rows = shard(self.sampler.next(), self.dist)
        ids = self.train_ids[rows].to(self.dist.device)
        labels = self.train_labels[rows].to(self.dist.device)
        labels = labels if self.tokens.num_classes else None
        if self.var:
            from vqlab.priors.var import var_loss

            out = var_loss(
                self.model,
                self.quantizer,
                ids,
                labels,
                label_smoothing=pc.label_smoothing,
                class_dropout=pc.class_dropout,
            )
            terms = {"loss": out.loss, "accuracy": out.accuracy}
        else:
            out = maskgit_loss(
                self.model,
                ids,
                labels,
                schedule=pc.mask_schedule,
                label_smoothing=pc.label_smoothing,
                loss_on_all=pc.loss_on_all,
                class_dropout=pc.class_dropout,
            )
            terms = {
                "loss": out.loss,
                "masked_accuracy": out.masked_accuracy,
                "mask_ratio": torch.as_tensor(out.mask_ratio),
            }
        self.optimizers["model"].zero_grad(set_to_none=True)
        out.loss.backward()
        if self.dist.enabled:  # data parallel by hand: the mean gradient of the global batch
            for p in self.model.parameters():
                if p.grad is not None:
                    p.grad.copy_(sum_over_ranks(p.grad, self.dist) / self.dist.world)
        return StepLosses(terms, {})

    def save_volatile(self) -> None:
        return None  # nothing changes in forward but the gradients

    def restore_volatile(self, saved: None) -> None:
        return None

    def weights_finite(self) -> bool:
        return all(bool(is_finite(p)) for p in self.model.parameters())

    def evaluate(self, step: int, *, final: bool) -> dict[str, Any]:
        t = self.tokens
        labels = torch.as_tensor(t.test_labels) if t.num_classes else None
        if self.var:
            from vqlab.priors.var import evaluate_var

            ids = torch.as_tensor(t.test_ids, dtype=torch.long).to(self.dist.device)
            labels = None if labels is None else labels.to(self.dist.device)
            return evaluate_var(self.model, self.quantizer, ids, labels)
        return evaluate_prior(
            self.model,
            torch.as_tensor(t.test_ids, dtype=torch.long).to(self.dist.device),
            None if labels is None else labels.to(self.dist.device),
            mask_ratio=self.config.prior.eval_mask_ratio,
            seed=0,
        )

    def finish(self, out: Path, metrics: dict[str, Any]) -> dict[str, Any]:
        write_facts(out, self.facts)
        t = self.tokens
        return {
            "task": "prior",
            "kind": self.config.prior.kind,
            "codebook_size": t.codebook_size,
            "seq_len": t.seq_len,
            "steps": self.config.train.steps,
            **metrics,
        }
