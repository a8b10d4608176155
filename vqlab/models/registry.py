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
from vqlab.quantizers.vq import VectorQuantizer

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
    if vq.kind != "single":
        quantizer = _grid_quantizer(model, vq, input_shape, channel_dim)
        return VQAutoencoder(encoder, quantizer, decoder)
    layer = VectorQuantizer
    if vq.impl == "vector_quantize_pytorch":
        from vqlab.quantizers.peer import PeerQuantizer as layer
    extra = {"search": vq.search} if vq.impl == "vqlab" else {}
    quantizer = layer(
        model.latent_dim,
        vq.codebook_size,
        update=vq.update,
        beta=vq.beta,
        decay=vq.decay,
        eps=vq.eps,
        dead_code_threshold=vq.dead_code_threshold,
        channel_dim=channel_dim,
        estimator=vq.estimator,
        normalize=vq.normalize,
        code_dim=vq.code_dim,
        simvq=vq.simvq,
        **extra,
    )
    return VQAutoencoder(encoder, quantizer, decoder)


def _grid_quantizer(
    model: ModelConfig, vq: VQConfig, input_shape: tuple[int, ...], channel_dim: int
) -> nn.Module:
    """The quantizer of ``vq.kind`` other than ``single``: multiscale (VAR), fsq or lfq."""
    if vq.kind == "fsq":
        from vqlab.quantizers.fsq import FSQ

        levels = tuple(int(v) for v in vq.levels.split(","))
        return FSQ(model.latent_dim, levels, channel_dim=channel_dim)
    if vq.kind == "lfq":
        from vqlab.quantizers.lfq import LFQ

        return LFQ(
            model.latent_dim,
            vq.codebook_size,
            entropy_weight=vq.entropy_weight,
            commitment_weight=vq.beta,
            channel_dim=channel_dim,
        )
    if vq.kind != "multiscale":
        raise ValueError(f"vq.kind={vq.kind!r} is not available")
    from vqlab.quantizers.multiscale import MultiScaleQuantizer

    if model.kind != "conv":
        raise ConfigError("vq.kind=multiscale quantizes latent grids: it needs model.kind=conv")
    side = input_shape[1] // model.downsample
    scales = vq.scale_list() or (side,)
    if scales[-1] != side or input_shape[1] != input_shape[2]:
        raise ConfigError(
            f"vq.scales={vq.scales!r} must end at the latent side {side} (square "
            f"{input_shape[1]}x{input_shape[2]} images / model.downsample={model.downsample})"
        )
    return MultiScaleQuantizer(
        model.latent_dim,
        vq.codebook_size,
        scales,
        update=vq.update,
        beta=vq.beta,
        decay=vq.decay,
        eps=vq.eps,
        quant_resi=vq.quant_resi,
        share_resi=min(vq.share_resi, len(scales)),
        channel_dim=channel_dim,
        search=vq.search,
        loss_on=vq.loss_on,
    )
