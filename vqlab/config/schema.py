"""Typed, validated run configuration.

A run is described by :class:`RunConfig`, a tree of frozen dataclasses grouped by concern. Keys are
dotted (``vq.codebook_size``) in YAML files and in ``--set`` overrides alike. Unknown keys, values
of the wrong type and contradictions are refused with a :class:`ConfigError` before any work
starts; the message names the problem and the valid choices.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Union

import yaml

from vqlab.errors import ConfigError


def _choice(group: str, name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{group}.{name}={value!r} is not valid; choose one of {list(choices)}")


def _positive(group: str, name: str, value: float, *, strict: bool = True) -> None:
    if value != value or value < 0 or (strict and value == 0):  # value != value: NaN
        kind = "> 0" if strict else ">= 0"
        raise ConfigError(f"{group}.{name} must be {kind}; got {value}")


DATA_NAMES = ("gaussian_mixture", "cifar10", "image_folder", "idx")
MODEL_KINDS = ("mlp", "conv")
UPDATES = ("ema", "grad")
INITS = ("kmeans", "kmeans++", "random_normal", "random_uniform", "sample", "gmm", "none")
ESTIMATORS = ("ste", "rotation")
SEARCHES = ("exact", "fast")
# the quantizer layer: vqlab's own, or the peer library's in the same model (vqlab.quantizers.peer)
IMPLS = ("vqlab", "vector_quantize_pytorch")
# Named presets of vq.* values (``vq.recipe``), and of train.* ones under dotted keys. A preset
# fills only the fields left at their defaults, so any key set to something else wins. "best" is
# the winner of ``vqlab replicate recipes`` on CIFAR-10 (results/recipes-cpu, cpu preset, one
# seed): SimVQ under deferred quantization had the best mean rank of test MSE over K=1024 and
# 4096, though deferred + dead-code restart was within 0.5% MSE of it.
RECIPES: dict[str, dict[str, Any]] = {
    "none": {},
    "best": {"simvq": True, "update": "grad", "train.strategy": "deferred"},
}
STRATEGIES = ("standard", "deferred")
DEVICES = ("auto", "cpu", "cuda")
NONFINITE_ACTIONS = ("stop", "skip")


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
    test_limit: int = 0  # evaluate on the first N test samples; 0 = the whole test set

    def __post_init__(self) -> None:
        _choice("data", "name", self.name, DATA_NAMES)
        for name in ("peaks", "dim", "samples_per_peak", "test_samples_per_peak"):
            _positive("data", name, getattr(self, name))
        _positive("data", "test_limit", self.test_limit, strict=False)
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
    """The quantizer (:class:`~vqlab.quantizers.vq.VectorQuantizer`) and its initialisation.

    Recipes against collapse, all off by default:
    - ``dead_code_threshold``: re-seed codes whose EMA usage falls below it (0 = off).
    - ``estimator``: ``ste`` (straight-through) or ``rotation`` (the rotation trick).
    - ``normalize``: cosine codes (L2-normalised search vectors and codes).
    - ``code_dim``: codes of this dimension behind learned projections (0 = ``model.latent_dim``,
      no projection).
    - ``simvq``: codes ``C W`` (frozen ``C``, learned ``W``); needs ``update=grad`` and no
      dead-code restart.
    - ``impl``: ``vqlab`` or ``vector_quantize_pytorch`` (the peer library's layer in the same
      model, for comparisons; the other keys map onto its arguments, see
      :mod:`vqlab.quantizers.peer`).
    - ``search``: ``exact`` or ``fast`` nearest-code search (fast: bf16 tensor-core scoring on
      CUDA, certified per row, the same codes; see :func:`vqlab.quantizers.nearest_code`).
    - ``recipe``: a named preset from ``RECIPES`` that fills the fields left at their defaults.
      A field set to a non-default value wins; a field set explicitly *to its default* is
      indistinguishable from an unset one and takes the preset's value (use ``recipe=none`` to
      opt out).
    """

    codebook_size: int = 256
    beta: float = 0.25
    update: str = "ema"
    decay: float = 0.99
    eps: float = 1e-5
    init: str = "kmeans"
    kmeans_iters: int = 20
    init_samples: int = 10000
    dead_code_threshold: float = 0.0
    estimator: str = "ste"
    normalize: bool = False
    code_dim: int = 0
    simvq: bool = False
    impl: str = "vqlab"
    search: str = "exact"
    recipe: str = "none"

    def __post_init__(self) -> None:
        _choice("vq", "recipe", self.recipe, tuple(RECIPES))
        self._apply_recipe()
        _choice("vq", "update", self.update, UPDATES)
        _choice("vq", "estimator", self.estimator, ESTIMATORS)
        _choice("vq", "init", self.init, INITS)
        _choice("vq", "impl", self.impl, IMPLS)
        _choice("vq", "search", self.search, SEARCHES)
        if self.impl != "vqlab" and self.simvq:
            raise ConfigError(f"vq.simvq=true is vqlab's own; vq.impl={self.impl} has no SimVQ")
        if self.impl != "vqlab" and self.search != "exact":
            raise ConfigError(
                f"vq.search={self.search} is vqlab's own search; vq.impl={self.impl} searches "
                "with its own code"
            )
        _positive("vq", "codebook_size", self.codebook_size)
        _positive("vq", "beta", self.beta, strict=False)
        if not 0.0 < self.decay < 1.0:
            raise ConfigError(f"vq.decay must lie in (0, 1); got {self.decay}")
        _positive("vq", "eps", self.eps)
        _positive("vq", "kmeans_iters", self.kmeans_iters, strict=False)
        _positive("vq", "init_samples", self.init_samples)
        _positive("vq", "dead_code_threshold", self.dead_code_threshold, strict=False)
        _positive("vq", "code_dim", self.code_dim, strict=False)
        if self.init_samples < self.codebook_size:
            raise ConfigError(
                f"vq.init_samples={self.init_samples} is smaller than vq.codebook_size="
                f"{self.codebook_size}; k-means needs at least one sample per code"
            )
        self._check_simvq()

    def _apply_recipe(self) -> None:
        """Fill the fields still at their defaults from the preset named by ``recipe`` (its
        ``train.*`` entries are applied by :class:`RunConfig`)."""
        defaults = {f.name: f.default for f in fields(self)}
        for name, value in RECIPES[self.recipe].items():
            if "." not in name and getattr(self, name) == defaults[name]:
                object.__setattr__(self, name, value)  # frozen: only during construction

    def _check_simvq(self) -> None:
        if not self.simvq:
            return
        if self.update != "grad":
            raise ConfigError(
                f"vq.simvq=true needs vq.update=grad (got {self.update}): SimVQ codes are C W "
                "with W learned by the codebook loss, so an EMA update has no free code to move"
            )
        if self.dead_code_threshold > 0:
            fix = (
                f"vq.recipe={self.recipe} turns it on, so use vq.recipe=none"
                if RECIPES[self.recipe].get("dead_code_threshold")
                else "set vq.dead_code_threshold=0"
            )
            raise ConfigError(
                f"vq.simvq=true cannot be combined with vq.dead_code_threshold="
                f"{self.dead_code_threshold}: a SimVQ code is a row of C W, not a free vector to "
                f"re-seed; {fix}"
            )


@dataclass(frozen=True)
class TrainConfig:
    """``checkpoint_every``: steps between resumable checkpoints (0 = only the final one). The
    default of 1000 costs little (a checkpoint is one write of the model and optimizer) and
    bounds the work a crash loses. ``on_nonfinite``: a NaN/Inf loss, codebook or gradient
    ``stop``s the run, or the batch is ``skip``ped and counted (``nonfinite_skipped``)."""

    strategy: str = "standard"
    steps: int = 3000
    pretrain_steps: int = 1500
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    log_every: int = 50
    eval_every: int = 500
    checkpoint_every: int = 1000
    on_nonfinite: str = "stop"

    def __post_init__(self) -> None:
        _choice("train", "strategy", self.strategy, STRATEGIES)
        _choice("train", "on_nonfinite", self.on_nonfinite, NONFINITE_ACTIONS)
        _positive("train", "checkpoint_every", self.checkpoint_every, strict=False)
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
        if self.device not in DEVICES:  # a top-level key: no group prefix in the message
            raise ConfigError(f"device={self.device!r} is not valid; choose one of {list(DEVICES)}")
        self._apply_train_recipe()

    def _apply_train_recipe(self) -> None:
        """A ``vq.recipe`` may name a schedule too (``train.strategy``): fill those ``train.*``
        fields still at their defaults, as the ``vq.*`` ones are filled."""
        defaults = {f.name: f.default for f in fields(TrainConfig)}
        fill = {}
        for key, value in RECIPES[self.vq.recipe].items():
            group, _, name = key.partition(".")
            if group == "train" and getattr(self.train, name) == defaults[name]:
                fill[name] = value
        if fill:  # frozen: replace the group (validated again) during construction only
            object.__setattr__(self, "train", dataclasses.replace(self.train, **fill))

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


INT_LIMIT = 2**63  # ints travel into torch, which holds them in 64 bits


def _type_name(typ: Any) -> str:
    """``int``, ``float``, ``str``, ``bool``, or ``int or none`` for ``int | None``."""
    if typing.get_origin(typ) in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(typ)).replace("NoneType", "none")
    return getattr(typ, "__name__", str(typ))


def _parse_int(text: str, key: str) -> int:
    try:
        value = int(text)
    except ValueError:
        try:
            as_float = float(text)  # accept 1e4 where it is a whole number
        except ValueError:
            as_float = math.nan
        if not as_float.is_integer():
            raise ConfigError(f"{key} expects an int; got {text!r}") from None
        value = int(as_float)
    return _check_int_range(value, key)


def _check_int_range(value: int, key: str) -> int:
    if not -INT_LIMIT <= value < INT_LIMIT:
        raise ConfigError(f"{key} expects an int that fits in 64 bits; got {value}")
    return value


def _check_finite(value: float, key: str, text: object) -> float:
    if not math.isfinite(value):
        raise ConfigError(f"{key} expects a finite float; got {text!r}")
    return value


def parse_value(text: str, typ: Any, key: str) -> Any:
    """Parse ``--set`` text to the field type (int, float, str, bool, or ``X | None``).

    A value that does not parse is a :class:`ConfigError` naming the key, the expected type and
    the text; NaN and Inf are refused for floats, and ints must fit in 64 bits.
    """
    if not isinstance(text, str):
        raise ConfigError(f"{key} expects text to parse; got {type(text).__name__}")
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
        return _parse_int(text, key)
    if typ is float:
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"{key} expects a float; got {text!r}") from None
        return _check_finite(value, key, text)
    return text


def _coerce(value: Any, typ: Any, key: str) -> Any:
    """Check a YAML value against the field type (YAML already parsed numbers and bools).

    Text is parsed as ``--set`` text is; an int is accepted for a float and a whole float for
    an int; a number is accepted as the text of a ``str`` field (a folder named ``2024``).
    Anything else is a :class:`ConfigError` naming the expected type.
    """
    if isinstance(value, str):
        return parse_value(value, typ, key)
    base = typ
    if typing.get_origin(typ) in (Union, types.UnionType):
        if value is None:
            return None
        base = [a for a in typing.get_args(typ) if a is not type(None)][0]
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if base is str and numeric:
        return str(value)
    if base is float and numeric:
        return _check_finite(float(value), key, value)
    if base is int and isinstance(value, float) and value.is_integer():
        return _check_int_range(int(value), key)
    if base is int and isinstance(value, int) and not isinstance(value, bool):
        return _check_int_range(value, key)
    if not isinstance(value, base) or (base is int and isinstance(value, bool)):
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise ConfigError(f"{key} expects {_type_name(typ)}; got {shown} ({type(value).__name__})")
    return value


def _edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions), O(len(a) * len(b))."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def closest_key(key: str) -> str | None:
    """The valid key a typo most likely meant, or None when nothing is close.

    A key whose last part names a field of another group (``train.codebook_size``) gets that
    field; otherwise the valid key at the smallest edit distance, if that distance is at most
    a third of the key's length (and at least 2 edits are allowed), ties to the first key.
    """
    keys = valid_keys()
    leaf = key.rsplit(".", 1)[-1]
    same_leaf = [k for k in keys if k.rsplit(".", 1)[-1] == leaf]
    if len(same_leaf) == 1:
        return same_leaf[0]
    best = min(keys, key=lambda k: (_edit_distance(key, k), k))
    return best if _edit_distance(key, best) <= max(2, len(key) // 3) else None


def _unknown(key: str) -> ConfigError:
    """The error for a key no config has: the closest valid key, and the valid choices."""
    keys = valid_keys()
    group = key.split(".", 1)[0]
    if key in _GROUPS:
        return ConfigError(
            f"{key!r} is a group of keys, not a key; give one of "
            f"{', '.join(k for k in keys if k.startswith(key + '.'))}"
        )
    close = closest_key(key)
    hint = f"; did you mean {close!r}?" if close else ""
    scope = [k for k in keys if k.startswith(group + ".")] if group in _GROUPS else keys
    where = f"Valid keys in {group}" if group in _GROUPS else "Valid keys"
    return ConfigError(f"unknown config key {key!r}{hint} {where}: {', '.join(scope)}")


def _set(tree: dict[str, Any], key: str, value: Any, *, from_text: bool) -> None:
    key = str(key)  # YAML allows keys like 1 or null; they are simply unknown
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
        if isinstance(value, dict) and (value or dotted in _GROUPS):
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
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder; give a YAML file")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not UTF-8 text (byte {err.start}): not a YAML file") from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror or err}") from None
    raw = {} if raw is None else raw
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
