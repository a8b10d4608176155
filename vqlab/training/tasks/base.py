"""What the engine asks of a task: its models, named optimizers, one step's losses, evaluation.

The engine (:mod:`vqlab.training.engine`) owns the steps and phases, the progress bar, logging,
checkpoints and ``--resume``, DDP and the non-finite guard. A task owns everything that is
about *what* is trained: it builds its models and optimizers from the config, computes the
losses of one step on this rank's shard of the batch and runs their backward pass, evaluates
on the test set and writes its summary. The standard/deferred :class:`Schedule` is the
engine's; a task asks it (``schedule.quantize_at(step)``) and obeys.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from vqlab.training.feed import BatchSampler


@dataclass
class StepLosses:
    """One step after its backward pass.

    terms: named 0-dim loss tensors, ``"loss"`` first (the total that was back-propagated);
    every other term is checked for NaN/Inf and logged. checks: further named 0-dim bool
    tensors that must be true (e.g. ``"codebook"``: the codebook the step used is finite).
    """

    terms: dict[str, torch.Tensor]
    checks: dict[str, torch.Tensor]


class Task(Protocol):
    """The engine's view of a task (the tokenizer today; generative priors plug in alike)."""

    modules: dict[str, nn.Module]
    """Checkpointed modules by name; ``"model"`` is ``model.safetensors``, others
    ``<name>.safetensors`` beside it."""
    optimizers: dict[str, torch.optim.Optimizer]
    """Named optimizers, all stepped after a good step and saved in every checkpoint."""
    sampler: BatchSampler
    """The seeded batch order (its state goes into every checkpoint)."""
    input_shape: tuple[int, ...]
    """One sample's shape, without the batch axis (recorded in ``config.json``)."""

    def describe(self) -> str:
        """A few words for the progress bar."""

    def phase(self, step: int) -> str:
        """The phase named in the logs (the tokenizer's: ``pretrain`` or ``vq``)."""

    def prepare(self, step: int) -> dict[str, Any] | None:
        """Work due before ``step`` (a codebook init); a row to log, or None."""

    def losses(self, step: int) -> StepLosses:
        """Forward and backward of one step on this rank's shard of the next batch."""

    def save_volatile(self) -> Any:
        """State the forward pass changes besides the gradients (EMA buffers), to undo a
        skipped step."""

    def restore_volatile(self, saved: Any) -> None: ...

    def weights_finite(self) -> bool:
        """Whether the weights themselves are still finite after a skipped step."""

    def evaluate(self, step: int, *, final: bool) -> dict[str, Any]:
        """Rank 0: metrics on the test set (``final``: the slow probes too)."""

    def finish(self, out: Path, metrics: dict[str, Any]) -> dict[str, Any]:
        """Rank 0: write the task's own files into the run folder; the summary's head."""
