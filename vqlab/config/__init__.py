"""Typed, validated run configuration.

A run is described by :class:`RunConfig`, a tree of frozen dataclasses grouped by concern
(:mod:`vqlab.config.schema`). Keys are dotted (``vq.codebook_size``) in YAML files and in
``--set`` overrides alike (:mod:`vqlab.config.parse`). Unknown keys, values of the wrong type
and contradictions are refused with a :class:`ConfigError` before any work starts; the message
names the problem and the valid choices.
"""

from vqlab.config.parse import (
    build_config,
    closest_key,
    edit_distance,
    load_config,
    parse_value,
    read_config_file,
    save_config,
)
from vqlab.config.schema import (
    RECIPES,
    DataConfig,
    LossConfig,
    ModelConfig,
    PriorConfig,
    RunConfig,
    SampleConfig,
    TrainConfig,
    VQConfig,
    parse_channel_mult,
    valid_keys,
)
from vqlab.errors import ConfigError

__all__ = [
    "RECIPES",
    "ConfigError",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "PriorConfig",
    "RunConfig",
    "SampleConfig",
    "TrainConfig",
    "VQConfig",
    "build_config",
    "closest_key",
    "edit_distance",
    "load_config",
    "parse_channel_mult",
    "parse_value",
    "read_config_file",
    "save_config",
    "valid_keys",
]
