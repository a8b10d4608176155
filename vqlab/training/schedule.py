"""When to quantize and when to initialise the codebook: the only difference between strategies.

- ``standard`` ("early") quantization: k-means init on the *untrained* encoder at step 0, VQ from
  step 0.
- ``deferred`` quantization: a plain autoencoder for ``pretrain_steps``, then k-means init on the
  *trained* encoder and VQ fine-tuning until ``steps``. Both strategies spend the same total
  ``steps``.

Two options soften the switch (both off by default, recipes of issue 14):

- ``bridge_steps``: over the first ``bridge_steps`` quantized steps the decoder sees
  ``z_e + a (z_q - z_e)`` with ``a`` rising linearly from ``1 / bridge_steps`` to 1
  (:meth:`Schedule.blend`), instead of jumping from ``z_e`` to ``z_q`` at once;
- ``refit_at``: steps of the VQ phase at which the codebook is fitted again by k-means on the
  encoder as it is then (the deferred init, repeated once the encoder has adapted to VQ).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vqlab.config.schema import STRATEGIES


@dataclass(frozen=True)
class Schedule:
    strategy: str
    steps: int
    pretrain_steps: int = 0
    bridge_steps: int = 0
    refit_at: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy={self.strategy!r}; choose one of {list(STRATEGIES)}")
        if self.strategy == "deferred" and not 0 <= self.pretrain_steps < self.steps:
            raise ValueError(
                f"deferred needs 0 <= pretrain_steps < steps; got {self.pretrain_steps}, "
                f"{self.steps}"
            )
        if self.bridge_steps < 0:
            raise ValueError(f"bridge_steps must be >= 0; got {self.bridge_steps}")
        outside = [s for s in self.refit_at if not self.vq_start < s < self.steps]
        if outside:
            raise ValueError(
                f"refit steps {outside} lie outside the VQ phase (after step {self.vq_start}, "
                f"before {self.steps})"
            )

    @property
    def vq_start(self) -> int:
        """First step that quantizes (where the codebook is initialised)."""
        return self.pretrain_steps if self.strategy == "deferred" else 0

    def quantize_at(self, step: int) -> bool:
        return step >= self.vq_start

    def init_at(self, step: int) -> bool:
        """The codebook is fitted at the first quantized step, and again at ``refit_at``."""
        return step == self.vq_start or step in self.refit_at

    def blend(self, step: int) -> float:
        """The share ``a`` of ``z_q - z_e`` the decoder sees at a quantized step: 1 without a
        bridge, else ``(step - vq_start + 1) / bridge_steps`` capped at 1."""
        if self.bridge_steps == 0:
            return 1.0
        return min(1.0, (step - self.vq_start + 1) / self.bridge_steps)

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
