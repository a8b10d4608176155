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


def check_out_dir(out: str | Path, *, overwrite: bool = False) -> bool:
    """Raise :class:`RunFolderError` if ``out`` cannot be a new run folder; changes nothing.

    Returns whether ``out`` holds files that ``overwrite`` would remove.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out} exists and is not a folder")
    full = out.is_dir() and any(out.iterdir())
    if full and not overwrite:
        raise RunFolderError(f"--out {out} is not empty; pass --overwrite or choose a new folder")
    return full


def prepare_out_dir(out: str | Path, *, overwrite: bool = False) -> Path:
    """Create ``out`` (with ``plots/``); refuse a non-empty folder unless ``overwrite``."""
    out = Path(out)
    if check_out_dir(out, overwrite=overwrite):
        shutil.rmtree(out)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    return out


class RunWriter:
    """Creates the run folder and appends metrics; every line is flushed, so a crash loses none."""

    def __init__(self, out: str | Path, *, overwrite: bool = False, _reopen: bool = False) -> None:
        self.out = Path(out) if _reopen else prepare_out_dir(out, overwrite=overwrite)
        self._metrics = open(self.out / "metrics.jsonl", "a")  # noqa: SIM115 - closed in close()

    def start(self, config: RunConfig, command: str | None) -> RunWriter:
        save_config(config, self.out / "config.yaml")
        (self.out / "command.txt").write_text((command or "(python API)") + "\n")
        return self

    @classmethod
    def reopen(cls, out: str | Path, step: int, command: str | None) -> RunWriter:
        """Continue the run folder ``out`` at ``step``: metric rows of ``step`` and later (logged
        after the checkpoint a resume starts from) are dropped, so no step appears twice."""
        out = Path(out)
        truncate_metrics(out / "metrics.jsonl", step)
        with open(out / "command.txt", "a") as f:
            f.write(f"(resumed at step {step}) {command or '(python API)'}\n")
        return cls(out, _reopen=True)

    def log(self, row: dict[str, Any]) -> None:
        self._metrics.write(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n")
        self._metrics.flush()

    def summary(self, summary: dict[str, Any]) -> None:
        write_json(self.out / "summary.json", summary)

    def close(self) -> None:
        self._metrics.close()


def truncate_metrics(path: Path, step: int) -> None:
    """Keep the rows of ``path`` before ``step`` (atomically); a torn last line is dropped."""
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # the line a crash cut short
                continue
            if isinstance(row, dict) and row.get("step", step) < step:
                rows.append(line + "\n")
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        f.writelines(rows)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.jsonl``."""
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
