"""When to quantize and when to initialise the codebook: the only difference between strategies.

- ``standard`` ("early") quantization: k-means init on the *untrained* encoder at step 0, VQ from
  step 0.
- ``deferred`` quantization: a plain autoencoder for ``pretrain_steps``, then k-means init on the
  *trained* encoder and VQ fine-tuning until ``steps``. Both strategies spend the same total
  ``steps``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

STRATEGIES = ("standard", "deferred")


@dataclass(frozen=True)
class Schedule:
    strategy: str
    steps: int
    pretrain_steps: int = 0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy={self.strategy!r}; choose one of {list(STRATEGIES)}")
        if self.strategy == "deferred" and not 0 <= self.pretrain_steps < self.steps:
            raise ValueError(
                f"deferred needs 0 <= pretrain_steps < steps; got {self.pretrain_steps}, "
                f"{self.steps}"
            )

    @property
    def vq_start(self) -> int:
        """First step that quantizes (where the codebook is initialised)."""
        return self.pretrain_steps if self.strategy == "deferred" else 0

    def quantize_at(self, step: int) -> bool:
        return step >= self.vq_start

    def init_at(self, step: int) -> bool:
        return step == self.vq_start

    def phase(self, step: int) -> str:
        return "vq" if self.quantize_at(step) else "pretrain"


def lr_factor(step: int, steps: int, warmup_steps: int = 0, schedule: str = "constant") -> float:
    """The learning-rate multiplier at ``step``: linear warmup from ~0 to 1 over
    ``warmup_steps`` (step 0 gets 1/warmup), then 1 (``constant``) or a cosine decay to 0 at
    ``steps`` (``cosine``). A pure function of the step, so a resumed run needs no state."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        span = max(1, steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup_steps, span) / span))
    raise ValueError(f"lr schedule {schedule!r}; choose constant or cosine")
