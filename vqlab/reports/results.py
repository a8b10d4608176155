"""results.csv: one row per run of a sweep, written by sweeps and read by plots and reports."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

FIRST_COLUMNS = ("run", "status", "error")


def write_results(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Write rows (dicts, possibly with different keys) as CSV; atomic."""
    rows = list(rows)
    columns: list[str] = [c for c in FIRST_COLUMNS if any(c in r for r in rows)]
    for row in rows:
        columns += [k for k in row if k not in columns]
    path = Path(path)
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    os.replace(tmp, path)
    return path


def _parse(text: str) -> Any:
    if text == "":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a results.csv with numbers parsed back to int/float."""
    with open(path, newline="") as fh:
        return [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(fh)]
