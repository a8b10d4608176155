"""What the benchmark scripts share: timing variants interleaved repeat by repeat, and writing
result rows as ``STEM.csv`` and ``STEM.json``.

Interleaving (every variant once per repeat, in turn) spreads a shared machine's load over all
variants alike, so their ratio holds even where the absolute times do not.
"""

from __future__ import annotations

import csv
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def interleaved_ms(
    steps: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1
) -> dict[str, float]:
    """Median milliseconds of each callable over ``repeats`` rounds, every callable once per
    round in the dict's order, after ``warmup`` untimed rounds."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1; got {repeats}")
    for _ in range(warmup):
        for fn in steps.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def write_rows(stem: str | Path, rows: list[dict[str, Any]], **extra: Any) -> None:
    """``STEM.json`` (``{"rows": rows, **extra}``) and ``STEM.csv`` (every key of any row, in
    order of first appearance); the folder is made if missing."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{stem}.json").write_text(json.dumps({**extra, "rows": rows}, indent=1) + "\n")
    keys = list(dict.fromkeys(key for r in rows for key in r))
    with open(f"{stem}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {stem}.csv and .json")
