"""The papers' experiments by name: one registry that ``vqlab replicate`` reads.

Each replication is called as ``fn(out, *, data, preset, jobs, progress, command)`` and writes
``results.csv``, ``plots/`` and ``report.md`` under ``out``; adding one is one line in
:data:`EXPERIMENTS`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from vqlab.experiments import capacity, init_study, recipes, synthetic
from vqlab.experiments.capacity import replicate_capacity
from vqlab.experiments.cifar import CIFAR_PRESETS, replicate_cifar10
from vqlab.experiments.generation import GENERATION_PRESETS, replicate_generation
from vqlab.experiments.init_study import replicate_init
from vqlab.experiments.recipe_search import SEARCH_PRESETS, replicate_beat_peer
from vqlab.experiments.recipes import replicate_recipes
from vqlab.experiments.sweep import report_only as sweep_report_only
from vqlab.experiments.synthetic import replicate_synthetic
from vqlab.experiments.tokenizer import TOKENIZER_PRESETS, replicate_tokenizer
from vqlab.experiments.var import VAR_PRESETS, replicate_var

Replication = Callable[..., list[dict[str, Any]]]

EXPERIMENTS: dict[str, Replication] = {
    "synthetic": replicate_synthetic,
    "cifar10": replicate_cifar10,
    "capacity": replicate_capacity,
    "init": replicate_init,
    "recipes": replicate_recipes,
    "tokenizer": replicate_tokenizer,
    "generation": replicate_generation,
    "var": replicate_var,
    "beat-peer": replicate_beat_peer,
}
# the preset names each experiment has (``cifar10`` has ``cpu-wide`` besides cpu and gpu)
PRESETS: dict[str, tuple[str, ...]] = {
    "synthetic": tuple(synthetic.PRESETS),
    "cifar10": tuple(CIFAR_PRESETS),
    "capacity": tuple(capacity.PRESETS),
    "init": tuple(init_study.STEPS),
    "recipes": tuple(recipes.PRESETS),
    "tokenizer": tuple(TOKENIZER_PRESETS),
    "generation": tuple(GENERATION_PRESETS),
    "var": tuple(VAR_PRESETS),
    "beat-peer": tuple(SEARCH_PRESETS),
}
# one sweep and a report over its rows, which reads pending runs as missing (tested)
REPORT_ONLY = ("cifar10", "recipes", "beat-peer")


def replicate(
    name: str,
    out: str | Path,
    *,
    data: str | Path | None = None,
    preset: str = "cpu",
    jobs: int = 1,
    progress: bool = True,
    command: str = "",
    report_only: bool = False,
) -> list[dict[str, Any]]:
    """Run the paper experiment ``name`` into ``out`` (see the CLI's ``vqlab replicate``).

    ``report_only``: train nothing; write the report from the runs that have finished, the
    others listed as pending (for a sweep cut short; a later call without it resumes)."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {list(EXPERIMENTS)}")
    if report_only and name not in REPORT_ONLY:
        raise ValueError(
            f"--report-only works for the one-sweep experiments {list(REPORT_ONLY)}; {name!r} "
            f"has stages that build on each other: run it to resume where it stopped"
        )
    call = partial(
        EXPERIMENTS[name], out, data=data, preset=preset, jobs=jobs, progress=progress,
        command=command,
    )  # fmt: skip
    if not report_only:
        return call()
    with sweep_report_only():
        return call()
