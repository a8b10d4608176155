"""The few collectives a quantizer needs under data parallelism; no-ops in a single process.

Data parallel training (DDP) gives every rank a distinct shard of the global batch. A quantizer's
own statistics must still describe the *global* batch, or replicas drift apart and each codebook
only sees 1/world of the data. These helpers make that so without the quantizer knowing anything
about launchers or process groups: when ``torch.distributed`` is not initialized (or the world
has one process) they return their input unchanged and draw exactly the random numbers a plain
single-process run draws, so seeded single-process results do not change.

Contract for the distributed case: shard ``r`` of a global batch is the ``r``-th contiguous
chunk, so rows concatenated in rank order are the global batch in its original order.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    """Processes in the default group; 1 when ``torch.distributed`` is not initialized."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def all_reduce_sum(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Element-wise sums over ranks of each tensor (new tensors; inputs are left alone).

    One collective for all of them: they are flattened into one buffer, since each call pays a
    round trip of latency, which dominates for (K,) counts and (K, D) sums.
    """
    if world_size() == 1:
        return tensors
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    out, start = [], 0
    for t in tensors:
        out.append(flat[start : start + t.numel()].view_as(t))
        start += t.numel()
    return tuple(out)


def draw_rows(z: torch.Tensor, n: int, *, replace: bool = True) -> torch.Tensor:
    """``n`` rows drawn uniformly from the global batch; (n, D).

    ``replace=False`` draws distinct rows (a random permutation's first ``n``), and at most as
    many as the global batch holds: ``min(n, rows)`` of them. A dead-code restart wants that:
    two codes re-seeded with the same row are the same code, and the second can never win the
    nearest-code search (a tie goes to the lower index), so it is dead again at once.

    z: (N_local, D), this rank's shard. Every rank gets the same rows. Each rank draws the
    indices from its default generator (the ranks' streams stay in step, as a single process
    would consume them), rank 0's draw is broadcast so that it decides, and each row is
    contributed by the rank that holds it through one all-reduce of an (n, D) tensor (zeros
    elsewhere, so the sum is that row exactly). Only ``n`` rows travel, never the whole batch.
    """
    if world_size() == 1:
        return z[_pick(z.shape[0], n, replace, z.device)]
    rank, world = dist.get_rank(), dist.get_world_size()
    sizes = torch.zeros(world, dtype=torch.long, device=z.device)
    sizes[rank] = z.shape[0]
    dist.all_reduce(sizes, op=dist.ReduceOp.SUM)  # (world,) rows held by each rank
    pick = _pick(int(sizes.sum()), n, replace, z.device)
    dist.broadcast(pick, src=0)
    n = pick.shape[0]
    start = int(sizes[:rank].sum())
    mine = (pick >= start) & (pick < start + z.shape[0])  # (n,) rows this rank holds
    rows = torch.zeros(n, z.shape[1], dtype=z.dtype, device=z.device)
    rows[mine] = z[pick[mine] - start]
    dist.all_reduce(rows, op=dist.ReduceOp.SUM)
    return rows


def _pick(total: int, n: int, replace: bool, device: torch.device) -> torch.Tensor:
    if replace:
        return torch.randint(0, total, (n,), device=device)
    return torch.randperm(total, device=device)[: min(n, total)]


def random_subset(index: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` entries of the 1-D ``index`` chosen uniformly without replacement, the same on every
    rank (rank 0's permutation is broadcast); ``index`` itself when it has at most ``n``."""
    if index.numel() <= n:
        return index
    order = torch.randperm(index.numel(), device=index.device)
    if world_size() > 1:
        dist.broadcast(order, src=0)
    return index[order[:n]]
