"""Grids of configs -> run folders -> results.csv.

A sweep skips runs that already finished (their ``summary.json`` exists) and records a failed
run's error in results.csv instead of aborting the rest. :func:`write_sweep_report` writes the
``report.md`` (and its plot) of ``vqlab sweep``.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from vqlab.config import RunConfig, build_config
from vqlab.reports.markdown import markdown_table, provenance
from vqlab.reports.plots import plot_vs_codebook_size
from vqlab.reports.results import write_results

RUNS_DIR = "runs"


def check_preset(preset: str, presets: dict) -> None:
    """A preset name the replication has, or a one-line error naming the ones it has."""
    if preset not in presets:
        raise ValueError(f"preset={preset!r}; choose one of {list(presets)}")


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """``["vq.codebook_size=16,64", ...]`` -> ``{"vq.codebook_size": ["16", "64"]}``."""
    grid: dict[str, list[str]] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--grid expects KEY=v1,v2,...; got {item!r}")
        key, values = item.split("=", 1)
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not vals:
            raise ValueError(f"--grid {key} has no values")
        grid[key.strip()] = vals
    return grid


def run_name(assignment: dict[str, str]) -> str:
    """A folder name for one grid point, e.g. ``train.strategy=deferred__vq.codebook_size=64``."""
    parts = [f"{k}={v}" for k, v in assignment.items()]
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", "__".join(parts)) or "run"


def expand(
    base_values: dict[str, Any], base_overrides: list[str], grid: dict[str, list[str]]
) -> list[tuple[str, dict[str, str], RunConfig]]:
    """Every combination of the grid as (name, assignment, validated config).

    All configs are built (and so validated) before any run starts.
    """
    keys = list(grid)
    out = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        assignment = dict(zip(keys, combo))
        overrides = base_overrides + [f"{k}={v}" for k, v in assignment.items()]
        out.append((run_name(assignment), assignment, build_config(base_values, overrides)))
    return out


def train_or_resume(config: RunConfig, run_dir: Path, command: str | None = None) -> dict:
    """Train ``config`` into ``run_dir``, or resume it there from its last checkpoint when an
    earlier attempt with the same config was cut short (a sweep goes on across sittings)."""
    from vqlab.config import load_config
    from vqlab.training.engine import resume, train

    saved = run_dir / "config.yaml"
    if saved.is_file() and (run_dir / "checkpoint").exists() and load_config(saved) == config:
        return resume(run_dir, progress=False, command=command)
    return train(config, run_dir, progress=False, overwrite=True, command=command)


def _train_one(config: RunConfig, run_dir: Path, command: str | None, threads: int) -> dict:
    """Worker body for ``jobs > 1``: one run in its own process with ``threads`` torch threads."""
    import torch

    torch.set_num_threads(threads)
    return train_or_resume(config, run_dir, command)


INTERRUPTED = "interrupted (the same command resumes it)"


class SweepTerminated(SystemExit):
    """SIGTERM reached a sweep's parent process (exit code 143, as the signal's own)."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


@contextmanager
def _stop_workers_on_exit(
    pool: ProcessPoolExecutor, rows: list[dict[str, Any]], results: Path
) -> Iterator[None]:
    """A parallel sweep that is stopped takes its workers with it.

    Without this, SIGTERM (``kill``, ``pkill -f 'vqlab replicate'``, a scheduler's timeout) ends
    the parent alone, and the pool's workers, which match neither name, go on training into the
    output folder with no one to record their results. Here SIGTERM raises
    :class:`SweepTerminated` in the parent; on it, or on Ctrl-C, the workers are terminated and
    joined (each run keeps its last checkpoint, which checkpoints write atomically, so the same
    command resumes it), the queued runs are cancelled, and ``results.csv`` marks every run not
    finished as interrupted before the exception goes on.
    """
    ours_before = set(multiprocessing.active_children())  # the pool starts its workers lazily
    previous = None
    if threading.current_thread() is threading.main_thread():  # signal handlers live there only
        previous = signal.getsignal(signal.SIGTERM)

        def _raise(signum: int, frame: object) -> None:
            raise SweepTerminated()

        signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    except BaseException:
        if previous is not None:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut this
        workers = [p for p in multiprocessing.active_children() if p not in ours_before]
        for worker in workers:  # first: shutdown(wait=True) would wait for the runs in flight
            worker.terminate()
        for worker in workers:
            worker.join(timeout=30)
        pool.shutdown(wait=True, cancel_futures=True)
        for row in rows:
            if "status" not in row:
                row["status"] = INTERRUPTED
        write_results(results, rows)
        if isinstance(sys.exc_info()[1], SweepTerminated):
            left = sum(row["status"] == INTERRUPTED for row in rows)
            print(
                f"vqlab: stopped by SIGTERM; {left} runs in {results.parent} marked interrupted "
                "in results.csv; the same command resumes them",
                file=sys.stderr,
            )
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _record_failure(row: dict[str, Any], run_dir: Path, err: BaseException, trace: str) -> None:
    row.update(status="failed", error=f"{type(err).__name__}: {err}")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "error.txt").write_text(trace)


PENDING = "pending (not run)"


def run_sweep(
    runs: list[tuple[str, dict[str, str], RunConfig]],
    out: str | Path,
    *,
    jobs: int = 1,
    train_fn: Callable[..., dict[str, Any]] | None = None,
    progress: bool = True,
    command: str | None = None,
    report_only: bool = False,
) -> list[dict[str, Any]]:
    """Train every run into ``out/runs/<name>``; write ``out/results.csv``; return its rows.

    report_only: train nothing; finished runs are read and the rest get the status
    ``pending (not run)``, so a sweep cut short can be reported on as it stands.

    jobs: runs trained at once, each in its own process (spawned, so CUDA works in them) with
    ``max(1, cpu_count // jobs)`` torch threads. Small models waste most of a device one at a
    time, and on the CPU one thread per tiny run beats several fighting over each op.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1; got {jobs}")
    out = Path(out)
    (out / RUNS_DIR).mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = [{"run": name, **assignment} for name, assignment, _ in runs]
    todo = []
    for row, (name, _, config) in zip(rows, runs):
        run_dir = out / RUNS_DIR / name
        summary_file = run_dir / "summary.json"
        if summary_file.is_file():
            row.update(status="skipped (finished)", **json.loads(summary_file.read_text()))
            continue
        if report_only:
            row["status"] = PENDING
            continue
        todo.append((row, run_dir, config))  # an unfinished attempt resumes (train_or_resume)
    bar = tqdm(total=len(runs), initial=len(runs) - len(todo), desc="sweep", disable=not progress)
    if jobs == 1 or len(todo) <= 1:
        for row, run_dir, config in todo:
            try:
                if train_fn is None:
                    summary = train_or_resume(config, run_dir, command)
                else:
                    summary = train_fn(config, run_dir, progress=False, command=command)
                row.update(status="ok", **summary)
            except Exception as err:  # record and go on: one bad run must not sink the sweep
                _record_failure(row, run_dir, err, traceback.format_exc())
            bar.update()
            write_results(out / "results.csv", rows)  # after each run: a crash loses nothing
    else:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        ctx = multiprocessing.get_context("spawn")
        with (
            ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool,
            _stop_workers_on_exit(pool, rows, out / "results.csv"),
        ):
            futures = {
                pool.submit(_train_one, config, run_dir, command, threads): (row, run_dir)
                for row, run_dir, config in todo
            }
            for future in as_completed(futures):
                row, run_dir = futures[future]
                try:
                    row.update(status="ok", **future.result())
                except Exception as err:
                    _record_failure(
                        row,
                        run_dir,
                        err,
                        "".join(traceback.format_exception(type(err), err, err.__traceback__)),
                    )
                bar.update()
                write_results(out / "results.csv", rows)
    bar.close()
    write_results(out / "results.csv", rows)
    return rows


SWEEP_COLUMNS = ["perplexity", "usage", "codebook_mean_l2", "coverage_ratio", "recon_mse"]


def write_sweep_report(
    out: str | Path, rows: list[dict[str, Any]], grid_keys: list[str], command: str, seconds: float
) -> Path:
    """``out/report.md``: every run's row under the grid's keys, and metrics against K.

    rows: the rows :func:`run_sweep` returned; grid_keys: the swept keys (table columns). The
    plot ``out/plots/vs_codebook_size.png`` is drawn only when a row has ``codebook_size``.
    Returns the report's path.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figure = ""
    if any("codebook_size" in r for r in rows):
        (out / "plots").mkdir(exist_ok=True)
        plot_vs_codebook_size(
            rows, ["perplexity", "usage", "recon_mse"], out / "plots" / "vs_codebook_size.png"
        )
        figure = "\n![metrics against codebook size](plots/vs_codebook_size.png)\n"
    cols = ["run", "status", *grid_keys, *SWEEP_COLUMNS, "error"]
    path = out / "report.md"
    path.write_text(
        f"# Sweep\n\n{markdown_table(rows, cols)}\n{figure}\n## How this was made\n\n"
        f"{provenance(command, seconds)}\n"
    )
    return path
