"""Lookup-free quantization (LFQ, MAGVIT-v2, Yu et al., arXiv 2310.05737): K = 2^d sign codes.

Pipeline ``z_e (D) -> in-projection (d = log2 K) -> sign (straight-through) -> out-projection
(D)``. Each grid channel is quantized to ``+s`` or ``-s`` (``s = codebook_scale``), so the
implicit codebook is the ``2^d`` corners of a cube; nothing is looked up or learned in it.

Definitions (those of vector-quantize-pytorch 1.32.0's ``LFQ``, checked against it in
tests/quantizers/test_lfq.py):

- quantize: ``q = +s`` where ``h > 0``, else ``-s`` (zero goes to ``-s``, bit 0).
- indices: channel 0 is the *most* significant bit, ``index = sum_i [h_i > 0] 2^(d - 1 - i)``
  (the peer's order; note that FSQ's mixed radix has channel 0 least significant).
- gradient: straight-through, ``d z_q / d h = 1``.
- losses (named terms, unweighted; ``loss`` is their weighted sum):
  ``commitment = mean (h - sg(q))^2``; with the code distribution of a position
  ``p(c | h) = softmax_c(-tau ||h - c||^2)`` (``tau = inv_temperature``),
  ``per_sample_entropy = mean_n H(p(. | h_n))`` and ``codebook_entropy = H(mean_n p(. | h_n))``
  over the batch; ``loss = entropy_weight * (per_sample_entropy - diversity_gamma *
  codebook_entropy) + commitment_weight * commitment``. Low per-sample entropy asks for confident
  codes, high codebook entropy for all codes used evenly.

How it is computed, and where it differs from the peer on purpose:
- ``-tau ||h - c||^2`` separates over channels, so ``p(c | h)`` is a product of per-bit
  Bernoullis with ``P(bit_i = 1) = sigmoid(4 tau s h_i)``. The per-sample entropy is then a sum of
  d binary entropies, and the batch mean over K codes is one (2^a, N) @ (N, 2^b) product of
  half-code tables (a + b = d). Memory O(N (d + sqrt K) + K), where the peer builds the dense
  (N, K) softmax; the value is the same distribution.
- Entropies are exact (``-p log p`` from log-sigmoids), where the peer clamps ``p`` at 1e-5 inside
  the log, which lowers both entropies where probabilities are tiny. Where every probability is
  at least 1e-5 the two agree to float rounding; tested, as is the direction of the difference.
- The losses are computed in eval mode too (the peer returns zeros), so evaluation reports them.
- Under data parallelism the codebook entropy is over this rank's batch (no all-reduce).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vqlab.quantizers.codebook import VQOutput
from vqlab.quantizers.grid import GridQuantizer
from vqlab.registry import QUANTIZERS, QuantizerEntry
from vqlab.validation import check_int, check_number


def bit_table(bits: int, device: torch.device | None = None) -> torch.Tensor:
    """(2^bits, bits) float 0/1: row c holds the bits of c, the first column most significant."""
    shifts = torch.arange(bits - 1, -1, -1, device=device)  # (bits,)
    return ((torch.arange(2**bits, device=device)[:, None] >> shifts) & 1).float()


def lfq_entropies(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample and codebook entropy (nats) of product-of-Bernoulli code distributions.

    logits: (N, d), ``logit(P(bit_i = 1))`` per position, N >= 1. The code ``c`` (bits MSB first)
    has probability ``prod_i P(bit_i = c_i)``. Returns (mean_n H(p_n), H(mean_n p_n)), scalars.
    """
    n, d = logits.shape
    p1 = torch.sigmoid(logits)
    # binary entropy of sigmoid(a) is softplus(a) - a * sigmoid(a): stable for any |a|
    per_sample = (F.softplus(logits) - logits * p1).sum(1).mean()
    log1, log0 = F.logsigmoid(logits), F.logsigmoid(-logits)  # (N, d) each
    a = (d + 1) // 2  # high (most significant) bits; the low b = d - a bits follow

    def half_table(lo: int, hi: int) -> torch.Tensor:  # (N, 2^(hi - lo)) code probabilities
        table = bit_table(hi - lo, logits.device).to(logits.dtype)  # (2^m, m), built in place
        return torch.exp(log1[:, lo:hi] @ table.T + log0[:, lo:hi] @ (1 - table).T)

    # sum_n p_hi(n, i) p_lo(n, j) / N is the batch-mean probability of code i * 2^b + j
    mean_p = (half_table(0, a).T @ half_table(a, d) / n).reshape(-1)  # (K,)
    # codes no position can reach underflow to 0; the floor keeps 0 * log 0 at 0 (and finite grad)
    codebook = -(mean_p * mean_p.clamp_min(torch.finfo(mean_p.dtype).tiny).log()).sum()
    return per_sample, codebook


class LFQ(GridQuantizer):
    """Lookup-free quantization of ``(..., D)`` (or channel-first, ``channel_dim=1``) inputs.

    Args:
        dim: D, the dimension of the encoder outputs and of the quantized output.
        codebook_size: K, a power of 2 (>= 2); the grid has d = log2 K channels.
        entropy_weight: weight of ``per_sample_entropy - diversity_gamma * codebook_entropy``.
        commitment_weight: weight of the commitment term (the peer's default is 0).
        diversity_gamma: weight of the codebook entropy inside the entropy term.
        codebook_scale: s, the code values are ``+-s``.
        inv_temperature: tau of the code distribution ``softmax(-tau ||h - c||^2)`` (the peer's
            forward default, 100).
        channel_dim: the axis of D in the input (-1, or 1 for ``(B, D, H, W)``).

    A learned ``Linear(D, d)`` / ``Linear(d, D)`` pair surrounds the grid when D != d.
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        *,
        entropy_weight: float = 0.1,
        commitment_weight: float = 0.25,
        diversity_gamma: float = 1.0,
        codebook_scale: float = 1.0,
        inv_temperature: float = 100.0,
        channel_dim: int = -1,
    ) -> None:
        super().__init__()
        self.dim = check_int(dim, "dim", minimum=1)
        k = check_int(codebook_size, "codebook_size", minimum=2)
        if k & (k - 1):
            raise ValueError(f"codebook_size must be a power of 2 for LFQ; got {k}")
        self.codebook_size, self.code_dim = k, k.bit_length() - 1  # K, d
        self.entropy_weight = check_number(entropy_weight, "entropy_weight", low=0.0)
        self.commitment_weight = check_number(commitment_weight, "commitment_weight", low=0.0)
        self.diversity_gamma = check_number(diversity_gamma, "diversity_gamma", low=0.0)
        self.codebook_scale = check_number(codebook_scale, "codebook_scale", low=0.0, low_open=True)
        self.inv_temperature = check_number(inv_temperature, "inv_temperature", low=0.0)
        self.channel_dim = check_int(channel_dim, "channel_dim")
        weights = 2 ** torch.arange(self.code_dim - 1, -1, -1)  # (d,) int64, MSB first
        self.register_buffer("_bit_weights", weights, persistent=False)
        codes = self.indices_to_codes(torch.arange(k))  # (K, d); derived, so not saved
        self.register_buffer("implicit_codes", codes, persistent=False)
        has_proj = dim != self.code_dim
        self.project_in = nn.Linear(dim, self.code_dim) if has_proj else None
        self.project_out = nn.Linear(self.code_dim, dim) if has_proj else None
        self.register_buffer("initialized", torch.tensor(False))

    # ------------------------------------------------------------------- grid
    @property
    def init_scale(self) -> float:
        # the in-projection whitens to the code magnitude: a small commitment term at the start,
        # and each bit splits the data through its centre
        return self.codebook_scale

    def snap(self, h: torch.Tensor) -> torch.Tensor:
        s = self.codebook_scale
        return torch.where(h > 0, s, -s)

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """(..., d) codes (or any grid-space values) -> (...) int64 indices, MSB first."""
        return ((codes > 0).long() * self._bit_weights).sum(-1)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """(...) int64 indices -> (..., d) codes in ``{-s, +s}``."""
        bits = ((indices[..., None] & self._bit_weights) != 0).float()  # (..., d)
        return (2 * bits - 1) * self.codebook_scale

    # ---------------------------------------------------------------- forward
    def forward(self, z_e: torch.Tensor) -> VQOutput:
        """z_e: (..., D) -> VQOutput: quantized like z_e, indices (...) int64, the weighted loss,
        and the unweighted terms ``commitment``, ``per_sample_entropy``, ``codebook_entropy``.
        Runs in fp32 even under autocast."""
        flat, lead = self._flatten(z_e)
        with torch.autocast(device_type=flat.device.type, enabled=False):
            h = self._to_grid(flat.float())  # (N, d)
            s = self.codebook_scale
            q = torch.where(h > 0, s, -s)  # (N, d), no gradient
            indices = self.codes_to_indices(h.detach())  # (N,)
            if h.shape[0] > 0:
                commitment = F.mse_loss(h, q)
                # logit of bit 1: -tau ((h - s)^2 - (h + s)^2) = 4 tau s h
                per_sample, codebook = lfq_entropies(4 * self.inv_temperature * s * h)
            else:  # no positions: zero terms, still connected to the graph for backward
                commitment = per_sample = codebook = h.sum() * 0.0
            out = self._from_grid(q + (h - h.detach()))  # value exactly q, gradient 1 to h
        losses = {
            "commitment": commitment,
            "per_sample_entropy": per_sample,
            "codebook_entropy": codebook,
        }
        entropy = per_sample - self.diversity_gamma * codebook
        loss = self.entropy_weight * entropy + self.commitment_weight * commitment
        return VQOutput(
            self._unflatten(out.to(z_e.dtype), lead), indices.reshape(lead), loss, losses
        )

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, codebook_size={self.codebook_size}, "
            f"entropy_weight={self.entropy_weight}, commitment_weight={self.commitment_weight}, "
            f"diversity_gamma={self.diversity_gamma}, codebook_scale={self.codebook_scale}"
        )


def _build(vq, model, input_shape: tuple[int, ...], channel_dim: int) -> LFQ:
    return LFQ(
        model.latent_dim,
        vq.codebook_size,
        entropy_weight=vq.entropy_weight,
        commitment_weight=vq.beta,
        channel_dim=channel_dim,
    )


QUANTIZERS.register(
    "lfq",
    QuantizerEntry(_build, options=("entropy_weight",), fits_codebook=False, title="LFQ layer"),
)
