"""The run folder: config.yaml, command.txt, metrics.jsonl, summary.json (see DESIGN.md)."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

from vqlab.config import RunConfig, save_config


class RunFolderError(ValueError):
    """The output folder cannot be used (the CLI turns it into exit code 2)."""


def _clean(value: Any) -> Any:
    """JSON-safe scalars: tensors to numbers, NaN/inf to None (strict JSON has no NaN)."""
    if hasattr(value, "item") and getattr(value, "numel", lambda: 1)() == 1:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, obj: dict[str, Any]) -> None:
    """Atomic JSON write: a crash never leaves a half-written file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({k: _clean(v) for k, v in obj.items()}, indent=2))
    os.replace(tmp, path)


def prepare_out_dir(out: str | Path, *, overwrite: bool = False) -> Path:
    """Create ``out`` (with ``plots/``); refuse a non-empty folder unless ``overwrite``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise RunFolderError(
                f"--out {out} is not empty; pass --overwrite or choose a new folder"
            )
        shutil.rmtree(out)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    return out


class RunWriter:
    """Creates the run folder and appends metrics; every line is flushed, so a crash loses none."""

    def __init__(self, out: str | Path, *, overwrite: bool = False) -> None:
        self.out = prepare_out_dir(out, overwrite=overwrite)
        self._metrics = open(self.out / "metrics.jsonl", "a")  # noqa: SIM115 - closed in close()

    def start(self, config: RunConfig, command: str | None) -> None:
        save_config(config, self.out / "config.yaml")
        (self.out / "command.txt").write_text((command or "(python API)") + "\n")

    def log(self, row: dict[str, Any]) -> None:
        self._metrics.write(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n")
        self._metrics.flush()

    def summary(self, summary: dict[str, Any]) -> None:
        write_json(self.out / "summary.json", summary)

    def close(self) -> None:
        self._metrics.close()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.jsonl``."""
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
