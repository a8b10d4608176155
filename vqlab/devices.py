"""``--device`` checked like every other value: one line for a device that is not there.

:func:`check_device_name` reads the spelling without torch (the CLI answers a typo before its
heavy imports); :func:`resolve_device` also asks torch whether the device exists. Accepted:
``cpu``, ``cuda``, ``cuda:N`` and ``auto`` (the first GPU when torch sees one, else the CPU: what
the config's ``device: auto`` means for training).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from vqlab.errors import ConfigError

if TYPE_CHECKING:
    import torch

_SPELLING = re.compile(r"(cpu|cuda|auto)(?::(\d+))?")


def check_device_name(name: str, what: str = "--device") -> tuple[str, int | None]:
    """``(type, index)`` of a device name; :class:`ConfigError` for any other spelling."""
    m = _SPELLING.fullmatch(name.strip())
    if m is None or (m.group(1) in ("cpu", "auto") and m.group(2) is not None):
        raise ConfigError(f"{what} {name!r} is not a device; choose cpu, cuda, cuda:N or auto")
    return m.group(1), None if m.group(2) is None else int(m.group(2))


def resolve_device(name: str, what: str = "--device") -> torch.device:
    """The torch device ``name`` names, after checking that this machine has it."""
    import torch

    kind, index = check_device_name(name, what)
    if kind == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"{what} {name}: this machine has no CUDA device (or torch no CUDA)")
    count = torch.cuda.device_count()
    if index is not None and index >= count:
        raise ConfigError(f"{what} {name}: there is no GPU {index}; this machine has {count}")
    return torch.device("cuda", index or 0)
