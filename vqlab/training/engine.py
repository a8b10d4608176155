"""The one training engine: steps and phases, logging, checkpoints, resume, DDP and the guard.

What is trained is a task's business (:mod:`vqlab.training.tasks`: the tokenizer today, a
generative prior next); the engine runs any of them the same way. Standard and deferred
quantization differ only in the :class:`Schedule`, which the engine builds and every task obeys.

One step: the task's forward and backward on this rank's shard of the global batch (the EMA
codebook update happens inside the quantizer), the non-finite guard
(:mod:`vqlab.training.guard`), then every named optimizer steps. Every
``train.checkpoint_every`` steps the whole training state goes to ``checkpoint/``
(:mod:`vqlab.training.checkpoint`), and :func:`resume` continues from there.

When a resumed run equals an uninterrupted one bit for bit (``summary.json`` without
``seconds``, ``metrics.jsonl``, the weights):

- the checkpoint restores everything that decides later numbers: the weights and EMA buffers
  of every module, every optimizer's moments and step counts, the global torch RNG (dead-code
  restarts draw from it; the CUDA one too on a GPU), the batch sampler's generator,
  permutation and position, the step (and with it the phase), and the skip counter. The config
  comes from the run folder, so steps, cadences (log, eval, checkpoint) and seeds cannot
  change. Evaluation and diagnostics use their own seeded generators, so they do not disturb
  the training stream;
- on the CPU: the same machine type and the same torch build (kernels pick code paths by
  instruction set, e.g. AVX2 or AVX-512, and these sum floats in different orders);
- the same number of torch threads (``OMP_NUM_THREADS`` or ``torch.set_num_threads``):
  intra-op parallel reductions split their sums by thread;
- the same number of processes under DDP: the all-reduces sum in rank order;
- the same data files (``data.path``);
- on CUDA a resumed run is correct but not bit-identical: ``index_add_`` and ``bincount``
  (EMA sums, k-means) add floats with atomics, in no fixed order.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from vqlab.config import RunConfig, load_config
from vqlab.errors import MissingFileError
from vqlab.training.checkpoint import (
    TrainingState,
    load_checkpoint_config,
    load_training_state,
    recover,
    save_checkpoint,
)
from vqlab.training.distributed import Dist, on_main, setup, share, sum_over_ranks, teardown
from vqlab.training.guard import (
    NonFiniteError,
    first_bad_gradient,
    first_bad_state,
    grads_finite,
    is_finite,
    nonfinite_error,
)
from vqlab.training.logging import FolderLock, RunWriter, check_out_dir
from vqlab.training.schedule import Schedule, lr_factor
from vqlab.training.tasks import TASKS, Task

CHECKPOINT_DIR = "checkpoint"


def train(
    config: RunConfig,
    out: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Train one run into the folder ``out``; returns the summary (also in ``summary.json``).

    A bad ``out`` is refused before any work, and the task (data, models) is built before the
    folder is written, so input that fails there leaves ``out`` as it was. Under torchrun every
    rank calls this (:mod:`vqlab.training.distributed`); rank 0 writes.
    """
    dist = setup(config.device)
    try:
        on_main(lambda: check_out_dir(out, overwrite=overwrite), dist)
        run = _build(config, dist, None)
        run.writer = on_main(
            lambda: RunWriter(out, overwrite=overwrite).start(config, command), dist
        )
        return _session(run, progress)
    finally:
        teardown(dist)


def resume(run_dir: str | Path, *, progress: bool = True, command: str | None = None) -> dict:
    """Continue the run in ``run_dir`` from its last checkpoint, with the config saved there.

    metrics.jsonl keeps the rows before the checkpoint's step and goes on from there. A run
    that never wrote a checkpoint starts again from step 0; a finished run (``summary.json``
    exists) is left alone and its summary returned. A folder that another process is training
    is refused (its lock is held). The module docstring says when a resumed run matches an
    uninterrupted one bit for bit.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise MissingFileError(f"--resume {run_dir}: not a run folder (no config.yaml there)")
    config = load_config(run_dir / "config.yaml")
    if (run_dir / "summary.json").is_file():
        return json.loads((run_dir / "summary.json").read_text())
    dist = setup(config.device)
    lock = None
    try:
        lock = on_main(lambda: FolderLock(run_dir), dist)  # before the checkpoint is touched
        # rank 0 repairs a swap that a crash interrupted; on_main's broadcast orders that
        # before any other rank reads the folder
        ckpt = on_main(lambda: recover(run_dir / CHECKPOINT_DIR), dist)
        ckpt = ckpt or run_dir / CHECKPOINT_DIR
        training = load_training_state(ckpt) if ckpt.is_dir() else None
        if training is not None and load_checkpoint_config(ckpt)[0] != config:
            raise ValueError(f"{ckpt} was written with another config than {run_dir}/config.yaml")
        start = 0 if training is None else int(training.meta["step"])
        run = _build(config, dist, None if training is None else (ckpt, training))
        run.writer = on_main(lambda: RunWriter.reopen(run_dir, start, command, lock), dist)
        lock = None  # the writer holds it now and releases it on close
        return _session(run, progress)
    finally:
        if lock is not None:
            lock.release()
        teardown(dist)


@dataclass
class _Run:
    """Everything one training session holds; built once by :func:`_build`, then stepped."""

    config: RunConfig
    dist: Dist
    task: Task
    schedule: Schedule
    writer: RunWriter | None = None  # rank 0 only, set once the task is built
    step: int = 0  # the next step to run
    skipped: int = 0  # batches skipped for a non-finite value (train.on_nonfinite=skip)
    seconds: float = 0.0  # wall time of the earlier sessions of a resumed run
    t0: float = field(default_factory=time.perf_counter)
    last_checkpoint: str | None = None  # for the non-finite message

    def elapsed(self) -> float:
        return round(self.seconds + time.perf_counter() - self.t0, 3)


def _session(run: _Run, progress: bool) -> dict[str, Any]:
    """Train, evaluate and write the summary; the writer (and the folder's lock) is closed
    whatever happens."""
    try:
        summary = _run(run, progress and run.dist.is_main)
        if run.writer is not None:
            run.writer.summary(summary)
    finally:
        if run.writer is not None:
            run.writer.close()
    return summary


def _build(config: RunConfig, dist: Dist, resume_from: tuple[Path, TrainingState] | None) -> _Run:
    torch.manual_seed(config.seed)
    tc = config.train
    schedule = Schedule(tc.strategy, tc.steps, tc.pretrain_steps, tc.bridge_steps, tc.refit_steps())
    weights = None if resume_from is None else resume_from[0]
    task = TASKS[config.task](config, dist, schedule, weights)
    run = _Run(config, dist, task, schedule)
    if resume_from is not None:
        _restore(run, *resume_from)
    return run


def _capture(run: _Run, *, final: bool) -> TrainingState:
    """The state a resume needs at ``run.step`` (a final checkpoint needs only the counters)."""
    meta = {
        "step": run.step,
        "phase": run.task.phase(run.step),
        "finished": final,
        "nonfinite_skipped": run.skipped,
        "seconds": run.elapsed(),
        "world_size": run.dist.world,
    }
    if final:
        return TrainingState(meta)
    sampler = run.task.sampler
    meta["sampler_position"] = sampler.position
    tensors = {
        "rng.torch": torch.get_rng_state(),
        "sampler.generator": sampler.gen.get_state(),
        "sampler.perm": sampler.perm,
    }
    if run.dist.device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(run.dist.device)
    optimizers = {name: opt.state_dict() for name, opt in run.task.optimizers.items()}
    return TrainingState(meta, tensors, optimizers)


def _restore(run: _Run, ckpt: Path, state: TrainingState) -> None:
    meta, tensors = state.meta, state.tensors
    run.step, run.skipped = int(meta["step"]), int(meta["nonfinite_skipped"])
    run.seconds = float(meta.get("seconds", 0.0))
    run.last_checkpoint = f"step {run.step} in {ckpt}"
    if meta["finished"]:
        return  # the model is final; only the evaluation and summary remain
    for name, opt in run.task.optimizers.items():
        opt.load_state_dict(state.optimizers[name])
    torch.set_rng_state(tensors["rng.torch"])
    if run.dist.device.type == "cuda" and "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"], run.dist.device)
    sampler = run.task.sampler
    sampler.gen.set_state(tensors["sampler.generator"])
    sampler.perm = tensors["sampler.perm"]
    sampler.position = int(meta["sampler_position"])


def _save(run: _Run, *, final: bool = False) -> None:
    """Write the checkpoint (rank 0), after checking that no tensor in the state went bad."""
    task = run.task
    for name, module in task.modules.items():
        bad = first_bad_state(module, task.optimizers.get(name))
        if bad is not None:
            phase = run.task.phase(run.step - 1)
            what = bad if name == "model" else f"{name} {bad}"
            raise nonfinite_error(f"model state {what}", run.step - 1, phase, run.last_checkpoint)
    if run.dist.is_main:
        directory = run.writer.out / CHECKPOINT_DIR
        state = _capture(run, final=final)
        save_checkpoint(task.modules, run.config, directory, task.input_shape, state)
        run.last_checkpoint = f"step {run.step} in {directory}"


def _run(run: _Run, progress: bool) -> dict[str, Any]:
    tc, dist = run.config.train, run.dist
    bar = tqdm(
        range(run.step, tc.steps),
        total=tc.steps,
        initial=run.step,
        desc=run.task.describe(),
        disable=not progress,
        leave=False,
    )
    for step in bar:
        try:
            prepared = run.task.prepare(step)
        except NonFiniteError as err:
            raise nonfinite_error(str(err), step, "init", run.last_checkpoint) from None
        if prepared is not None:
            _log(run, prepared)
        losses = _step(run, step)
        run.step = step + 1
        last = step == tc.steps - 1
        if step % tc.log_every == 0 or last:
            row = {"step": step, "phase": run.task.phase(step), **losses}
            if tc.on_nonfinite == "skip":
                row["nonfinite_skipped"] = run.skipped
            if step % tc.eval_every == 0 or last:
                bar.set_postfix_str(f"evaluating at step {step}", refresh=True)  # minutes on CPU
                metrics = _evaluate(run, step, final=False)
                row.update({"eval": True, **(metrics or {})})
            _log(run, row)
            bar.set_postfix(phase=row["phase"], loss=f"{losses['loss']:.4f}")
        if tc.checkpoint_every and run.step % tc.checkpoint_every == 0 and not last:
            _save(run)
    summary = None
    bar.close()
    # the final evaluation can take minutes after the training bar is gone: its own bar
    with tqdm(total=1, desc="final evaluation", disable=not progress, leave=False) as done:
        metrics = _evaluate(run, tc.steps - 1, final=True)
        done.update()
    if metrics is not None:  # rank 0
        summary = {**run.task.finish(run.writer.out, metrics), "nonfinite_skipped": run.skipped}
    _save(run, final=True)
    summary = share(summary, dist)
    summary["seconds"] = run.elapsed()
    return summary


def _evaluate(run: _Run, step: int, *, final: bool) -> dict[str, Any] | None:
    """Rank 0 evaluates the whole test set (global diagnostics); other ranks get None.

    A model that diverged can be finite yet so large that the quantizer's input check refuses
    it (squared distances would overflow): that ``ValueError`` ends the run like a non-finite
    value, naming the step; on_main makes every rank stop with it.
    """

    def on_rank0() -> dict[str, Any]:
        try:
            return run.task.evaluate(step, final=final)
        except ValueError as err:
            phase = run.task.phase(step)
            raise nonfinite_error(
                f"or overflowing values in the evaluation ({err})", step, phase, run.last_checkpoint
            ) from err

    return on_main(on_rank0, run.dist)


def _log(run: _Run, row: dict[str, Any]) -> None:
    if run.writer is not None:
        run.writer.log(row)


def _step(run: _Run, step: int) -> dict[str, float]:
    """One optimizer step on this rank's shard of the global batch -> losses (rank mean).

    The non-finite checks of every loss term, the task's own checks and the gradients are
    reduced over ranks with the losses, in one collective and one device sync, so all ranks
    decide alike.
    """
    task = run.task
    tc = run.config.train
    if tc.warmup_steps or tc.lr_schedule != "constant":
        factor = lr_factor(step, tc.steps, tc.warmup_steps, tc.lr_schedule)
        for opt in task.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = group.setdefault("initial_lr", group["lr"]) * factor
    skip = tc.on_nonfinite == "skip"
    saved = task.save_volatile() if skip else None  # the EMA update happens in forward
    result = task.losses(step)
    terms = result.terms
    checks = {f"loss term {name!r}": is_finite(t) for name, t in terms.items() if name != "loss"}
    checks.update(result.checks)
    params = [p for module in task.modules.values() for p in module.parameters()]
    checks["gradient"] = grads_finite(params)
    values = torch.stack([torch.as_tensor(t).detach().float() for t in terms.values()])
    flags = (~torch.stack(list(checks.values()))).float()
    packed = sum_over_ranks(torch.cat([values, flags]), run.dist).tolist()  # the one sync
    losses = {name: v / run.dist.world for name, v in zip(terms, packed)}
    bad = [name for name, flag in zip(checks, packed[len(terms) :]) if flag > 0]
    if not bad:
        for opt in task.optimizers.values():
            opt.step()
        return losses
    what = bad[0]
    if what == "gradient":
        what = next(
            (
                first_bad_gradient(m) if n == "model" else f"{n} {first_bad_gradient(m)}"
                for n, m in task.modules.items()
                if not bool(grads_finite(list(m.parameters())))
            ),
            "gradient",
        )
    phase = run.task.phase(step)
    if not skip:
        raise nonfinite_error(what, step, phase, run.last_checkpoint)
    # skip: no optimizer step, and the task's forward-time state as it was before this batch
    for opt in task.optimizers.values():
        opt.zero_grad(set_to_none=True)
    task.restore_volatile(saved)
    run.skipped += 1
    if not task.weights_finite():  # the weights themselves went bad
        raise nonfinite_error(f"{what} (not skippable)", step, phase, run.last_checkpoint)
    return losses
