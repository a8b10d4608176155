"""Encoder -> quantizer -> decoder, with the quantizer optionally bypassed.

The model never decides *when* to quantize: the training schedule passes ``quantize``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from vqlab.quantizers.vq import VectorQuantizer, VQOutput


class AEOutput(NamedTuple):
    """recon: like the input; z_e: encoder output; vq: the quantizer's result, or None when the
    quantizer was bypassed (deferred quantization's first phase)."""

    recon: torch.Tensor
    z_e: torch.Tensor
    vq: VQOutput | None


class VQAutoencoder(nn.Module):
    def __init__(self, encoder: nn.Module, quantizer: VectorQuantizer, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder, self.quantizer, self.decoder = encoder, quantizer, decoder

    @property
    def last_layer(self) -> nn.Parameter:
        """The weight of the decoder's last layer (taming's adaptive GAN weight compares the
        gradient norms of the reconstruction and adversarial losses there)."""
        return [p for p in self.decoder.parameters() if p.dim() > 1][-1]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor, *, quantize: bool = True, blend: float = 1.0) -> AEOutput:
        """``blend`` < 1 decodes ``z_e + blend (quantized - z_e)`` (the schedule's bridge from
        the autoencoder to VQ); the VQ losses are those of the full quantization."""
        z_e = self.encoder(x)
        if not quantize:
            return AEOutput(self.decoder(z_e), z_e, None)
        vq = self.quantizer(z_e)
        z = vq.quantized if blend == 1.0 else z_e + blend * (vq.quantized - z_e)
        return AEOutput(self.decoder(z), z_e, vq)
