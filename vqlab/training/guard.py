"""The non-finite guard: a NaN or Inf in a loss term, the codebook or a gradient stops the run
(``train.on_nonfinite=stop``) or skips the batch (``skip``), before it can reach a checkpoint.

Every step the loop checks, in one device sync: each loss term, the codebook the step used, and
the gradients (all after the backward pass, before the optimizer step). The EMA codebook
update already happened inside the quantizer's forward, so ``skip`` snapshots the quantizer's
state before the forward and puts it back: a skipped batch changes neither the weights nor
the EMA state (the step counter and the data position still advance; the budget of steps is
fixed). A checkpoint is written only after a whole-state check, so the last checkpoint on disk
is always a good one.

The quantizer's own input check (NaN/Inf in ``z_e``) is off inside the training forward: it
would raise mid-forward, under DDP on one rank only, while this guard sees the step whole and
decides alike on every rank. An evaluation that the check refuses (a diverged model whose
outputs overflow) also ends the run with the step named. A batch skipped under DDP is skipped
by every rank, since the check flags are summed over ranks with the logged losses.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class NonFiniteError(RuntimeError):
    """Training produced a NaN or Inf; the message names the step, the phase and the tensor."""


def nonfinite_error(what: str, step: int, phase: str, checkpoint: str | None) -> NonFiniteError:
    """The one-line message: what went bad, where, and which checkpoint is the last good one."""
    kept = f"; the last good checkpoint is {checkpoint}" if checkpoint else "; no checkpoint yet"
    return NonFiniteError(f"non-finite {what} at step {step} (phase {phase}){kept}")


def is_finite(t: torch.Tensor) -> torch.Tensor:
    """0-dim bool tensor: every element of ``t`` is finite (stays on the device; no sync)."""
    return torch.isfinite(t).all()


def grads_finite(params: list[nn.Parameter]) -> torch.Tensor:
    """0-dim bool tensor: every gradient is finite. The largest |g| is NaN or Inf iff one is."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.tensor(True)
    total_norm = getattr(torch.nn.utils, "get_total_norm", None)  # torch >= 2.6: fused kernels
    if total_norm is not None:
        top = total_norm(grads, math.inf)
    else:
        top = torch.stack([torch.linalg.vector_norm(g, math.inf) for g in grads]).amax()
    return torch.isfinite(top)


def first_bad_gradient(model: nn.Module) -> str:
    """Name of the first parameter with a non-finite gradient (only called once one exists)."""
    for name, p in model.named_parameters():
        if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
            return f"gradient of {name}"
    return "gradient"


def first_bad_state(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> str | None:
    """Name of the first non-finite floating tensor of the model or optimizer state, else None."""
    for name, t in model.state_dict().items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name
    for i, state in enumerate(optimizer.state.values() if optimizer is not None else ()):
        for key, t in state.items():
            if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
                return f"optimizer state {key} of parameter {i}"
    return None


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of ``module``'s state, to undo a skipped step: the EMA buffers, and parameters
    too, since a dead-code restart writes rows of a gradient-trained codebook in forward."""
    return {name: t.detach().clone() for name, t in module.state_dict().items()}


@torch.no_grad()
def restore(module: nn.Module, saved: dict[str, torch.Tensor]) -> None:
    for name, t in module.state_dict().items():
        t.copy_(saved[name])
