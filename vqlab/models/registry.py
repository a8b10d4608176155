"""Build the autoencoder named by ``model.kind`` (a small name -> factory dict)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from vqlab.errors import ConfigError
from vqlab.memory import check_codebook_memory
from vqlab.models.autoencoder import VQAutoencoder
from vqlab.models.conv import ConvDecoder, ConvEncoder, check_image_shape
from vqlab.models.mlp import MLPDecoder, MLPEncoder
from vqlab.quantizers import QUANTIZERS  # the package registers every built-in kind

if TYPE_CHECKING:  # the builder reads config groups; the models never import the config
    from vqlab.config import ModelConfig, VQConfig


def _mlp(cfg: ModelConfig, input_shape: tuple[int, ...]) -> tuple[nn.Module, nn.Module, int]:
    if len(input_shape) != 1:
        raise ConfigError(
            f"model.kind=mlp needs vector data (B, d); got samples of shape {input_shape} "
            "(use model.kind=conv for images)"
        )
    d = input_shape[0]
    enc = MLPEncoder(d, cfg.hidden, cfg.depth, cfg.latent_dim)
    dec = MLPDecoder(cfg.latent_dim, cfg.hidden, cfg.depth, d)
    return enc, dec, -1


def _conv(cfg: ModelConfig, input_shape: tuple[int, ...]) -> tuple[nn.Module, nn.Module, int]:
    mult = cfg.channel_multipliers()
    check_image_shape(input_shape, cfg.downsample)
    c = input_shape[0]
    sizes = {"res_blocks": cfg.res_blocks, "attention": cfg.attention}
    enc = ConvEncoder(c, cfg.width, mult, cfg.latent_dim, **sizes, norm_groups=cfg.norm_groups)
    dec = ConvDecoder(cfg.latent_dim, cfg.width, mult, c, **sizes, norm_groups=cfg.norm_groups)
    return enc, dec, 1  # z_e is (B, D, h, w): D on axis 1


BUILDERS: dict[str, Callable[[ModelConfig, tuple[int, ...]], tuple[nn.Module, nn.Module, int]]] = {
    "mlp": _mlp,
    "conv": _conv,
}


def build_model(
    model: ModelConfig,
    vq: VQConfig,
    input_shape: tuple[int, ...],
    device: torch.device | str | None = None,
) -> VQAutoencoder:
    """Autoencoder for samples of ``input_shape`` (without the batch axis).

    Before anything is allocated, the codebook's memory is checked against the CPU's (where the
    model is built) and, when ``device`` is given, that device's free memory
    (:func:`~vqlab.memory.check_codebook_memory`): a size that cannot fit is a one-line
    :class:`~vqlab.errors.ConfigError`. The model is returned on the CPU.
    """
    dim = vq.code_dim or model.latent_dim
    # a trained codebook also holds its gradient and Adam's two moments
    extra = 3 * 4 * dim if vq.update == "grad" else 0
    for where in {torch.device("cpu"), torch.device(device or "cpu")}:
        check_codebook_memory(vq.codebook_size, dim, where, extra_bytes_per_code=extra)
    if model.kind not in BUILDERS:
        raise ValueError(
            f"model.kind={model.kind!r} is not available; choose one of {list(BUILDERS)}"
        )
    encoder, decoder, channel_dim = BUILDERS[model.kind](model, input_shape)
    # the quantizer of vq.kind, built by its registered entry (vqlab.registry.QUANTIZERS)
    quantizer = QUANTIZERS.get(vq.kind).build(vq, model, input_shape, channel_dim)
    return VQAutoencoder(encoder, quantizer, decoder)
