"""The quantizer interface the rest of vqlab relies on (the kinds register in
:data:`vqlab.registry.QUANTIZERS`).

Structural (``typing.Protocol``): a quantizer need not inherit from anything, it only has these
members. The set is what the callers read today:
- ``models/autoencoder.py``: ``quantizer(z_e)`` -> ``.quantized`` for the decoder, ``.loss``;
- ``training/loop.py``: ``.loss``/``.losses`` for the step and the logs, ``codebook`` for the
  finite-weights guard, ``parameters()`` (an ``nn.Module``) to know if DDP may see unused ones;
- ``training/feed.py``: ``init_from_data(z, method=, iters=, seed=)`` with flattened (N, D);
- ``training/evaluate.py``: ``dim`` and ``channel_dim`` to flatten encoder outputs,
  ``to_code_space`` for embeddings set against the codebook, ``.indices`` for usage, and
  ``codebook`` for the diagnostics (:mod:`vqlab.diagnostics` takes tensors only);
- ``lookup(indices)``: the decode path of a tokenizer (``vqlab tokenize`` then a prior's
  samples back to latents).
Multi-level quantizers (VAR's :class:`~vqlab.quantizers.multiscale.MultiScaleQuantizer`) add
``scales`` and ``level_indices``, which a VAR prior and per-scale diagnostics read.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class QuantizerOutput(Protocol):
    """What ``forward`` returns (a NamedTuple in practice).

    quantized: like ``z_e``, the value the decoder reads (gradient to ``z_e`` by an estimator);
    indices: int64 ids, the tokens a prior models (``z_e``'s positions, or (B, L) multi-level);
    loss: scalar to add to the training loss; losses: its named terms, for logging.
    """

    @property
    def quantized(self) -> torch.Tensor: ...
    @property
    def indices(self) -> torch.Tensor: ...
    @property
    def loss(self) -> torch.Tensor: ...
    @property
    def losses(self) -> dict[str, torch.Tensor]: ...


@runtime_checkable
class MultiLevelOutput(QuantizerOutput, Protocol):
    """Plus level_indices: one id tensor per level, coarse to fine ((B, p_k, p_k) per scale)."""

    @property
    def level_indices(self) -> list[torch.Tensor]: ...


@runtime_checkable
class Quantizer(Protocol):
    """A codebook quantizer. ``VectorQuantizer`` and ``MultiScaleQuantizer`` satisfy it.

    Members:
        dim: D, the channels of ``z_e``. codebook_size: K.
        channel_dim: the axis of D in ``z_e`` (-1, or 1 for (B, D, H, W)).
        codebook: (K, d) the effective codes the search compares against (d = D unless a
            projection is on); diagnostics read it, the finite-weights guard checks it.
        forward(z_e) (called as ``q(z_e)``): -> :class:`QuantizerOutput`; in training mode it
            also updates the EMA statistics (diagnostics never run inside it).
        init_from_data(z, method=, iters=, seed=): fit the codes to encoder outputs z (N, D);
            seeded, so deterministic; sets the ``initialized`` buffer.
        lookup(indices): ids as ``forward`` returns them -> the latent the decoder reads; equal
            to ``forward(z_e).quantized`` in eval mode.
        to_code_space(z_e): (N', d) the vectors the search compared with ``codebook``, in the
            order of ``forward(z_e).indices.reshape(-1)``.
        parameters(), train(), eval(): from ``nn.Module``.
    """

    dim: int
    codebook_size: int
    channel_dim: int

    @property
    def codebook(self) -> torch.Tensor: ...
    def __call__(self, z_e: torch.Tensor) -> QuantizerOutput: ...
    def forward(self, z_e: torch.Tensor) -> QuantizerOutput: ...
    def init_from_data(
        self, z: torch.Tensor, *, method: str = ..., iters: int = ..., seed: int = ...
    ) -> None: ...
    def lookup(self, indices: torch.Tensor) -> torch.Tensor: ...
    def to_code_space(self, z_e: torch.Tensor) -> torch.Tensor: ...
    def parameters(self, recurse: bool = ...) -> Iterator[nn.Parameter]: ...
