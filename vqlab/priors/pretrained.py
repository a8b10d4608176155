"""A trained prior for inference, rebuilt from its config and weights alone.

:func:`build_prior` makes the prior that ``prior.*`` names for a token file's K, L (scales) and
classes; :func:`load_quantizer` reads the frozen quantizer of the multi-scale tokenizer a VAR
token file names (VAR builds its inputs with it); :func:`load_prior` reads a prior run's
``config.yaml`` and ``checkpoint/model.safetensors``. None of them needs the training engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from vqlab.config import RunConfig, load_config
from vqlab.errors import ConfigError, MissingFileError
from vqlab.memory import check_prior_memory
from vqlab.models.checkpoint import load_checkpoint
from vqlab.priors.facts import checked_tokenizer, read_facts
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


def tokens_of_facts(facts: dict[str, Any]) -> TokenData:
    """A :class:`TokenData` without rows that carries a run's recorded token facts (K, scales,
    classes, and its tokenizer if still there and unchanged: see :mod:`vqlab.priors.facts`)."""
    scales = tuple(int(s) for s in facts["scales"])
    empty = np.zeros((0, sum(s * s for s in scales)), np.int32)
    tokenizer = checked_tokenizer(facts)
    return TokenData(
        train_ids=empty,
        test_ids=empty,
        train_labels=np.zeros(0, np.int64),
        test_labels=np.zeros(0, np.int64),
        codebook_size=int(facts["codebook_size"]),
        scales=scales,
        tokenizer="" if tokenizer is None else str(tokenizer),
        num_classes=int(facts["num_classes"]),
    )


def load_prior(run: str | Path, device: str | torch.device = "cpu") -> Prior:
    """A prior run folder -> :class:`Prior`, from the token facts recorded in the run
    (``tokens.json``), so from any working directory; a run trained before those were recorded
    reads its token file (``data.path``) instead."""
    run = Path(run)
    weights = run / "checkpoint" / "model.safetensors"
    if not (run / "config.yaml").is_file() or not weights.is_file():
        raise MissingFileError(f"{run} is not a trained prior run (no config.yaml, checkpoint/)")
    config = load_config(run / "config.yaml")
    if config.task != "prior":
        raise ConfigError(f"{run} trained task={config.task}, not a prior")
    facts = read_facts(run)
    tokens = load_tokens(config.data.path) if facts is None else tokens_of_facts(facts)
    pc, t = config.prior, tokens
    check_prior_memory(
        t.codebook_size, t.seq_len, t.num_classes, pc.width, pc.depth, device, training=False
    )
    needs = PRIORS.get(config.prior.kind).needs_quantizer
    quantizer = load_quantizer(tokens, device) if needs else None
    model = build_prior(config, tokens, quantizer)
    try:
        model.load_state_dict(load_file(str(weights)))
    except Exception as err:  # safetensors' own errors, or weights of another shape
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(
            f"{weights} does not fit the prior its config and token facts describe (the token "
            f"file changed since training?): {first[:200]}"
        ) from None
    return Prior(model.to(device).eval(), config, tokens, quantizer)
