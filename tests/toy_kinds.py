"""A toy quantizer and a toy prior, each added to vqlab by this one file plus its registration
(issue 24): nothing else in the package changes for them to be trained, built from a config,
loaded and sampled. ``register()`` adds them (tests remove them again with ``unregister()``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vqlab.quantizers.codebook import VQOutput, check_indices, flatten, unflatten
from vqlab.registry import PRIORS, QUANTIZERS, PriorEntry, QuantizerEntry


class FrozenCodes(nn.Module):
    """Nearest of K frozen random codes, straight-through: the smallest codebook layer."""

    def __init__(self, dim: int, codebook_size: int, *, beta: float, channel_dim: int) -> None:
        super().__init__()
        self.dim, self.codebook_size, self.beta, self.channel_dim = (
            dim,
            codebook_size,
            beta,
            channel_dim,
        )
        gen = torch.Generator().manual_seed(0)
        self.register_buffer("codebook", torch.randn(codebook_size, dim, generator=gen))
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, z_e: torch.Tensor) -> VQOutput:
        flat, lead = flatten(z_e, self.dim, self.channel_dim, self.codebook.device)
        indices = torch.cdist(flat.detach(), self.codebook).argmin(1)  # (N,)
        z_q = self.codebook[indices]
        commitment = F.mse_loss(flat, z_q)
        out = flat + (z_q - flat).detach()  # straight-through
        quantized = unflatten(out, lead, self.dim, self.channel_dim)
        return VQOutput(
            quantized, indices.reshape(lead), self.beta * commitment, {"commitment": commitment}
        )

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        check_indices(indices, self.codebook_size)
        return unflatten(
            self.codebook[indices.reshape(-1)], indices.shape, self.dim, self.channel_dim
        )

    def to_code_space(self, z_e: torch.Tensor) -> torch.Tensor:
        return flatten(z_e, self.dim, self.channel_dim, self.codebook.device)[0]

    def init_from_data(self, z, *, method="kmeans", iters=20, seed=0) -> None:
        self.initialized.fill_(True)  # frozen codes: nothing to fit


class Unigram(nn.Module):
    """A prior that learns one categorical distribution per position (no context at all)."""

    kind = "unigram"

    def __init__(self, codebook_size: int, seq_len: int, num_classes: int) -> None:
        super().__init__()
        self.codebook_size, self.seq_len, self.num_classes = codebook_size, seq_len, num_classes
        self.logits = nn.Parameter(torch.zeros(seq_len, codebook_size))

    def sample(self, n: int, settings, prior, **kwargs) -> torch.Tensor:
        return PRIORS.get(self.kind).sample(self, n, settings, prior, **kwargs)


def _sample_unigram(model, n, settings, prior, *, labels=None, generator=None, progress=False):
    probs = F.softmax(model.logits.detach() / settings.temperature, dim=-1)  # (L, K)
    draws = torch.multinomial(probs, n, replacement=True, generator=generator)  # (L, n)
    return draws.T.contiguous()  # (n, L)


def register() -> None:
    QUANTIZERS.register(
        "frozen",
        QuantizerEntry(
            build=lambda vq, model, shape, channel_dim: FrozenCodes(
                model.latent_dim, vq.codebook_size, beta=vq.beta, channel_dim=channel_dim
            ),
            fits_codebook=False,
            title="frozen-codes layer",
        ),
    )
    PRIORS.register(
        "unigram",
        PriorEntry(
            build=lambda prior, tokens, quantizer: Unigram(
                tokens.codebook_size, tokens.seq_len, tokens.num_classes
            ),
            sample=_sample_unigram,
            defaults={"label_smoothing": 0.0, "top_k": 0, "top_p": 0.0},
        ),
    )


def unregister() -> None:
    QUANTIZERS.unregister("frozen")
    PRIORS.unregister("unigram")
