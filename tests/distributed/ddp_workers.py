"""Bodies of the 2-process gloo tests: run in processes that ``torch.multiprocessing`` spawns.

Not a test module (pytest collects ``test_*.py`` only). The spawned children import it by name:
spawn hands them the parent's ``sys.path``, which holds this folder.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import save_file

from vqlab import load_config
from vqlab.training import engine
from vqlab.training.distributed import Dist, leave
from vqlab.training.feed import init_codebook
from vqlab.training.tasks import tokenizer

# tiny but complete: deferred switch at step 30, k-means init, EMA, dead-code restarts
TINY = [
    "device=cpu",
    "data.peaks=4",
    "data.dim=4",
    "data.samples_per_peak=100",
    "data.test_samples_per_peak=50",
    "model.hidden=16",
    "model.latent_dim=4",
    "vq.codebook_size=16",
    "vq.init_samples=400",
    "vq.kmeans_iters=5",
    "vq.dead_code_threshold=0.9",
    "train.strategy=deferred",
    "train.steps=80",
    "train.pretrain_steps=30",
    "train.batch_size=64",
    "train.log_every=10",
    "train.eval_every=40",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(fn, out: Path, world: int = 2) -> None:
    """Run ``fn(rank, world, out)`` in ``world`` fresh processes joined by a gloo group."""
    mp.spawn(_entry, args=(fn, world, free_port(), str(out)), nprocs=world, join=True)


def _entry(rank: int, fn, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)  # as the pytest process (conftest), so 1-process runs compare
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    # a short timeout: a collective that one rank never joins fails the test instead of hanging
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    try:
        fn(rank, world, Path(out))
    finally:
        dist.destroy_process_group()
    leave(0)  # as vqlab's own workers end (a failure above propagates to spawn instead)


def dump(model: torch.nn.Module, path: Path) -> None:
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path))


def train_and_dump(config, out: Path, rank: int) -> dict:
    """Train (every rank), then dump this rank's final model and the steps of its codebook init."""
    seen: dict = {"init_steps": []}
    real_run, real_init = engine._run, tokenizer.init_codebook

    def spy_run(run, progress):
        seen["run"] = run
        return real_run(run, progress)

    def spy_init(model, data, cfg, device, d=None):
        seen["init_steps"].append(seen["run"].step)  # run.step is the step about to run
        return real_init(model, data, cfg, device, d)

    engine._run, tokenizer.init_codebook = spy_run, spy_init
    try:
        summary = engine.train(config, out, progress=False)
    finally:
        engine._run, tokenizer.init_codebook = real_run, real_init
    dump(seen["run"].task.model, out.with_name(f"{out.name}.rank{rank}.safetensors"))
    (out.with_name(f"{out.name}.rank{rank}.json")).write_text(
        json.dumps({"init_steps": seen["init_steps"], "summary": summary})
    )
    return summary


def scenario_train(rank: int, world: int, out: Path) -> None:
    """(a)/(b): the EMA config, and a gradient-trained codebook (DDP unused-parameter path)."""
    train_and_dump(load_config(None, TINY), out / "ema", rank)
    train_and_dump(load_config(None, [*TINY, "vq.update=grad"]), out / "grad", rank)


def scenario_init(rank: int, world: int, out: Path) -> None:
    """(c): k-means init on a sample gathered from both ranks, on an untrained encoder."""
    from vqlab.data.dataset import load_dataset
    from vqlab.models.registry import build_model

    config = load_config(None, TINY)
    torch.manual_seed(config.seed)
    data = load_dataset(config.data, config.seed)
    model = build_model(config.model, config.vq, data.input_shape)
    d = Dist(rank, world, rank, torch.device("cpu"))
    init_codebook(model, data, config, "cpu", d)
    dump(model.quantizer, out / f"init.rank{rank}.safetensors")


class Crash(RuntimeError):
    """Stands in for a killed process (every rank 'dies' at the same step)."""


def scenario_resume(rank: int, world: int, out: Path) -> None:
    """Every rank resumes: a 2-rank run that dies after a checkpoint, resumed by 2 ranks."""
    config = load_config(None, [*TINY, "train.checkpoint_every=20"])
    engine.train(config, out / "whole", progress=False)
    real_step = engine._step

    def dying_step(run, step):
        if step == 47:  # after the checkpoint at step 40, past the deferred switch
            raise Crash(f"simulated crash at step {step}")
        return real_step(run, step)

    engine._step = dying_step
    try:
        engine.train(config, out / "cut", progress=False)
    except Crash:
        pass
    finally:
        engine._step = real_step
    dist.barrier()
    engine.resume(out / "cut", progress=False)


class _PoisonedBatches(torch.nn.Module):
    """The (DDP-wrapped) model, fed a batch whose first row is NaN at the given steps."""

    def __init__(self, net: torch.nn.Module, steps: set[int]) -> None:
        super().__init__()
        self.net, self.steps, self.calls = net, steps, 0

    def forward(self, x: torch.Tensor, *, quantize: bool):
        if self.calls in self.steps:
            x = x.clone()
            x[0] = float("nan")
        self.calls += 1
        return self.net(x, quantize=quantize)


def scenario_nonfinite(rank: int, world: int, out: Path) -> None:
    """A NaN batch on rank 1 alone (step 45, EMA phase): every rank must stop, or skip, alike.

    Writes ``nonfinite.rank{r}.json`` (the stop message, the skip count) and the skip run's
    final weights per rank. A rank that stopped or skipped alone would leave the other waiting
    in a collective: the group's 60 s timeout fails the test instead of hanging it.
    """
    from vqlab.training.guard import NonFiniteError

    real_wrap, real_run = tokenizer.wrap, engine._run
    seen: dict = {}

    def poisoned_wrap(model, d, **kwargs):
        return _PoisonedBatches(real_wrap(model, d, **kwargs), {45} if rank == 1 else set())

    def spy_run(run, progress):
        seen["run"] = run
        return real_run(run, progress)

    tokenizer.wrap, engine._run = poisoned_wrap, spy_run
    result: dict = {}
    try:
        try:
            engine.train(load_config(None, TINY), out / "stop", progress=False)
            result["stop"] = None
        except NonFiniteError as err:
            result["stop"] = str(err)
        dist.barrier()
        skip = load_config(None, [*TINY, "train.on_nonfinite=skip"])
        result["skip"] = engine.train(skip, out / "skip", progress=False)["nonfinite_skipped"]
    finally:
        tokenizer.wrap, engine._run = real_wrap, real_run
    dump(seen["run"].task.model, out / f"skip.rank{rank}.safetensors")
    (out / f"nonfinite.rank{rank}.json").write_text(json.dumps(result))


def scenario_restart_more_dead_than_rows(rank: int, world: int, out: Path) -> None:
    """A dead-code restart with more dead codes than global rows, and ``random_subset`` alone.

    Each rank seeds its generator differently, so only the broadcasts keep the ranks in step:
    without them each rank would re-seed its own share of the dead codes.
    """
    from vqlab.quantizers.collective import random_subset
    from vqlab.quantizers.vq import VectorQuantizer

    torch.manual_seed(100 + rank)
    subset = random_subset(torch.arange(40) * 3, 7)
    # K=64 codes, all dead (threshold 1.0 > any EMA count of a 16-row global batch spread over
    # 64 codes); 8 distinct rows per rank: 16 rows to re-seed 16 of the 64 codes
    torch.manual_seed(0)  # the same initial codebook on both ranks
    vq = VectorQuantizer(4, 64, update="grad", dead_code_threshold=1.0)
    before = vq.codebook.clone()
    z_global = torch.arange(64.0).reshape(16, 4) + 1000.0  # far from every initial code
    torch.manual_seed(200 + rank)
    vq.train()
    vq(z_global[8 * rank : 8 * (rank + 1)])
    save_file(
        {"subset": subset, "codebook": vq.codebook.contiguous(), "before": before,
         "z_global": z_global, "counts": vq.ema_counts.contiguous()},
        str(out / f"restart.rank{rank}.safetensors"),
    )  # fmt: skip
