"""A trained prior for inference, rebuilt from its config and weights alone.

:func:`build_prior` makes the prior that ``prior.*`` names for a token file's K, L (scales) and
classes; :func:`load_quantizer` reads the frozen quantizer of the multi-scale tokenizer a VAR
token file names (VAR builds its inputs with it); :func:`load_prior` reads a prior run's
``config.yaml`` and ``checkpoint/model.safetensors``. None of them needs the training engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from safetensors.torch import load_file
from torch import nn

from vqlab.config import RunConfig, load_config
from vqlab.errors import ConfigError, MissingFileError
from vqlab.models.checkpoint import load_checkpoint
from vqlab.priors.tokens import TokenData, load_tokens
from vqlab.registry import PRIORS


def load_quantizer(tokens: TokenData, device: torch.device | str = "cpu") -> nn.Module:
    """The frozen quantizer of the multi-scale tokenizer a VAR token file names."""
    if not tokens.tokenizer or not Path(tokens.tokenizer).exists():
        raise ConfigError(
            f"prior.kind=var builds its inputs with the tokenizer; the token file names "
            f"{tokens.tokenizer!r}, which does not exist"
        )
    quantizer = load_checkpoint(tokens.tokenizer, device)[0].quantizer
    if not hasattr(quantizer, "split_indices"):
        raise ConfigError(
            f"prior.kind=var needs a multi-scale tokenizer (vq.kind=multiscale); "
            f"{tokens.tokenizer} has one grid: use prior.kind=maskgit"
        )
    return quantizer.eval().requires_grad_(False)


def build_prior(
    config: RunConfig, tokens: TokenData, quantizer: nn.Module | None = None
) -> nn.Module:
    """The prior of ``prior.*`` for the token file's K, L (scales) and classes, built by its
    registered kind (:data:`vqlab.registry.PRIORS`)."""
    entry = PRIORS.get(config.prior.kind)
    return entry.build(config.prior, tokens, quantizer if entry.needs_quantizer else None)


class Prior(NamedTuple):
    """A trained prior: the model (MaskGIT or VAR, eval mode), its config, its token file, and
    for VAR the tokenizer's frozen quantizer that builds its inputs (None for MaskGIT)."""

    model: torch.nn.Module
    config: RunConfig
    tokens: TokenData
    quantizer: torch.nn.Module | None


def load_prior(run: str | Path, device: str | torch.device = "cpu") -> Prior:
    """A prior run folder -> :class:`Prior`."""
    run = Path(run)
    weights = run / "checkpoint" / "model.safetensors"
    if not (run / "config.yaml").is_file() or not weights.is_file():
        raise MissingFileError(f"{run} is not a trained prior run (no config.yaml, checkpoint/)")
    config = load_config(run / "config.yaml")
    if config.task != "prior":
        raise ConfigError(f"{run} trained task={config.task}, not a prior")
    tokens = load_tokens(config.data.path)
    needs = PRIORS.get(config.prior.kind).needs_quantizer
    quantizer = load_quantizer(tokens, device) if needs else None
    model = build_prior(config, tokens, quantizer)
    model.load_state_dict(load_file(str(weights)))
    return Prior(model.to(device).eval(), config, tokens, quantizer)
