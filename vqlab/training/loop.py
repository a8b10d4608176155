"""The one training loop. Standard and deferred quantization differ only in the Schedule.

One step: this rank's shard of the global batch (:mod:`vqlab.training.distributed`), forward
(the EMA codebook update happens inside the quantizer), backward, the non-finite guard
(:mod:`vqlab.training.guard`), the optimizer step. Every ``train.checkpoint_every`` steps the
whole training state goes to ``checkpoint/`` (:mod:`vqlab.training.checkpoint`), and
:func:`resume` continues from there.

When a resumed run equals an uninterrupted one bit for bit (``summary.json`` without
``seconds``, ``metrics.jsonl``, the weights):

- the checkpoint restores everything that decides later numbers: weights and EMA buffers,
  optimizer moments and step counts, the global torch RNG (dead-code restarts draw from it;
  the CUDA one too on a GPU), the batch sampler's generator, permutation and position, the
  step (and with it the phase), and the skip counter. The config comes from the run folder,
  so steps, cadences (log, eval, checkpoint) and seeds cannot change. Evaluation and
  diagnostics use their own seeded generators, so they do not disturb the training stream;
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

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from tqdm.auto import tqdm

from vqlab.config import ConfigError, RunConfig, load_config
from vqlab.data.dataset import Dataset, load_dataset
from vqlab.models.autoencoder import VQAutoencoder
from vqlab.models.registry import build_model
from vqlab.training.checkpoint import (
    MODEL_FILE,
    TrainingState,
    load_checkpoint,
    load_training_state,
    recover,
    save_checkpoint,
)
from vqlab.training.distributed import (
    Dist,
    check_batch,
    on_main,
    resolve_device,  # noqa: F401 - re-exported: callers import it from here
    setup,
    shard,
    share,
    sum_over_ranks,
    teardown,
    wrap,
)
from vqlab.training.evaluate import SAMPLES_FILE, encode_all, evaluate
from vqlab.training.feed import BatchSampler, init_codebook
from vqlab.training.guard import (
    NonFiniteError,
    first_bad_gradient,
    first_bad_state,
    grads_finite,
    is_finite,
    nonfinite_error,
    restore,
    snapshot,
)
from vqlab.training.logging import RunWriter
from vqlab.training.schedule import Schedule
from vqlab.validation import value_checks

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

    Under torchrun every rank calls this (:mod:`vqlab.training.distributed`); rank 0 writes.
    """
    d = setup(config.device)
    try:
        writer = on_main(lambda: RunWriter(out, overwrite=overwrite).start(config, command), d)
        return _session(config, d, writer, None, progress)
    finally:
        teardown(d)


def resume(run_dir: str | Path, *, progress: bool = True, command: str | None = None) -> dict:
    """Continue the run in ``run_dir`` from its last checkpoint, with the config saved there.

    metrics.jsonl keeps the rows before the checkpoint's step and goes on from there. A run
    that never wrote a checkpoint starts again from step 0; a finished run (``summary.json``
    exists) is left alone and its summary returned. The module docstring says when a resumed
    run matches an uninterrupted one bit for bit.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"--resume {run_dir}: not a run folder (no config.yaml there)")
    config = load_config(run_dir / "config.yaml")
    if (run_dir / "summary.json").is_file():
        return json.loads((run_dir / "summary.json").read_text())
    d = setup(config.device)
    try:
        # rank 0 repairs a swap that a crash interrupted; on_main's broadcast orders that
        # before any other rank reads the folder
        ckpt = on_main(lambda: recover(run_dir / CHECKPOINT_DIR), d) or run_dir / CHECKPOINT_DIR
        training = load_training_state(ckpt) if ckpt.is_dir() else None
        if training is not None and load_checkpoint(ckpt)[1] != config:
            raise ValueError(f"{ckpt} was written with another config than {run_dir}/config.yaml")
        start = 0 if training is None else int(training.meta["step"])
        writer = on_main(lambda: RunWriter.reopen(run_dir, start, command), d)
        resume_from = None if training is None else (ckpt, training)
        return _session(config, d, writer, resume_from, progress)
    finally:
        teardown(d)


@dataclass
class _Run:
    """Everything one training session holds; built once by :func:`_build`, then stepped."""

    config: RunConfig
    d: Dist
    data: Dataset
    model: VQAutoencoder  # the plain model: evaluation, init, checkpoints
    net: nn.Module  # what a step calls: the model, or its DDP wrapper
    opt: torch.optim.Optimizer
    sampler: BatchSampler
    schedule: Schedule
    writer: RunWriter | None  # rank 0 only
    step: int = 0  # the next step to run
    skipped: int = 0  # batches skipped for a non-finite value (train.on_nonfinite=skip)
    seconds: float = 0.0  # wall time of the earlier sessions of a resumed run
    t0: float = field(default_factory=time.perf_counter)
    last_checkpoint: str | None = None  # for the non-finite message

    def elapsed(self) -> float:
        return round(self.seconds + time.perf_counter() - self.t0, 3)


def _session(
    config: RunConfig,
    d: Dist,
    writer: RunWriter | None,
    resume_from: tuple[Path, TrainingState] | None,
    progress: bool,
) -> dict[str, Any]:
    try:
        run = _build(config, d, writer, resume_from)
        summary = _run(run, progress and d.is_main)
    finally:
        if writer is not None:
            writer.close()
    if writer is not None:
        writer.summary(summary)
    return summary


def _build(
    config: RunConfig,
    d: Dist,
    writer: RunWriter | None,
    resume_from: tuple[Path, TrainingState] | None,
) -> _Run:
    torch.manual_seed(config.seed)
    data = load_dataset(config.data, config.seed)
    model = build_model(config.model, config.vq, data.input_shape).to(d.device)
    tc = config.train
    sampler = BatchSampler(data.train_x.shape[0], tc.batch_size, config.seed)
    check_batch(sampler.batch_size, d)
    _check_codebook_fits(model, data, config, d.device)
    if resume_from is not None:  # before DDP copies rank 0's weights to every rank
        model.load_state_dict(load_file(str(resume_from[0] / MODEL_FILE)))
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    # a quantizer with parameters (update=grad) that deferred quantization bypasses at first
    # leaves them without gradients in those steps, which DDP must be told
    bypassed = tc.strategy == "deferred" and any(True for _ in model.quantizer.parameters())
    net = wrap(model, d, find_unused_parameters=bypassed)
    schedule = Schedule(tc.strategy, tc.steps, tc.pretrain_steps)
    run = _Run(config, d, data, model, net, opt, sampler, schedule, writer)
    if resume_from is not None:
        _restore(run, *resume_from)
    return run


def _check_codebook_fits(
    model: VQAutoencoder, data: Dataset, config: RunConfig, device: torch.device
) -> None:
    """Refuse, before any step, a codebook the init could not fill from the training set."""
    if config.vq.init not in ("kmeans", "kmeans++", "sample", "gmm"):  # K distinct vectors or fits
        return
    vectors = data.train_x.shape[0] * encode_all(model, data.train_x[:1], device).shape[0]
    if vectors < config.vq.codebook_size:
        raise ConfigError(
            f"vq.codebook_size={config.vq.codebook_size} is larger than the {vectors} encoder "
            f"outputs of the training set; vq.init={config.vq.init} needs one per code"
        )


def _capture(run: _Run, *, final: bool) -> TrainingState:
    """The state a resume needs at ``run.step`` (a final checkpoint needs only the counters)."""
    meta = {
        "step": run.step,
        "phase": run.schedule.phase(run.step),
        "finished": final,
        "nonfinite_skipped": run.skipped,
        "seconds": run.elapsed(),
        "world_size": run.d.world,
    }
    if final:
        return TrainingState(meta)
    meta["sampler_position"] = run.sampler.position
    tensors = {
        "rng.torch": torch.get_rng_state(),
        "sampler.generator": run.sampler.gen.get_state(),
        "sampler.perm": run.sampler.perm,
    }
    if run.d.device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(run.d.device)
    return TrainingState(meta, tensors, run.opt.state_dict())


def _restore(run: _Run, ckpt: Path, state: TrainingState) -> None:
    meta, tensors = state.meta, state.tensors
    run.step, run.skipped = int(meta["step"]), int(meta["nonfinite_skipped"])
    run.seconds = float(meta.get("seconds", 0.0))
    run.last_checkpoint = f"step {run.step} in {ckpt}"
    if meta["finished"]:
        return  # the model is final; only the evaluation and summary remain
    run.opt.load_state_dict(state.optimizer)
    torch.set_rng_state(tensors["rng.torch"])
    if run.d.device.type == "cuda" and "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"], run.d.device)
    run.sampler.gen.set_state(tensors["sampler.generator"])
    run.sampler.perm = tensors["sampler.perm"]
    run.sampler.position = int(meta["sampler_position"])


def _save(run: _Run, *, final: bool = False) -> None:
    """Write the checkpoint (rank 0), after checking that no tensor in the state went bad."""
    bad = first_bad_state(run.model, run.opt)
    if bad is not None:
        phase = run.schedule.phase(run.step - 1)
        raise nonfinite_error(f"model state {bad}", run.step - 1, phase, run.last_checkpoint)
    if run.d.is_main:
        directory = run.writer.out / CHECKPOINT_DIR
        state = _capture(run, final=final)
        save_checkpoint(run.model, run.config, directory, run.data.input_shape, state)
        run.last_checkpoint = f"step {run.step} in {directory}"


def _run(run: _Run, progress: bool) -> dict[str, Any]:
    tc, d = run.config.train, run.d
    bar = tqdm(
        range(run.step, tc.steps),
        total=tc.steps,
        initial=run.step,
        desc=f"{tc.strategy} K={run.config.vq.codebook_size}",
        disable=not progress,
        leave=False,
    )
    for step in bar:
        if run.schedule.init_at(step):
            try:
                info = init_codebook(run.model, run.data, run.config, d.device, d)
            except NonFiniteError as err:
                raise nonfinite_error(str(err), step, "init", run.last_checkpoint) from None
            _log(run, {"step": step, "phase": "init", **info})
        losses = _step(run, step)
        run.step = step + 1
        last = step == tc.steps - 1
        if step % tc.log_every == 0 or last:
            row = {"step": step, "phase": run.schedule.phase(step), **losses}
            if tc.on_nonfinite == "skip":
                row["nonfinite_skipped"] = run.skipped
            if step % tc.eval_every == 0 or last:
                # the linear probes are the slow part: only the final evaluation runs them
                metrics = _evaluate(
                    run, step, quantize=run.schedule.quantize_at(step), probes=False
                )
                row.update({"eval": True, **(metrics[0] if metrics else {})})
            _log(run, row)
            bar.set_postfix(phase=row["phase"], loss=f"{losses['loss']:.4f}")
        if tc.checkpoint_every and run.step % tc.checkpoint_every == 0 and not last:
            _save(run)
    summary = None
    evaluated = _evaluate(run, tc.steps - 1, quantize=True)
    if evaluated is not None:  # rank 0
        metrics, samples = evaluated
        np.savez_compressed(run.writer.out / SAMPLES_FILE, **samples)
        summary = {
            "strategy": tc.strategy,
            "codebook_size": run.config.vq.codebook_size,
            "steps": tc.steps,
            **metrics,
            "nonfinite_skipped": run.skipped,
        }
    _save(run, final=True)
    summary = share(summary, d)
    summary["seconds"] = run.elapsed()
    return summary


def _evaluate(
    run: _Run, step: int, *, quantize: bool, probes: bool = True
) -> tuple[dict, dict] | None:
    """Rank 0 evaluates the whole test set (global diagnostics); other ranks get None.

    A model that diverged can be finite yet so large that the quantizer's input check refuses
    it (squared distances would overflow): that ``ValueError`` ends the run like a non-finite
    value, naming the step; on_main makes every rank stop with it.
    """

    def on_rank0() -> tuple[dict, dict]:
        try:
            return evaluate(run.model, run.data, run.d.device, quantize=quantize, probes=probes)
        except ValueError as err:
            phase = run.schedule.phase(step)
            raise nonfinite_error(
                f"or overflowing values in the evaluation ({err})", step, phase, run.last_checkpoint
            ) from err

    return on_main(on_rank0, run.d)


def _log(run: _Run, row: dict[str, Any]) -> None:
    if run.writer is not None:
        run.writer.log(row)


def _step(run: _Run, step: int) -> dict[str, float]:
    """One optimizer step on this rank's shard of the global batch -> losses (rank mean).

    The non-finite checks of every loss term, the codebook and the gradients are reduced over
    ranks with the losses, in one collective and one device sync, so all ranks decide alike.
    """
    quantize = run.schedule.quantize_at(step)
    x = run.data.train_x[shard(run.sampler.next(), run.d)].to(run.d.device)
    skip = run.config.train.on_nonfinite == "skip"
    saved = snapshot(run.model.quantizer) if skip else None  # the EMA update happens in forward
    # The guard below checks this step after the fact, on every rank alike. The quantizer's own
    # NaN/Inf input check would instead raise mid-forward, and under DDP on one rank only,
    # leaving the others waiting in a collective; it would also cost a second sync per step.
    with value_checks(False):
        out = run.net(x, quantize=quantize)
    recon_loss = F.mse_loss(out.recon, x)
    loss = recon_loss + (out.vq.loss if out.vq is not None else 0.0)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    terms = {"loss": loss, "recon_loss": recon_loss}
    terms.update(out.vq.losses if out.vq is not None else {})
    checks = {f"loss term {name!r}": is_finite(t) for name, t in terms.items() if name != "loss"}
    if quantize:
        checks["codebook"] = is_finite(run.model.quantizer.codebook)
    checks["gradient"] = grads_finite(list(run.model.parameters()))
    values = torch.stack([t.detach().float() for t in terms.values()])
    flags = (~torch.stack(list(checks.values()))).float()
    packed = sum_over_ranks(torch.cat([values, flags]), run.d).tolist()  # the one sync
    losses = {name: v / run.d.world for name, v in zip(terms, packed)}
    bad = [name for name, flag in zip(checks, packed[len(terms) :]) if flag > 0]
    if not bad:
        run.opt.step()
        return losses
    what = first_bad_gradient(run.model) if bad[0] == "gradient" else bad[0]
    phase = run.schedule.phase(step)
    if not skip:
        raise nonfinite_error(what, step, phase, run.last_checkpoint)
    # skip: no optimizer step, and the quantizer's state as it was before this batch
    run.opt.zero_grad(set_to_none=True)
    restore(run.model.quantizer, saved)
    run.skipped += 1
    if not bool(is_finite(run.model.quantizer.codebook)):  # the weights themselves went bad
        raise nonfinite_error(f"{what} (not skippable)", step, phase, run.last_checkpoint)
    return losses
