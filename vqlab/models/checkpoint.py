"""Reading a tokenizer checkpoint for inference: its config and its weights, nothing else.

A checkpoint folder (``RUN/checkpoint/``, or what :meth:`vqlab.Tokenizer.save_pretrained`
writes) holds ``model.safetensors`` and ``config.json`` (``{"config": flat keys,
"input_shape": [...]}``). The model is rebuilt from the config alone, as nanoGPT's
``sample.py`` does, so loading needs nothing of the training engine; the writer and the
training state of a resume live in :mod:`vqlab.training.checkpoint`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from vqlab.config import RunConfig, build_config
from vqlab.errors import MissingFileError, UserError
from vqlab.models.autoencoder import VQAutoencoder

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class CheckpointError(UserError, ValueError):
    """A checkpoint file that cannot be read (the CLI turns it into exit code 2)."""


def load_checkpoint_config(path: str | Path) -> tuple[RunConfig, tuple[int, ...]]:
    """The (config, input shape) of a checkpoint folder's ``config.json``, for any task."""
    path = Path(path)
    try:
        meta = json.loads((path / CONFIG_FILE).read_text())
        return build_config(meta["config"]), tuple(meta["input_shape"])
    except (ValueError, KeyError, TypeError) as err:  # JSONDecodeError is a ValueError
        raise CheckpointError(
            f"{path / CONFIG_FILE} is damaged or not a vqlab config: {err}"
        ) from err


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[VQAutoencoder, RunConfig, tuple[int, ...]]:
    """A run folder or its ``checkpoint/`` -> (model in eval mode, config, input shape)."""
    from vqlab.models.registry import build_model

    path = Path(path)
    if (path / "checkpoint").is_dir():
        path = path / "checkpoint"
    if not (path / MODEL_FILE).is_file() or not (path / CONFIG_FILE).is_file():
        raise MissingFileError(f"no checkpoint in {path} (expected {MODEL_FILE} and {CONFIG_FILE})")
    config, input_shape = load_checkpoint_config(path)
    if config.task != "tokenizer":
        raise CheckpointError(f"{path} holds a task={config.task} model, not a tokenizer")
    model = build_model(config.model, config.vq, input_shape)
    try:
        state = load_file(str(path / MODEL_FILE))
        model.load_state_dict(state)
    except Exception as err:  # safetensors' own error types, or weights of another model
        raise CheckpointError(
            f"{path / MODEL_FILE} is damaged or does not fit the model of its config.json: "
            f"{str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from err
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(v.isfinite().all())]
    if bad:  # a diverged model saved by hand, or a damaged file that still parses
        raise CheckpointError(f"{path / MODEL_FILE} holds non-finite values in {', '.join(bad)}")
    return model.to(device).eval(), config, input_shape
