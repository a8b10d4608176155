"""The ``vqlab`` command line: thin commands that build a config and call one library function.

Bad input (unknown key, bad value, missing data, a non-empty --out) ends with one line on stderr
and exit code 2, never a traceback, and comes before torch, matplotlib or the experiments are
imported (keep this module's imports light; tests/test_cli_startup.py). Every --out follows
:mod:`vqlab.outdir`: an existing non-empty folder or file only with --overwrite.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
import traceback
from pathlib import Path
from typing import Annotated

import typer

from vqlab.config import load_config  # torch-free: reading and checking a config loads no torch
from vqlab.errors import UserError
from vqlab.outdir import check_out

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Train vector-quantized tokenizers that do not collapse, and show whether they did.",
)

# vqlab.experiments.replications.EXPERIMENTS's names, spelled here so that `vqlab --help` and a
# bad name need not import every experiment (tests/test_cli_startup.py keeps them equal)
EXPERIMENT_NAMES = "synthetic cifar10 capacity init recipes tokenizer generation var beat-peer"
EXPERIMENT_NAMES = tuple(EXPERIMENT_NAMES.split())


class UsageError(UserError, ValueError):
    """A bad command-line argument (exit code 2)."""


def _exists(path: Path | None, what: str) -> None:
    """A path the command reads must be there (checked before the heavy imports)."""
    if path is not None and not path.exists():
        raise UsageError(f"{what} {path}: no such file or folder")


def _command() -> str:
    return "vqlab " + " ".join(shlex.quote(a) for a in sys.argv[1:])


OutOpt = Annotated[Path, typer.Option("--out", help="Output folder (the run folder itself).")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="KEY=VALUE config override; repeat once per key."),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace an existing non-empty --out (folder or file).")
]
JobsOpt = Annotated[
    int, typer.Option("--jobs", help="Runs at once, each in its own process; 0 = one per CPU core.")
]


def _jobs(jobs: int) -> int:
    if jobs < 0:
        raise UsageError(f"--jobs must be >= 0; got {jobs}")
    return jobs or max(1, min(os.cpu_count() or 1, 8))


@app.command()
def train(
    out: Annotated[
        Path | None, typer.Option("--out", help="Output folder (the run folder itself).")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="YAML config file.")] = None,
    set_: SetOpt = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --out folder.")] = False,
    quiet: QuietOpt = False,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="Continue this run folder from its last checkpoint, with the config saved "
            "there (so no --config, --set, --out or --overwrite)."
        ),
    ] = None,
    nproc: Annotated[
        int,
        typer.Option(help="Processes (one GPU each) sharing every batch; >1 launches torchrun."),
    ] = 1,
) -> None:
    """Train one run; writes config.yaml, metrics.jsonl, summary.json, checkpoint/ under --out."""
    if resume is not None and (config or set_ or out or overwrite):
        raise UsageError(
            "--resume continues a run with the config saved in its folder; "
            "leave out --config, --set, --out and --overwrite"
        )
    if resume is None and out is None:
        raise UsageError("Missing option '--out' (or --resume RUN_DIR)")
    if nproc < 1:
        raise UsageError(f"--nproc must be >= 1; got {nproc}")
    if nproc > 1:
        raise typer.Exit(_launch(nproc, out, config, set_ or [], overwrite, quiet, resume))
    command = os.environ.get("VQLAB_COMMAND") or _command()  # the launcher's, under --nproc
    if resume is not None:
        if not (resume / "config.yaml").is_file():  # before the engine's imports
            raise UsageError(f"--resume {resume}: not a run folder (no config.yaml there)")
        from vqlab.training.engine import resume as resume_run

        summary = resume_run(resume, progress=not quiet, command=command)
    else:
        cfg = load_config(config, set_ or [])
        check_out(out, overwrite=overwrite)
        from vqlab.training.engine import train as train_run

        summary = train_run(cfg, out, overwrite=overwrite, progress=not quiet, command=command)
    if int(os.environ.get("RANK", "0")) == 0:  # one line for the whole run under torchrun
        keys = ("strategy", "codebook_size", "perplexity", "usage", "recon_mse", "seconds")
        typer.echo(json.dumps({k: summary.get(k) for k in keys}))


def _launch(
    nproc: int,
    out: Path | None,
    config: Path | None,
    sets: list[str],
    overwrite: bool,
    quiet: bool,
    resume: Path | None,
) -> int:
    """``vqlab train --nproc N``: check the input here (one error line, not N), then torchrun."""
    from vqlab.training.distributed import launch
    from vqlab.training.logging import check_out_dir

    if "WORLD_SIZE" in os.environ:
        raise UsageError("--nproc starts torchrun itself; under torchrun leave it out")
    if resume is not None:
        if not (resume / "config.yaml").is_file():
            raise UsageError(f"--resume {resume}: not a run folder (no config.yaml there)")
        cfg = load_config(resume / "config.yaml")
        argv = ["train", "--resume", str(resume)]
    else:
        cfg = load_config(config, sets)
        check_out_dir(out, overwrite=overwrite)
        argv = ["train", "--out", str(out), *(["--config", str(config)] if config else [])]
        argv += [a for s in sets for a in ("--set", s)] + (["--overwrite"] if overwrite else [])
    if cfg.train.batch_size % nproc:
        raise UsageError(
            f"train.batch_size={cfg.train.batch_size} must be divisible by --nproc {nproc} "
            "(every process trains on an equal shard of each batch)"
        )
    # the children record the command that was typed, --nproc included
    env = {**os.environ, "VQLAB_COMMAND": _command()}
    return launch(nproc, argv + (["--quiet"] if quiet else []), env=env)


@app.command()
def sweep(
    out: OutOpt,
    grid: Annotated[list[str], typer.Option(help="KEY=v1,v2,...; repeat per key.")],
    config: Annotated[Path | None, typer.Option(help="YAML base config.")] = None,
    set_: SetOpt = None,
    jobs: JobsOpt = 1,
    quiet: QuietOpt = False,
) -> None:
    """Run every combination of --grid; skips finished runs, records failures (results.csv)."""
    from vqlab.config import read_config_file
    from vqlab.experiments.sweep import expand, parse_grid, run_sweep, write_sweep_report

    load_config(config, set_ or [])  # validate the base before expanding
    base = read_config_file(config) if config else {}
    try:
        parsed = parse_grid(grid)
    except ValueError as err:
        raise UsageError(str(err)) from None
    runs = expand(base, set_ or [], parsed)
    t0 = time.perf_counter()
    rows = run_sweep(runs, out, jobs=_jobs(jobs), progress=not quiet, command=_command())
    write_sweep_report(out, rows, list(parsed), _command(), time.perf_counter() - t0)
    failed = sum(r.get("status") == "failed" for r in rows)
    typer.echo(f"{len(rows)} runs ({failed} failed); results in {out / 'results.csv'}")


@app.command()
def replicate(
    name: Annotated[str, typer.Argument(help=f"Experiment: {', '.join(EXPERIMENT_NAMES)}.")],
    out: OutOpt,
    data: Annotated[Path | None, typer.Option(help="Dataset path (image experiments).")] = None,
    preset: Annotated[
        str, typer.Option(help="cpu or gpu sizing (cifar10 also has cpu-wide: K up to 2^16).")
    ] = "cpu",
    jobs: JobsOpt = 0,
    quiet: QuietOpt = False,
    report_only: Annotated[
        bool,
        typer.Option(
            "--report-only",
            help="Train nothing: report on the finished runs, the rest listed as pending "
            "(cifar10, recipes, beat-peer).",
        ),
    ] = False,
) -> None:
    """Reproduce a paper experiment into --out (report.md, results.csv, plots/)."""
    if name not in EXPERIMENT_NAMES:  # before the experiments' imports
        raise UsageError(f"unknown experiment {name!r}; choose one of {list(EXPERIMENT_NAMES)}")
    from vqlab.experiments.replications import replicate as run_replication

    # its preset, --report-only and --data are checked by the driver
    run_replication(
        name,
        out,
        data=data,
        preset=preset,
        jobs=_jobs(jobs),
        progress=not quiet,
        command=_command(),
        report_only=report_only,
    )
    typer.echo(f"report: {out / 'report.md'}")


@app.command()
def diagnose(
    out: OutOpt,
    run: Annotated[
        Path | None, typer.Argument(help="A run folder or its checkpoint/ folder.")
    ] = None,
    data: Annotated[Path | None, typer.Option(help="Evaluate on this dataset path.")] = None,
    codebook: Annotated[
        str | None,
        typer.Option(help="FILE[:KEY]: a codebook in any checkpoint (instead of a run folder)."),
    ] = None,
    ids: Annotated[Path | None, typer.Option(help="Token ids: a token file or int array.")] = None,
    latents: Annotated[Path | None, typer.Option(help="Encoder outputs (N, ..., D).")] = None,
    labels: Annotated[Path | None, typer.Option(help="Class labels (N,).")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Diagnostics of a trained model (a run folder) or of any codebook (--codebook):
    diagnostics.json, plots and report.md."""
    if (run is None) == (codebook is None):
        raise UsageError("give a run folder or --codebook FILE[:KEY] (one of them)")
    _exists(run, "RUN"), _exists(data, "--data")
    check_out(out, overwrite=overwrite)
    if codebook is not None:
        if data is not None:
            raise UsageError("--data goes with a run folder; with --codebook give --latents")
        from vqlab.runs.diagnose_codebook import diagnose_codebook

        kw = {"ids": ids, "latents": latents, "labels": labels, "overwrite": overwrite}
        metrics = diagnose_codebook(codebook, out, command=_command(), **kw)
        typer.echo(json.dumps(metrics))
        return
    if ids is not None or latents is not None or labels is not None:
        raise UsageError("--ids, --latents and --labels go with --codebook")
    from vqlab.runs.diagnose import diagnose_run

    metrics = diagnose_run(run, out, data_path=data, command=_command(), overwrite=overwrite)
    typer.echo(json.dumps(metrics))


@app.command()
def tokenize(
    run: Annotated[Path, typer.Argument(help="A tokenizer: run folder or save_pretrained folder.")],
    data: Annotated[Path, typer.Option(help="The dataset to encode (folder, zip or batches).")],
    out: Annotated[Path, typer.Option("--out", help="The token file to write (.npz).")],
    data_name: Annotated[
        str | None, typer.Option(help="Dataset kind; default: the tokenizer's data.name.")
    ] = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Encode a dataset's train and test splits to token ids (train_ids, test_ids, ... in .npz)."""
    from vqlab.data.detect import NAMES

    _exists(run, "RUN"), _exists(data, "--data")
    if data_name is not None and data_name not in NAMES:
        raise UsageError(f"--data-name {data_name!r}: choose one of {list(NAMES)}")
    check_out(out, overwrite=overwrite, file=True)
    from vqlab.runs.tokenize import tokenize_dataset
    from vqlab.tokenizer import Tokenizer

    tok = Tokenizer.from_pretrained(run)
    info = tokenize_dataset(
        tok, data, out, data_name=data_name, progress=not quiet, overwrite=overwrite
    )
    typer.echo(json.dumps(info))


@app.command()
def sample(
    run: Annotated[Path, typer.Argument(help="A trained prior's run folder (task=prior).")],
    n: Annotated[int, typer.Option("--n", help="Number of samples.")],
    out: OutOpt,
    labels: Annotated[
        str, typer.Option(help="uniform (classes in turn), none, or a class number.")
    ] = "uniform",
    set_: SetOpt = None,
    device: Annotated[
        str, typer.Option(help="cpu, cuda, cuda:N or auto (a GPU if torch sees one).")
    ] = "cpu",
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Sample token ids from a prior (samples.npz); with its tokenizer also images.npz, grid.png."""
    from vqlab.devices import check_device_name

    if n < 1:
        raise UsageError(f"--n must be >= 1; got {n}")
    _exists(run, "RUN")
    check_device_name(device)
    check_out(out, overwrite=overwrite)
    from vqlab.runs.sample import sample_run

    kw = {"labels": labels, "overrides": set_ or [], "device": device, "overwrite": overwrite}
    info = sample_run(run, n, out, progress=not quiet, **kw)
    typer.echo(json.dumps({k: info[k] for k in ("n", "steps", "cfg", "files")}))


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="A tokenizer: run folder or save_pretrained folder.")],
    data: Annotated[Path, typer.Option(help="The dataset whose test split is scored.")],
    featnet: Annotated[Path, typer.Option(help="Feature net folder (vqlab featnet train).")],
    out: OutOpt,
    limit: Annotated[int, typer.Option(help="Score a fixed subset of N test images; 0 = all.")] = 0,
    lpips: Annotated[
        bool, typer.Option(help="Also real LPIPS (needs lpips and its weights).")
    ] = False,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """A tokenizer's r-FD/r-KD (featnet), PSNR, SSIM, MSE and collapse verdict: eval.json."""
    if limit < 0:
        raise UsageError(f"--limit must be >= 0; got {limit}")
    for path, what in ((run, "RUN"), (data, "--data"), (featnet, "--featnet")):
        _exists(path, what)
    check_out(out, overwrite=overwrite)
    from vqlab.runs.evaluate import evaluate_tokenizer

    kw = {"limit": limit, "lpips": lpips, "command": _command(), "overwrite": overwrite}
    metrics = evaluate_tokenizer(run, data, featnet, out, progress=not quiet, **kw)
    typer.echo("\n".join(metrics["verdict"][:2]))
    typer.echo(f"eval.json: {out / 'eval.json'}")


featnet_app = typer.Typer(
    no_args_is_help=True, help="The feature net that scores image sets (FD, KD, accuracy)."
)
app.add_typer(featnet_app, name="featnet")


@featnet_app.command("train")
def featnet_train(
    data: Annotated[Path, typer.Option(help="Labelled images (class sub-folders).")],
    out: OutOpt,
    data_name: Annotated[
        str | None,
        typer.Option(help="data.name: cifar10, image_folder or idx; default: read from --data."),
    ] = None,
    arch: Annotated[str, typer.Option(help="resnet (scores runs) or vgg (perceptual loss).")] = (
        "resnet"
    ),
    seed: Annotated[
        int, typer.Option(help="Seed of the init, the batches and the augmentation.")
    ] = 0,
    steps: Annotated[
        int | None, typer.Option(help="Training steps; default: the arch's CIFAR-10 budget.")
    ] = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a feature net on --data; writes featnet.safetensors and featnet.json under --out."""
    from vqlab.data.detect import NAMES, detect_data_name

    _exists(data, "--data")
    if data_name is None:
        data_name = detect_data_name(data)
        if data_name is None:
            raise UsageError(f"--data {data}: cannot tell its kind; give --data-name {NAMES}")
    elif data_name not in NAMES:
        raise UsageError(f"--data-name {data_name!r}: choose one of {list(NAMES)}")
    check_out(out, overwrite=overwrite)
    from vqlab.evaluation.featnet import train_featnet

    kw = {"arch": arch, "seed": seed, "steps": steps, "overwrite": overwrite}
    info = train_featnet(data_name, data, out, progress=not quiet, **kw)
    keys = ("test_accuracy", "steps", "seconds", "sha256")
    typer.echo(json.dumps({k: info[k] for k in keys}))


@app.command("fd")
def fd(
    real: Annotated[Path, typer.Argument(help="Real images: a folder, a zip or an .npz.")],
    fake: Annotated[Path, typer.Argument(help="Generated images: a folder, a zip or an .npz.")],
    featnet: Annotated[Path, typer.Option(help="Feature net folder (vqlab featnet train).")],
    inception: Annotated[
        Path | None,
        typer.Option(help="pt_inception-2015-12-05-6726825d.pth: add real Inception FID/KID."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per feature batch.")] = 256,
    quiet: QuietOpt = False,
) -> None:
    """FD and KD of FAKE against REAL in a feature net's space; prints one JSON line."""
    if batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1; got {batch_size}")
    paths = ((real, "REAL"), (fake, "FAKE"), (featnet, "--featnet"), (inception, "--inception"))
    for path, what in paths:
        _exists(path, what)
    from vqlab.evaluation.frechet import fd_kd_paths

    result = fd_kd_paths(
        real, fake, featnet, inception=inception, batch_size=batch_size, progress=not quiet
    )
    typer.echo(json.dumps(result))


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the app and turns bad input into one line on stderr and exit code 2."""
    try:
        code = app(args=argv, standalone_mode=False)
    except UserError as err:  # every error of bad input (vqlab.errors)
        return _error(str(err))
    except (FileNotFoundError, NotADirectoryError) as err:
        # the OS's own answer for a path the user typed that is not there (an unreadable
        # --config, a --data file): bad input too
        return _error(str(err))
    except Exception as err:
        # the parser's own errors (missing option, no such command). Typer vendors its click
        # in recent releases, so they are recognised by shape rather than by class.
        if hasattr(err, "format_message") and hasattr(err, "exit_code"):
            if type(err).__name__ == "NoArgsIsHelpError":
                typer.echo(err.format_message(), err=True)
                return 2
            return _error(err.format_message())
        if type(err).__name__ == "Abort":
            typer.echo("vqlab: aborted", err=True)
            return 130
        guard = sys.modules.get("vqlab.training.guard")  # loaded if it raised
        if guard and isinstance(err, guard.NonFiniteError):  # the run went bad: exit code 1
            typer.echo("vqlab: error: " + " ".join(str(err).split()), err=True)
            return 1
        raise
    return code if isinstance(code, int) else 0


def _error(message: str) -> int:
    """One line on stderr, exit code 2."""
    typer.echo("vqlab: error: " + " ".join(message.split()), err=True)
    return 2


def run() -> None:
    """The console script. A torchrun worker ends through ``distributed.leave`` (see there)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:  # distributed.under_torchrun, without torch
        sys.exit(main())
    from vqlab.training.distributed import leave

    try:
        code = main()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    except BaseException:  # noqa: BLE001 - printed as Python would, then the same exit code 1
        traceback.print_exc()
        code = 1
    leave(code)
