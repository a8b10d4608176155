"""The papers' experiments by name: the one list that ``vqlab replicate`` reads.

Each replication declares itself as a :class:`~vqlab.experiments.protocol.Replication` in its
own module (its presets, whether it needs ``--data``, whether ``--report-only`` applies, and
its ``run``); :func:`replicate` checks and runs it through the shared driver
(:func:`~vqlab.experiments.protocol.drive`). Adding one is one module and one entry in
``REPLICATIONS``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vqlab.errors import ConfigError
from vqlab.experiments import (
    capacity,
    cifar,
    generation,
    init_study,
    recipe_search,
    recipes,
    synthetic,
    tokenizer,
    var,
)
from vqlab.experiments.protocol import Replication, drive

REPLICATIONS: tuple[Replication, ...] = (
    synthetic.REPLICATION,
    cifar.REPLICATION,
    capacity.REPLICATION,
    init_study.REPLICATION,
    recipes.REPLICATION,
    tokenizer.REPLICATION,
    generation.REPLICATION,
    var.REPLICATION,
    recipe_search.REPLICATION,
)
EXPERIMENTS: dict[str, Replication] = {r.name: r for r in REPLICATIONS}
# the preset names each experiment has (``cifar10`` has ``cpu-wide`` besides cpu and gpu)
PRESETS: dict[str, tuple[str, ...]] = {r.name: tuple(r.presets) for r in REPLICATIONS}
# one sweep and a report over its rows, which reads pending runs as missing (tested)
REPORT_ONLY = tuple(r.name for r in REPLICATIONS if r.one_sweep)


def replicate(name: str, out: str | Path, **kwargs: Any) -> list[dict[str, Any]]:
    """Run the paper experiment ``name`` into ``out`` (see the CLI's ``vqlab replicate``);
    ``kwargs``: :func:`~vqlab.experiments.protocol.drive`'s (``data``, ``preset``, ``jobs``,
    ``progress``, ``command``, ``report_only``) and the experiment's own (``arms``).

    ``report_only``: train nothing; write the report from the runs that have finished, the
    others listed as pending (for a sweep cut short; a later call without it resumes)."""
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; choose one of {list(EXPERIMENTS)}")
    return drive(EXPERIMENTS[name], out, **kwargs)
