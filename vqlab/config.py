"""Typed, validated run configuration.

A run is described by :class:`RunConfig`, a tree of frozen dataclasses grouped by concern. Keys are
dotted (``vq.codebook_size``) in YAML files and in ``--set`` overrides alike. Unknown keys, values
of the wrong type and contradictions are refused with a :class:`ConfigError` before any work
starts; the message names the problem and the valid choices.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Union

import yaml


class ConfigError(ValueError):
    """A bad configuration key or value (the CLI turns it into exit code 2)."""


def _choice(group: str, name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{group}.{name}={value!r} is not valid; choose one of {list(choices)}")


def _positive(group: str, name: str, value: float, *, strict: bool = True) -> None:
    if value < 0 or (strict and value == 0):
        kind = "> 0" if strict else ">= 0"
        raise ConfigError(f"{group}.{name} must be {kind}; got {value}")


DATA_NAMES = ("gaussian_mixture", "cifar10", "image_folder", "idx")
MODEL_KINDS = ("mlp", "conv")
UPDATES = ("ema", "grad")
INITS = ("kmeans", "kmeans++", "random_normal", "random_uniform", "sample")
STRATEGIES = ("standard", "deferred")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class DataConfig:
    name: str = "gaussian_mixture"
    path: str | None = None
    peaks: int = 10
    dim: int = 8
    std: float = 0.5
    samples_per_peak: int = 1000
    test_samples_per_peak: int = 200
    spread: float = 10.0
    image_size: int | None = None

    def __post_init__(self) -> None:
        _choice("data", "name", self.name, DATA_NAMES)
        for name in ("peaks", "dim", "samples_per_peak", "test_samples_per_peak"):
            _positive("data", name, getattr(self, name))
        _positive("data", "std", self.std)
        _positive("data", "spread", self.spread, strict=False)
        if self.name != "gaussian_mixture" and not self.path:
            raise ConfigError(f"data.name={self.name} needs data.path (a folder or archive)")


def parse_channel_mult(text: str) -> tuple[int, ...]:
    """``"1,2,2"`` (or ``"1-2-2"``, which fits inside a comma-separated ``--grid``) -> (1, 2, 2)."""
    parts = text.replace("-", ",").split(",")
    try:
        mult = tuple(int(p) for p in parts)
    except ValueError:
        mult = ()
    if not mult or min(mult) < 1:
        raise ConfigError(
            f"model.channel_mult={text!r} must be positive integers separated by ',' or '-', "
            "e.g. 1,2,2; or empty for the default"
        )
    return mult


@dataclass(frozen=True)
class ModelConfig:
    """``kind=mlp`` reads hidden, depth; ``kind=conv`` reads width, channel_mult, downsample,
    res_blocks, attention; both read latent_dim (= D).

    conv: level ``i`` of the encoder has ``width * channel_mult[i]`` channels and there is one
    stride-2 step between levels, so ``channel_mult`` has ``log2(downsample) + 1`` entries. Empty
    means 1 at full resolution and 2 at every lower level (``1,2,2`` for downsample=4).
    """

    kind: str = "mlp"
    hidden: int = 64
    depth: int = 2
    latent_dim: int = 8
    width: int = 64
    downsample: int = 4
    channel_mult: str = ""
    res_blocks: int = 1
    attention: bool = False

    def __post_init__(self) -> None:
        _choice("model", "kind", self.kind, MODEL_KINDS)
        for name in ("hidden", "depth", "latent_dim", "width", "res_blocks"):
            _positive("model", name, getattr(self, name))
        if self.downsample < 1 or self.downsample & (self.downsample - 1):
            raise ConfigError(
                f"model.downsample must be a power of two (1, 2, 4, 8, 16, ...); "
                f"got {self.downsample}"
            )
        self.channel_multipliers()  # raises on a malformed or mismatched channel_mult

    def channel_multipliers(self) -> tuple[int, ...]:
        """The conv channel multipliers, one per resolution level (resolving the empty default)."""
        levels = self.downsample.bit_length()  # log2(downsample) + 1 for a power of two
        if not self.channel_mult.strip():
            return (1,) + (2,) * (levels - 1)
        mult = parse_channel_mult(self.channel_mult)
        if len(mult) != levels:
            raise ConfigError(
                f"model.channel_mult={self.channel_mult!r} has {len(mult)} levels, but "
                f"model.downsample={self.downsample} needs {levels} (one more than the "
                f"{levels - 1} stride-2 steps); give {levels} multipliers or leave it empty"
            )
        return mult


@dataclass(frozen=True)
class VQConfig:
    codebook_size: int = 256
    beta: float = 0.25
    update: str = "ema"
    decay: float = 0.99
    eps: float = 1e-5
    init: str = "kmeans"
    kmeans_iters: int = 20
    init_samples: int = 10000
    dead_code_threshold: float = 0.0

    def __post_init__(self) -> None:
        _choice("vq", "update", self.update, UPDATES)
        _choice("vq", "init", self.init, INITS)
        _positive("vq", "codebook_size", self.codebook_size)
        _positive("vq", "beta", self.beta, strict=False)
        if not 0.0 < self.decay < 1.0:
            raise ConfigError(f"vq.decay must lie in (0, 1); got {self.decay}")
        _positive("vq", "eps", self.eps)
        _positive("vq", "kmeans_iters", self.kmeans_iters, strict=False)
        _positive("vq", "init_samples", self.init_samples)
        _positive("vq", "dead_code_threshold", self.dead_code_threshold, strict=False)
        if self.init_samples < self.codebook_size:
            raise ConfigError(
                f"vq.init_samples={self.init_samples} is smaller than vq.codebook_size="
                f"{self.codebook_size}; k-means needs at least one sample per code"
            )


@dataclass(frozen=True)
class TrainConfig:
    strategy: str = "standard"
    steps: int = 3000
    pretrain_steps: int = 1500
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    log_every: int = 50
    eval_every: int = 500

    def __post_init__(self) -> None:
        _choice("train", "strategy", self.strategy, STRATEGIES)
        for name in ("steps", "batch_size", "log_every", "eval_every"):
            _positive("train", name, getattr(self, name))
        _positive("train", "lr", self.lr)
        _positive("train", "weight_decay", self.weight_decay, strict=False)
        _positive("train", "pretrain_steps", self.pretrain_steps, strict=False)
        if self.strategy == "deferred" and self.pretrain_steps >= self.steps:
            raise ConfigError(
                f"train.pretrain_steps={self.pretrain_steps} must be < train.steps={self.steps} "
                "so that deferred quantization has a VQ phase"
            )


@dataclass(frozen=True)
class RunConfig:
    seed: int = 0
    device: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    vq: VQConfig = field(default_factory=VQConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        _choice("run", "device", self.device, DEVICES)

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict of every key (what ``config.yaml`` holds)."""
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """``{"vq.codebook_size": 256, ...}``: every key, dotted."""
        out: dict[str, Any] = {}
        for key, value in self.to_dict().items():
            if isinstance(value, dict):
                out.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                out[key] = value
        return out


_GROUPS = {f.name: f for f in fields(RunConfig) if dataclasses.is_dataclass(f.default_factory)}


def valid_keys() -> list[str]:
    """Every dotted key a config file or ``--set`` accepts."""
    return sorted(RunConfig().flat())


def _field_type(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def parse_value(text: str, typ: Any, key: str) -> Any:
    """Parse ``--set`` text to the field type (int, float, str, bool, or ``X | None``)."""
    origin = typing.get_origin(typ)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if text.strip().lower() in ("none", "null", "~", ""):
            return None
        return parse_value(text, args[0], key)
    if typ is bool:
        low = text.strip().lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key} expects a bool (true/false); got {text!r}")
    if typ is int:
        try:
            return int(text)
        except ValueError:
            try:
                as_float = float(text)  # accept 1e4 where it is a whole number
            except ValueError:
                as_float = None
            if as_float is not None and as_float.is_integer():
                return int(as_float)
            raise ConfigError(f"{key} expects an int; got {text!r}") from None
    if typ is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{key} expects a float; got {text!r}") from None
    return text


def _coerce(value: Any, typ: Any, key: str) -> Any:
    """Check a YAML value against the field type (YAML already parsed numbers and bools)."""
    if isinstance(value, str):
        return parse_value(value, typ, key)
    base = typ
    if typing.get_origin(typ) in (Union, types.UnionType):
        if value is None:
            return None
        base = [a for a in typing.get_args(typ) if a is not type(None)][0]
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if base is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, base) or (base is int and isinstance(value, bool)):
        name = getattr(base, "__name__", str(base))
        raise ConfigError(f"{key} expects {name}; got {value!r} ({type(value).__name__})")
    return value


def _unknown(key: str) -> ConfigError:
    close = difflib.get_close_matches(key, valid_keys(), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint} Valid keys: {', '.join(valid_keys())}")


def _set(tree: dict[str, Any], key: str, value: Any, *, from_text: bool) -> None:
    parts = key.split(".")
    if len(parts) == 1 and parts[0] in ("seed", "device"):
        typ = _field_type(RunConfig, parts[0])
        tree[parts[0]] = parse_value(value, typ, key) if from_text else _coerce(value, typ, key)
        return
    if len(parts) != 2 or parts[0] not in _GROUPS:
        raise _unknown(key)
    cls = _GROUPS[parts[0]].default_factory
    names = {f.name for f in fields(cls)}
    if parts[1] not in names:
        raise _unknown(key)
    typ = _field_type(cls, parts[1])
    parsed = parse_value(value, typ, key) if from_text else _coerce(value, typ, key)
    tree.setdefault(parts[0], {})[parts[1]] = parsed


def _flatten_yaml(node: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten_yaml(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def build_config(
    values: dict[str, Any] | None = None, overrides: list[str] | None = None
) -> RunConfig:
    """RunConfig from dotted-key values (already typed) and ``KEY=VALUE`` override strings."""
    tree: dict[str, Any] = {}
    for key, value in (values or {}).items():
        _set(tree, key, value, from_text=False)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE; got {item!r}")
        key, text = item.split("=", 1)
        _set(tree, key.strip(), text.strip(), from_text=True)
    try:
        groups = {name: f.default_factory(**tree.pop(name, {})) for name, f in _GROUPS.items()}
        return RunConfig(**tree, **groups)
    except TypeError as err:  # pragma: no cover - keys are checked above
        raise ConfigError(str(err)) from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The dotted-key values of a YAML config file (nested or dotted keys), not yet validated."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys")
    return _flatten_yaml(raw)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML config (nested or dotted keys) and apply ``KEY=VALUE`` overrides."""
    values = read_config_file(path) if path is not None else {}
    return build_config(values, overrides)


def save_config(config: RunConfig, path: str | Path) -> None:
    """Write every resolved key as nested YAML."""
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
