"""Deferred quantization inside someone else's training loop: a wrapper and a one-shot fit.

```python
from vqlab import DeferredQuantizer, init_codebook_

model.quantize = DeferredQuantizer(model.quantize, switch_at=20_000, init_samples=200_000)
out = model.quantize(z_e)  # what the wrapped quantizer returns, in its own structure
```

Before the switch the wrapper is the identity in the wrapped quantizer's clothes: ``quantized``
is ``z_e`` itself, the loss is zero, the indices are -1 (same tuple or NamedTuple, shapes and
dtypes). Training-mode calls are counted, and the inputs of the last ``sample_window`` of them
before the switch (by default the last tenth) feed a uniform reservoir sample
(:class:`~vqlab.quantizers.kmeans_stream.ReservoirSampler`, at most ``init_samples`` rows in
all, so memory is bounded). The window stands in for the engine's fresh encoding at the switch:
inputs from the first steps of an untrained encoder would seed codes nobody uses. At the
training call number ``switch_at`` (counting from 0) the codebook is fitted by vqlab's k-means,
greedy k-means++ seeding, on that sample; every buffer tied to the codebook is written
(:mod:`vqlab.quantizers.adapters`), and that call and every later one is the wrapped
quantizer's own forward.

``switch_at`` counts *training-mode forward calls*, not optimizer steps: with gradient
accumulation over A micro-batches, switching after S optimizer steps is ``switch_at=A*S``.
Eval-mode calls before the switch pass through and are neither counted nor sampled.

Data parallel (DDP): each rank keeps ``ceil(init_samples / world)`` rows (seeded ``seed +
rank``); at the switch the samples are gathered, rank 0 fits, and every tensor of the wrapped
quantizer is broadcast from rank 0, so all ranks start quantizing with one codebook. The zero
loss of the pass-through phase is connected (times 0) to every parameter of the wrapped
quantizer, so DDP's unused-parameter check passes as long as that loss is part of the loss
your loop calls ``backward`` on (it is, in the loops this wrapper targets).

State: the phase, the call count and the reservoir are the module's extra state
(``get_extra_state``), so ``torch.save(model.state_dict())`` and ``load_state_dict`` resume a
run exactly (the reservoir is freed at the switch). Extra state is not a tensor: save with
``torch.save`` (``weights_only=True`` loads it), not with safetensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
import torch.distributed as dist
from torch import nn

from vqlab.quantizers.adapters import Family, family_of
from vqlab.quantizers.collective import world_size
from vqlab.quantizers.kmeans_stream import ReservoirSampler

PHASES = ("pretrain", "quantize")


def _rank() -> int:
    return dist.get_rank() if world_size() > 1 else 0


def _check_count(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}")
    return value


def gather_sample(x: torch.Tensor) -> torch.Tensor:
    """Every rank's rows (m_r, D), concatenated in rank order on every rank; ``x`` itself in
    one process. Ranks may hold different numbers of rows (padded for the collective)."""
    if world_size() == 1:
        return x
    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    most = int(max(int(s) for s in sizes))
    padded = x.new_zeros(most, x.shape[1])
    padded[: x.shape[0]] = x
    parts = [torch.zeros_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s)] for p, s in zip(parts, sizes)])


def broadcast_module(module: nn.Module) -> None:
    """Every parameter and buffer of ``module`` from rank 0 (no-op in one process)."""
    if world_size() == 1:
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=0)


def fit_sample(
    quantizer: nn.Module, family: Family, x: torch.Tensor, *, iters: int, seed: int
) -> None:
    """Fit ``quantizer`` on rank 0 to the gathered sample (rows of every rank; ``x`` is this
    rank's), then broadcast it. Refuses a sample with fewer rows than codes."""
    x = gather_sample(x)
    k = family.codebook_size(quantizer)
    if x.shape[0] < k:
        raise ValueError(
            f"the codebook has K={k} codes but only {x.shape[0]} input rows were sampled before "
            "the switch; raise switch_at or init_samples (or give init_codebook_ more latents)"
        )
    if _rank() == 0:
        family.fit(quantizer, x, iters=iters, seed=seed)
    broadcast_module(quantizer)


def _mirror(t: object, like: torch.Size, z_e: torch.Tensor, zero: torch.Tensor) -> object:
    """The pass-through counterpart of one piece ``t`` of the quantizer's output on one sample:
    a float tensor shaped like that sample is ``z_e``; integer tensors (indices) are -1; other
    tensors are zeros (0-dim: the loss, tied to ``zero``); the first axis grows to z_e's batch.
    Containers keep their type (NamedTuple, tuple, list, dict); floats become 0.0."""
    b = z_e.shape[0]
    if isinstance(t, torch.Tensor):
        if t.is_floating_point() and t.shape == like:
            return z_e
        if t.dim() == 0:
            return zero.to(t.dtype) if t.is_floating_point() else torch.zeros_like(t)
        shape = (t.shape[0] * b, *t.shape[1:])
        fill = -1 if not t.is_floating_point() and t.dtype != torch.bool else 0
        return torch.full(shape, fill, dtype=t.dtype, device=z_e.device)
    if isinstance(t, tuple) and hasattr(t, "_fields"):
        return type(t)(*(_mirror(v, like, z_e, zero) for v in t))
    if isinstance(t, (tuple, list)):
        return type(t)(_mirror(v, like, z_e, zero) for v in t)
    if isinstance(t, dict):
        return {k: _mirror(v, like, z_e, zero) for k, v in t.items()}
    if isinstance(t, float):
        return 0.0
    return t


class DeferredQuantizer(nn.Module):
    """Pass-through until ``switch_at`` training calls, then k-means-initialised quantization.

    Args:
        quantizer: the quantizer to defer (see :mod:`vqlab.quantizers.adapters` for the
            families; anything else raises ``UnsupportedQuantizer``, naming them).
        switch_at: the training-mode call (from 0) that fits the codebook and quantizes; >= 1.
        init_samples: rows (input vectors, all ranks together) the k-means sample holds.
        kmeans_iters: Lloyd steps after the greedy k-means++ seeding.
        seed: seeds the reservoir (``seed + rank``) and the k-means.
        sample_window: sample only the inputs of the last ``sample_window`` training calls
            before the switch; None: the last tenth of them (``ceil(switch_at / 10)``);
            ``switch_at``: all of them. Why not all by default: early inputs come from an
            encoder that has barely trained, and codes fitted to them go unused (on the
            synthetic mixture, K=256: usage 64% sampling all 1500 calls, 100% sampling the
            last 150, as vqlab's engine, which encodes a fresh sample at the switch;
            results/plugin-cpu).
    Input and output: exactly those of the wrapped quantizer (``*args, **kwargs`` pass on).
    """

    def __init__(
        self,
        quantizer: nn.Module,
        switch_at: int,
        init_samples: int = 200_000,
        *,
        kmeans_iters: int = 20,
        seed: int = 0,
        sample_window: int | None = None,
    ) -> None:
        super().__init__()
        self.family = family_of(quantizer)
        self.quantizer = quantizer
        self.switch_at = _check_count(switch_at, "switch_at", 1)
        self.init_samples = _check_count(init_samples, "init_samples", 1)
        self.kmeans_iters = _check_count(kmeans_iters, "kmeans_iters", 0)
        self.seed = _check_count(seed, "seed", 0)
        window = math.ceil(switch_at / 10) if sample_window is None else sample_window
        self.sample_window = _check_count(window, "sample_window", 1)
        self.phase = "pretrain"
        self.calls = 0  # training-mode forward calls so far
        self.reservoir: ReservoirSampler | None = None
        self._templates: dict = {}  # output structure per input shape (not state)

    @property
    def quantizing(self) -> bool:
        return self.phase == "quantize"

    def forward(self, z_e: torch.Tensor, *args, **kwargs):
        if self.phase == "pretrain" and self.training:
            if self.calls >= self.switch_at:
                self.switch()
            else:
                if self.calls >= self.switch_at - self.sample_window:
                    self._sample(z_e)
                self.calls += 1
                return self._pass_through(z_e, *args, **kwargs)
        if self.training:
            self.calls += 1
        if self.phase == "quantize":
            return self.quantizer(z_e, *args, **kwargs)
        return self._pass_through(z_e, *args, **kwargs)

    def _sample(self, z_e: torch.Tensor) -> None:
        if self.reservoir is None:
            size = math.ceil(self.init_samples / world_size())
            self.reservoir = ReservoirSampler(size, seed=self.seed + _rank())
        self.reservoir.add(self.family.rows(self.quantizer, z_e).float())

    @torch.no_grad()
    def switch(self) -> None:
        """Fit the codebook to the reservoir now (every rank must call it) and start quantizing."""
        if self.reservoir is None:
            raise ValueError("DeferredQuantizer has sampled no training inputs to fit the codebook")
        sample = self.reservoir.sample()
        fit_sample(
            self.quantizer,
            self.family,
            sample,
            iters=self.kmeans_iters,
            seed=self.seed,
        )
        self.phase, self.reservoir = "quantize", None

    def _pass_through(self, z_e: torch.Tensor, *args, **kwargs):
        if not isinstance(z_e, torch.Tensor) or z_e.dim() == 0 or z_e.shape[0] == 0:
            raise ValueError("DeferredQuantizer needs a batch-first tensor with at least one row")
        key = (tuple(z_e.shape[1:]), z_e.dtype, z_e.device, len(args), tuple(sorted(kwargs)))
        if key not in self._templates:
            one = z_e[:1].detach()
            with self.family.quiet(self.quantizer):
                self._templates[key] = self.quantizer(one, *args, **kwargs)
        # the zero loss touches z_e and every parameter, so backward (and DDP's reduction)
        # sees the whole graph although nothing of the quantizer was used
        zero = z_e.float().sum() * 0.0
        for p in self.quantizer.parameters():
            zero = zero + p.float().sum() * 0.0
        zero = zero + 0.0  # -0.0 (a negative sum times 0) + 0.0 is +0.0
        return _mirror(self._templates[key], z_e[:1].shape, z_e, zero)

    # ----------------------------------------------------------------- state
    def get_extra_state(self) -> dict:
        return {
            "phase": self.phase,
            "calls": self.calls,
            "reservoir": None if self.reservoir is None else self.reservoir.state_dict(),
        }

    def set_extra_state(self, state: dict) -> None:
        if state.get("phase") not in PHASES:
            raise ValueError(f"DeferredQuantizer state has phase {state.get('phase')!r}")
        self.phase, self.calls = state["phase"], int(state["calls"])
        self.reservoir = None
        if state["reservoir"] is not None:
            self.reservoir = ReservoirSampler(int(state["reservoir"]["size"]))
            self.reservoir.load_state_dict(state["reservoir"])

    def extra_repr(self) -> str:
        return (
            f"family={self.family.name!r}, switch_at={self.switch_at}, "
            f"init_samples={self.init_samples}, phase={self.phase!r}, calls={self.calls}"
        )


@torch.no_grad()
def init_codebook_(
    quantizer: nn.Module,
    latents_or_loader: torch.Tensor | Iterable,
    *,
    samples: int = 200_000,
    iters: int = 20,
    seed: int = 0,
    encoder: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> nn.Module:
    """Fit ``quantizer``'s codebook now, by k-means on (a uniform sample of) encoder outputs.

    The same fit as :class:`DeferredQuantizer`'s switch, for loops that run their own phases
    (as ``torch.optim.swa_utils.update_bn`` serves SWA). ``latents_or_loader``: a tensor of
    encoder outputs in the quantizer's input layout, or an iterable of them; with ``encoder``,
    an iterable of input batches (a tuple or list batch gives its first item), each encoded
    under ``no_grad``. At most ``samples`` rows (all ranks) are kept. A DeferredQuantizer is
    fitted and switched to quantizing. Under DDP every rank must call it. Returns ``quantizer``.
    """
    deferred = quantizer if isinstance(quantizer, DeferredQuantizer) else None
    target = deferred.quantizer if deferred is not None else quantizer
    family = family_of(target)
    batches = (
        [latents_or_loader] if isinstance(latents_or_loader, torch.Tensor) else latents_or_loader
    )
    size = math.ceil(_check_count(samples, "samples", 1) / world_size())
    reservoir = ReservoirSampler(size, seed=seed + _rank())
    for batch in batches:
        if encoder is not None:
            batch = encoder(batch[0] if isinstance(batch, (tuple, list)) else batch)
        rows = family.rows(target, batch).float()
        reservoir.add(rows)
    if reservoir.seen == 0:
        raise ValueError("init_codebook_ got no latents (an empty loader)")
    fit_sample(target, family, reservoir.sample(), iters=iters, seed=seed)
    if deferred is not None:
        deferred.phase, deferred.reservoir = "quantize", None
    return quantizer
