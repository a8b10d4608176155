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
from vqlab.training import loop
from vqlab.training.distributed import Dist

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


def dump(model: torch.nn.Module, path: Path) -> None:
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path))


def train_and_dump(config, out: Path, rank: int) -> dict:
    """Train (every rank), then dump this rank's final model and the steps of its codebook init."""
    seen: dict = {"init_steps": []}
    real_run, real_init = loop._run, loop.init_codebook

    def spy_run(run, progress):
        seen["run"] = run
        return real_run(run, progress)

    def spy_init(model, data, cfg, device, d=None):
        seen["init_steps"].append(seen["run"].step)  # run.step is the step about to run
        return real_init(model, data, cfg, device, d)

    loop._run, loop.init_codebook = spy_run, spy_init
    try:
        summary = loop.train(config, out, progress=False)
    finally:
        loop._run, loop.init_codebook = real_run, real_init
    dump(seen["run"].model, out.with_name(f"{out.name}.rank{rank}.safetensors"))
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
    loop.init_codebook(model, data, config, "cpu", d)
    dump(model.quantizer, out / f"init.rank{rank}.safetensors")


class Crash(RuntimeError):
    """Stands in for a killed process (every rank 'dies' at the same step)."""


def scenario_resume(rank: int, world: int, out: Path) -> None:
    """Every rank resumes: a 2-rank run that dies after a checkpoint, resumed by 2 ranks."""
    config = load_config(None, [*TINY, "train.checkpoint_every=20"])
    loop.train(config, out / "whole", progress=False)
    real_step = loop._step

    def dying_step(run, step):
        if step == 47:  # after the checkpoint at step 40, past the deferred switch
            raise Crash(f"simulated crash at step {step}")
        return real_step(run, step)

    loop._step = dying_step
    try:
        loop.train(config, out / "cut", progress=False)
    except Crash:
        pass
    finally:
        loop._step = real_step
    dist.barrier()
    loop.resume(out / "cut", progress=False)
