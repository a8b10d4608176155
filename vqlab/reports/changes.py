"""A report's "What changed and why" section: the settings a re-run changed (from the preset's
``changes``), and the numbers before and after, read from the earlier run's CSVs kept in
``OUT/before/`` (``results.csv``, and any other CSV the report names).

A changed setting is a dict ``{"setting", "before", "after", "why"}``. The before/after tables
pair rows by a key (e.g. the tokenizer, or the strategy with seeds averaged) and show each
metric as ``before -> after``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vqlab.reports.markdown import markdown_table
from vqlab.reports.results import read_results


def read_before(out: Path, name: str = "results.csv") -> list[dict[str, Any]] | None:
    """The earlier run's rows from ``out/before/name``; None when it was not kept."""
    path = Path(out) / "before" / name
    return read_results(path) if path.is_file() else None


def _means(rows: list[dict], key: Callable[[dict], str], metrics: list[str]) -> dict:
    """{key: {metric: mean over that key's rows}} (rows without the metric left out)."""
    vals: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r.get("status") == "failed":
            continue
        for m in metrics:
            v = r.get(m)
            if isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v):
                vals[key(r)][m].append(float(v))
    return {k: {m: float(np.mean(v)) for m, v in d.items()} for k, d in vals.items()}


def _fmt(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"


def before_after(
    before: list[dict], after: list[dict], key: Callable[[dict], str], metrics: list[str]
) -> list[dict[str, str]]:
    """One row per key present in either run: each metric as ``before -> after`` (means over the
    rows sharing a key, e.g. seeds), ``n/a`` on the side that lacks it."""
    b, a = _means(before, key, metrics), _means(after, key, metrics)
    rows = []
    for k in sorted(set(b) | set(a)):
        row = {"compared": k}
        for m in metrics:
            row[m] = f"{_fmt(b.get(k, {}).get(m))} -> {_fmt(a.get(k, {}).get(m))}"
        rows.append(row)
    return rows


def changes_section(
    changes: list[dict[str, str]], tables: list[tuple[str, list[dict]]]
) -> list[str]:
    """Markdown lines: the changed settings, then each (caption, before_after rows) table."""
    lines = ["## What changed and why", ""]
    if changes:
        lines += [markdown_table(changes, ["setting", "before", "after", "why"]), ""]
    for caption, rows in tables:
        if rows:
            lines += [caption, "", markdown_table(rows, list(rows[0])), ""]
    return lines
