"""The protocol every replication follows, and the driver that runs one.

A replication is a :class:`Replication`: its name, its presets (name -> settings), whether it
needs ``--data``, whether ``--report-only`` applies (one sweep whose report reads pending runs
as missing), and ``run(job)``, which trains its runs and writes its results and report. The
driver (:func:`drive`) does what every replication needs before that, the same way for all:
it checks the preset, ``--report-only`` and ``--data`` (one-line errors, nothing written), and
hands ``run`` a :class:`Job` with the settings of this invocation. Through the job a replication
sweeps its runs (finished runs are skipped, so a second call resumes; under ``--report-only``
nothing is trained), times its stages and ends its report with the provenance section.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vqlab.errors import ConfigError, MissingFileError
from vqlab.experiments.sweep import run_sweep
from vqlab.reports.markdown import provenance

Rows = list[dict[str, Any]]


@dataclass
class Job:
    """One invocation of a replication: where it writes, on what data, with which preset.

    ``settings``: the preset's values (``presets[preset]``). ``t0``: when the driver started it,
    for the report's wall time.
    """

    name: str
    out: Path
    data: str | Path | None
    preset: str
    settings: Any
    jobs: int = 1
    progress: bool = True
    command: str = ""
    report_only: bool = False
    t0: float = field(default_factory=time.perf_counter)

    def seconds(self) -> float:
        """Wall time since the driver started this job."""
        return time.perf_counter() - self.t0

    def sweep(self, runs: list, out: str | Path | None = None, **kwargs: Any) -> Rows:
        """:func:`~vqlab.experiments.sweep.run_sweep` of ``runs`` into ``out`` (default: the
        job's folder) with this job's ``jobs``, ``progress``, ``command`` and report-only;
        ``kwargs`` override them (``command=None`` for the runs of an inner stage)."""
        options = {"jobs": self.jobs, "progress": self.progress, "command": self.command,
                   "report_only": self.report_only, **kwargs}  # fmt: skip
        return run_sweep(runs, self.out if out is None else out, **options)

    def lap(self, timing: dict[str, float], stage: str) -> None:
        """Record in ``timing`` the wall time of ``stage``: since the end of the stage before."""
        timing[stage] = self.seconds() - sum(timing.values())

    def how_made(self, *lines: str) -> list[str]:
        """The report's last section: ``lines`` (preset, settings, ...), then the provenance
        (command, wall time, device and versions)."""
        command = self.command or f"vqlab replicate {self.name}"
        return ["## How this was made", "", *lines, provenance(command, self.seconds()), ""]

    def write_report(self, lines: list[str]) -> Path:
        """``out/report.md`` from its lines."""
        path = self.out / "report.md"
        path.write_text("\n".join(lines))
        return path


@dataclass(frozen=True)
class Replication:
    """A paper experiment, declared (see the module docstring). ``presets`` is the module's own
    dict, so a test that patches a preset patches what the driver checks against."""

    name: str
    presets: dict[str, Any]
    run: Callable[[Job], Rows]
    needs_data: bool = False
    one_sweep: bool = False


def drive(
    rep: Replication,
    out: str | Path,
    *,
    data: str | Path | None = None,
    preset: str = "cpu",
    jobs: int = 1,
    progress: bool = True,
    command: str = "",
    report_only: bool = False,
    **options: Any,
) -> Rows:
    """Check, then run ``rep`` into ``out``; returns its result rows. ``options``: keywords of
    the replication's own ``run`` (``arms`` of ``recipes``)."""
    if preset not in rep.presets:
        raise ConfigError(
            f"unknown preset {preset!r} for {rep.name}; choose one of {list(rep.presets)}"
        )
    if report_only and not rep.one_sweep:
        raise ConfigError(
            f"--report-only works for the one-sweep experiments; {rep.name!r} has stages that "
            "build on each other: run it again to resume where it stopped"
        )
    if rep.needs_data and data is None:
        raise MissingFileError(f"replicate {rep.name} needs --data (a CIFAR-10 folder or zip)")
    job = Job(rep.name, Path(out), data, preset, rep.presets[preset], jobs, progress, command,
              report_only)  # fmt: skip
    return rep.run(job, **options)
