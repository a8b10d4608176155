"""Mask schedules for MaskGIT: gamma(r), the fraction of a sequence that is masked.

``r`` in [0, 1] is the training draw (r ~ U[0, 1)) or the decoding progress (t+1)/T. Every
schedule falls from 1 (all masked) at r=0 to ~0 at r=1; the clip to [1e-6, 1] keeps a mask
count of at least one at train time and gives arccos a finite value at r slightly above 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from vqlab.errors import ConfigError

GAMMA_MIN = 1e-6

Schedule = Callable[[torch.Tensor], torch.Tensor]


def cosine(r: torch.Tensor) -> torch.Tensor:
    """cos(pi r / 2): the official MaskGIT schedule."""
    return torch.cos(r * (math.pi / 2))


def arccos(r: torch.Tensor) -> torch.Tensor:
    """arccos(r) / (pi / 2): masks more for longer (valeoai's choice)."""
    return torch.arccos(r.clamp(-1.0, 1.0)) / (math.pi / 2)


def linear(r: torch.Tensor) -> torch.Tensor:
    """1 - r."""
    return 1.0 - r


SCHEDULES: dict[str, Schedule] = {"cosine": cosine, "arccos": arccos, "linear": linear}


def get_schedule(name: str) -> Schedule:
    """The schedule called ``name``; an unknown name raises ConfigError naming the valid ones."""
    try:
        return SCHEDULES[name]
    except KeyError:
        valid = ", ".join(sorted(SCHEDULES))
        raise ConfigError(f"unknown mask schedule {name!r} (valid: {valid})") from None


def gamma(r: torch.Tensor | float, schedule: str = "cosine") -> torch.Tensor:
    """Masked fraction gamma(r) clipped to [1e-6, 1]; ``r`` of any shape, same shape out (float64
    for a python float, so that hand-computed counts are exact)."""
    fn = get_schedule(schedule)
    r_t = torch.as_tensor(r, dtype=torch.float64) if not torch.is_tensor(r) else r
    return fn(r_t).clamp(GAMMA_MIN, 1.0)


def mask_count(r: torch.Tensor | float, seq_len: int, schedule: str = "cosine") -> torch.Tensor:
    """Number of masked positions ceil(gamma(r) * L) clamped to [1, L]; int64, shape of ``r``."""
    n = torch.ceil(gamma(r, schedule).double() * seq_len).long()
    return n.clamp(1, seq_len)
