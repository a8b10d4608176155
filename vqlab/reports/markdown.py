"""Markdown reports: tables from result rows, and the provenance every report states."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Sequence
from typing import Any

import torch


def environment() -> dict[str, str]:
    """Device and versions, for the 'how this was made' section of a report."""
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    else:
        device = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    return {
        "device": device,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


def fmt(value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:.4g}"
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A GitHub-markdown table of ``columns`` (missing values left blank)."""
    head = "| " + " | ".join(columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def provenance(command: str, seconds: float, extra: dict[str, str] | None = None) -> str:
    """The 'how this was made' block: command, device, versions, wall time."""
    env = {**environment(), **(extra or {})}
    lines = [f"- command: `{command}`", f"- wall time: {seconds:.1f} s"]
    lines += [f"- {k}: {v}" for k, v in env.items()]
    return "\n".join(lines)
