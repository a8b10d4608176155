"""Data parallel training with PyTorch DDP, launched by torchrun (or ``vqlab train --nproc N``).

How a run is split:

- Every rank holds the whole (in-memory) dataset and the same seeded batch sampler, so every
  rank knows each global batch. The global batch is ``train.batch_size`` rows; rank ``r`` trains
  on its ``r``-th contiguous chunk of ``batch_size / world`` rows (the batch size must divide
  evenly, so every shard has the same size and DDP's average of the ranks' mean losses is the
  mean loss over the global batch).
- DDP averages the gradients. The quantizer's own statistics (EMA counts and sums, the usage
  the dead-code restart reads) are summed over ranks inside the quantizer before its update
  (:mod:`vqlab.quantizers.collective`), and restarts draw the same rows on every rank. DDP's
  buffer broadcast is therefore turned off: the replicas' buffers are equal by construction, and
  the tests check that they stay so.
- The codebook init encodes a shard of the init sample on each rank, gathers the sample, runs
  k-means (or another ``vq.init``) on rank 0 and broadcasts the resulting quantizer state.
- The schedule is a function of the step, so the deferred switch happens on the same step on
  every rank.
- Rank 0 alone evaluates (on the whole test set, so diagnostics are global), logs and writes
  files; logged losses are averaged over ranks. Every rank reads the checkpoint on resume, so
  the run folder must be visible to all ranks (one machine, or a shared file system).

Backend: ``nccl`` on CUDA (one GPU per rank, ``LOCAL_RANK``), ``gloo`` on CPU.
"""

from __future__ import annotations

import inspect
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import torch
import torch.distributed as tdist
from torch import nn

from vqlab.errors import ConfigError

T = TypeVar("T")


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto|cpu|cuda`` -> a device; under torchrun each rank takes GPU ``local_rank``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device=cuda was asked for but no CUDA device is available")
        return torch.device("cuda", local_rank)
    return torch.device(name)


@dataclass(frozen=True)
class Dist:
    """This process's place in the run. A single process is ``Dist(0, 1, 0, device)``."""

    rank: int
    world: int
    local_rank: int
    device: torch.device
    owns_group: bool = False  # this module initialized the process group, so it tears it down

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def setup(device_name: str) -> Dist:
    """Join the process group that torchrun describes (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``).

    Without those variables, or with ``WORLD_SIZE=1``, this is a plain single-process run.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    device = resolve_device(device_name, local_rank if world > 1 else 0)
    if world == 1:
        return Dist(0, 1, 0, device)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # nccl collectives and object broadcasts use this GPU
    owns = not tdist.is_initialized()
    if owns:
        tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(tdist.get_rank(), tdist.get_world_size(), local_rank, device, owns)


def teardown(dist: Dist) -> None:
    if dist.owns_group and tdist.is_initialized():
        tdist.destroy_process_group()


def under_torchrun() -> bool:
    """True in a process that torchrun (or ``vqlab train --nproc N``) started as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def leave(code: int = 0) -> NoReturn:
    """End a data-parallel worker process with ``code``, skipping the interpreter's teardown.

    Why: in torch 2.13 a ``DistributedDataParallel`` keeps its gloo process group alive after
    ``destroy_process_group`` (the group's worker threads are still running; a group that no DDP
    used is joined there). When one of those threads frees a finished collective's tensors while
    Python is finalizing, it needs the GIL, cannot take it, and the C++ runtime aborts the
    process ("terminate called without an active exception", SIGABRT) *after* the run finished
    and wrote everything; torchrun then reports the run as failed. Seen here in 2 of 146 2-rank
    tiny runs on a loaded 2-core machine, and in 2 of 20 runs of the DDP test file; a core dump
    shows ``AsyncBroadcastWork``'s destructor in ``ProcessGroupGloo::runLoop`` beside
    ``Py_FinalizeEx``. Every file vqlab writes is closed before this point; the standard
    streams are flushed here.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe has nothing left to say
            pass
    os._exit(code)


def check_batch(batch_size: int, dist: Dist) -> None:
    """Refuse a global batch that does not split into equal shards (see the module docstring)."""
    if batch_size % dist.world:
        raise ConfigError(
            f"train.batch_size={batch_size} must be divisible by the number of processes "
            f"({dist.world}) so that every rank trains on an equal shard of the global batch"
        )


def shard(rows: torch.Tensor, dist: Dist) -> torch.Tensor:
    """This rank's contiguous chunk of ``rows`` (the whole of it in one process)."""
    if not dist.enabled:
        return rows
    return rows.tensor_split(dist.world)[dist.rank]


def wrap(model: nn.Module, dist: Dist, *, find_unused_parameters: bool) -> nn.Module:
    """``model`` in DDP under torchrun (the model itself in one process).

    find_unused_parameters: needed when some parameter may get no gradient in a step, e.g. a
    gradient-trained codebook during deferred quantization's plain-autoencoder phase.
    """
    if not dist.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    # no buffer broadcast before each forward: the quantizer's own reductions keep the buffers
    # equal (the name of that switch changed in torch 2.13)
    params = inspect.signature(DistributedDataParallel.__init__).parameters
    no_sync = "forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers"
    return DistributedDataParallel(
        model,
        device_ids=[dist.device.index] if dist.device.type == "cuda" else None,
        find_unused_parameters=find_unused_parameters,
        **{no_sync: False},
    )


def gather_rows(z: torch.Tensor, dist: Dist) -> torch.Tensor:
    """Concatenate every rank's (N_r, D) rows in rank order (the shards may differ in size)."""
    if not dist.enabled:
        return z
    sizes = torch.zeros(dist.world, dtype=torch.long, device=z.device)
    sizes[dist.rank] = z.shape[0]
    tdist.all_reduce(sizes)
    padded = torch.zeros(int(sizes.max()), *z.shape[1:], dtype=z.dtype, device=z.device)
    padded[: z.shape[0]] = z  # all_gather needs equal shapes
    parts = [torch.empty_like(padded) for _ in range(dist.world)]
    tdist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, sizes.tolist())])


@torch.no_grad()
def broadcast_module(module: nn.Module, dist: Dist, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers into every rank's ``module``, in place."""
    if not dist.enabled:
        return
    for tensor in module.state_dict(keep_vars=True).values():
        tdist.broadcast(tensor.data, src=src)


def sum_over_ranks(values: torch.Tensor, dist: Dist) -> torch.Tensor:
    """Element-wise sum over ranks (``values`` itself in one process)."""
    if not dist.enabled:
        return values
    values = values.clone()
    tdist.all_reduce(values)
    return values


def on_main(fn: Callable[[], T], dist: Dist) -> T | None:
    """Run ``fn`` on rank 0 only, and make every rank fail if it fails.

    Without this a bad ``--out`` folder would stop rank 0 while the others wait in their next
    collective until the timeout. Other ranks get ``None`` (or raise the same message).
    """
    result, error = None, None
    if dist.is_main:
        try:
            result = fn()
        except Exception as err:  # re-raised below on every rank
            error = err
    if dist.enabled:
        sent = error
        if error is not None:
            try:  # the same exception on every rank, so the CLI reports it alike
                pickle.dumps(error)
            except Exception:
                sent = RuntimeError(f"rank 0 failed: {type(error).__name__}: {error}")
        box = [sent]
        tdist.broadcast_object_list(box, src=0)  # in memory, between this run's own processes
        if error is None and box[0] is not None:
            raise box[0]
    if error is not None:
        raise error
    return result


def share(obj: Any, dist: Dist) -> Any:
    """Rank 0's ``obj`` on every rank (a small picklable value, sent in memory only)."""
    if not dist.enabled:
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def launch_command(nproc: int, argv: list[str]) -> list[str]:
    """The torchrun command that runs ``python -m vqlab ARGV`` on ``nproc`` local processes."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # one machine: a private rendezvous on a free local port
        f"--nproc_per_node={nproc}",
        "-m",
        "vqlab",
        *argv,
    ]


def launch(nproc: int, argv: list[str], env: dict[str, str] | None = None) -> int:
    """Run ``vqlab ARGV`` under torchrun with ``nproc`` processes; returns its exit code."""
    return subprocess.call(launch_command(nproc, argv), env=env)
