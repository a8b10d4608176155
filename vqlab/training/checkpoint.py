"""Model checkpoints as safetensors plus the resolved config as JSON (no pickle anywhere)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from vqlab.config import RunConfig, build_config
from vqlab.models.autoencoder import VQAutoencoder

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def save_checkpoint(
    model: VQAutoencoder, config: RunConfig, directory: str | Path, input_shape: tuple[int, ...]
) -> Path:
    """Write ``model.safetensors`` and ``config.json`` atomically (temp file, then rename)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = directory / (MODEL_FILE + ".tmp")
    save_file(state, str(tmp))
    os.replace(tmp, directory / MODEL_FILE)
    meta = {"config": config.flat(), "input_shape": list(input_shape)}
    tmp = directory / (CONFIG_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, directory / CONFIG_FILE)
    return directory


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[VQAutoencoder, RunConfig, tuple[int, ...]]:
    """A run folder or its ``checkpoint/`` -> (model in eval mode, config, input shape)."""
    from vqlab.models.registry import build_model

    path = Path(path)
    if (path / "checkpoint").is_dir():
        path = path / "checkpoint"
    if not (path / MODEL_FILE).is_file() or not (path / CONFIG_FILE).is_file():
        raise FileNotFoundError(
            f"no checkpoint in {path} (expected {MODEL_FILE} and {CONFIG_FILE})"
        )
    meta = json.loads((path / CONFIG_FILE).read_text())
    config = build_config(meta["config"])
    input_shape = tuple(meta["input_shape"])
    model = build_model(config.model, config.vq, input_shape)
    model.load_state_dict(load_file(str(path / MODEL_FILE)))
    return model.to(device).eval(), config, input_shape
