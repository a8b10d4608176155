"""Reading configs: YAML files and ``--set KEY=VALUE`` text, parsed to the schema's types.

Every value is checked against its field's type (:mod:`vqlab.config.schema` holds the fields and
their rules); an unknown key is refused with the closest valid key and the valid choices.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any, Union

import yaml

from vqlab.config.schema import _GROUPS, RunConfig, valid_keys
from vqlab.errors import ConfigError


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


def edit_distance(a: str, b: str) -> int:
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
    best = min(keys, key=lambda k: (edit_distance(key, k), k))
    return best if edit_distance(key, best) <= max(2, len(key) // 3) else None


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
    if len(parts) == 1 and parts[0] in ("seed", "device", "task"):
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
