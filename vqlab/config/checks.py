"""Value checks shared by the config groups; each raises a one-line ConfigError."""

from __future__ import annotations

from vqlab.errors import ConfigError


def check_choice(group: str, name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{group}.{name}={value!r} is not valid; choose one of {list(choices)}")


def check_positive(group: str, name: str, value: float, *, strict: bool = True) -> None:
    if value != value or value < 0 or (strict and value == 0):  # value != value: NaN
        kind = "> 0" if strict else ">= 0"
        raise ConfigError(f"{group}.{name} must be {kind}; got {value}")
