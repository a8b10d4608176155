"""Checkpoints: the model as safetensors plus the resolved config as JSON, and, for resuming,
the training state beside them. No pickle of a file anywhere.

A checkpoint is one folder, ``RUN/checkpoint/``:

- ``model.safetensors``: the model's state dict, EMA buffers included (the DESIGN contract);
  a task's other modules beside it as ``<name>.safetensors`` (``discriminator.safetensors``);
- ``config.json``: ``{"config": flat keys, "input_shape": [...]}`` (the DESIGN contract);
- ``optimizer.pt``: the named optimizers' state dicts (``{"model": ..., "discriminator": ...}``;
  an older checkpoint's single state dict reads as ``"model"``), written by ``torch.save`` and
  read back with ``torch.load(weights_only=True)``, which only rebuilds tensors and plain
  containers;
- ``train_state.safetensors``: RNG states and the data order (uint8 / int64 tensors);
- ``state.json``: step, phase, counters and anything else JSON can hold. Written last, it marks
  the folder complete.

The final checkpoint of a finished run keeps only the model, config and ``state.json``.

Atomicity is at the folder level, so a crash never leaves a mix of an old and a new model, or
a new model with an old optimizer. A save writes ``checkpoint.tmp/`` in full, fsyncs every file
and the folder, then swaps: ``checkpoint -> checkpoint.old``, ``checkpoint.tmp -> checkpoint``,
and removes ``checkpoint.old``. A crash at any point leaves one complete folder, which
:func:`recover` puts back under the name ``checkpoint`` before a resume.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from vqlab.config import RunConfig

# the read side (a model for inference from config + weights) lives below training
from vqlab.models.checkpoint import (  # noqa: F401  (re-exported)
    CONFIG_FILE,
    MODEL_FILE,
    CheckpointError,
    load_checkpoint,
    load_checkpoint_config,
)

OPTIMIZER_FILE = "optimizer.pt"
TENSORS_FILE = "train_state.safetensors"
STATE_FILE = "state.json"
FORMAT = 1  # of state.json; bump when its meaning changes


@dataclass
class TrainingState:
    """What a resume needs besides the model.

    meta: JSON-able values (``step`` = the next step to run, ``phase``, counters, ...).
    tensors: named CPU tensors (RNG states, the sampler's permutation).
    optimizers: each named optimizer's ``state_dict()``, or None in a final checkpoint.
    """

    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    optimizers: dict[str, dict[str, Any]] | None = None


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _siblings(directory: Path) -> tuple[Path, Path]:
    """``checkpoint.tmp`` (a save in progress) and ``checkpoint.old`` (the one it replaces)."""
    return tuple(directory.with_name(directory.name + s) for s in (".tmp", ".old"))


def save_checkpoint(
    model: nn.Module | dict[str, nn.Module],
    config: RunConfig,
    directory: str | Path,
    input_shape: tuple[int, ...],
    training: TrainingState | None = None,
) -> Path:
    """Write the checkpoint folder ``directory`` atomically (module docstring); returns it.

    ``model``: the model, or a task's named modules (``"model"`` among them).
    """
    directory = Path(directory)
    tmp, old = _siblings(directory)
    shutil.rmtree(tmp, ignore_errors=True)  # a save interrupted earlier
    tmp.mkdir(parents=True)
    modules = model if isinstance(model, dict) else {"model": model}
    for name, module in modules.items():
        state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        save_file(state, str(tmp / f"{name}.safetensors"))
    meta = {"config": config.flat(), "input_shape": list(input_shape)}
    (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
    training = training or TrainingState(meta={})
    if training.tensors:
        tensors = {k: v.detach().cpu().contiguous() for k, v in training.tensors.items()}
        save_file(tensors, str(tmp / TENSORS_FILE))
    if training.optimizers is not None:
        torch.save(training.optimizers, tmp / OPTIMIZER_FILE)
    for path in tmp.iterdir():
        _fsync(path)
    # the completeness marker goes last, once everything before it is on the disk
    (tmp / STATE_FILE).write_text(json.dumps({"format": FORMAT, **training.meta}, indent=2))
    _fsync(tmp / STATE_FILE)
    _fsync(tmp)
    if directory.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.rename(directory, old)
    os.rename(tmp, directory)
    _fsync(directory.parent)  # make the renames themselves durable
    shutil.rmtree(old, ignore_errors=True)
    return directory


def recover(directory: str | Path) -> Path | None:
    """Repair what a crash during :func:`save_checkpoint` left; returns the folder or None.

    Only for a run that is not running (a resume): it renames folders a live writer uses.
    """
    directory = Path(directory)
    tmp, old = _siblings(directory)
    if not directory.exists():
        if (tmp / STATE_FILE).is_file():  # crashed between the two renames: tmp is complete
            os.rename(tmp, directory)
        elif old.is_dir():
            os.rename(old, directory)
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return directory if directory.is_dir() else None


def load_training_state(directory: str | Path) -> TrainingState | None:
    """The training state of a checkpoint folder, or None if it has none (an older format)."""
    directory = Path(directory)
    if not (directory / STATE_FILE).is_file():
        return None
    try:
        meta = json.loads((directory / STATE_FILE).read_text())
        if not isinstance(meta, dict):
            raise ValueError(f"holds a {type(meta).__name__}, not an object")
    except (ValueError, OSError) as err:  # JSONDecodeError and UnicodeDecodeError included
        raise CheckpointError(f"{directory / STATE_FILE} is damaged: {err}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{directory / STATE_FILE} has format {meta.get('format')!r}; this vqlab reads {FORMAT}"
        )
    tensors, optimizers = {}, None
    try:
        if (directory / TENSORS_FILE).is_file():
            tensors = load_file(str(directory / TENSORS_FILE))
        if (directory / OPTIMIZER_FILE).is_file():
            # weights_only: the file can only rebuild tensors and plain containers, never run code
            path = directory / OPTIMIZER_FILE
            optimizers = torch.load(path, map_location="cpu", weights_only=True)
            if "param_groups" in optimizers:  # one optimizer's state dict: an older checkpoint
                optimizers = {"model": optimizers}
    except Exception as err:  # safetensors' and torch.load's own errors for a damaged file
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"{directory}: the training state is damaged ({first})") from None
    return TrainingState(meta, tensors, optimizers)
