"""A uniform sample of a dataset that arrives in batches, for k-means over all of it.

Initialising a codebook from one batch of encoder outputs sees only that batch. Here a
:class:`ReservoirSampler` keeps a uniform, seeded sample of the rows of every batch it is fed,
in bounded memory; :func:`~vqlab.quantizers.kmeans.kmeans` then clusters that sample (as
:class:`~vqlab.quantizers.deferred.DeferredQuantizer` does at its switch).

Sampling rule (bottom-k): every row gets an independent uniform key from a CPU generator, and
the sample is the ``size`` rows with the smallest keys seen so far. That is a uniform sample
without replacement, and it depends only on the rows, their order and the seed: how the rows
are split into batches does not change it (the CPU generator draws keys in one stream). The
sample is returned in arrival order, so with ``size >= rows seen`` it *is* the data.

Glossary: ``n`` rows per batch, ``D`` dimension, ``m`` rows held (``m <= size``).
"""

from __future__ import annotations

import torch


class ReservoirSampler:
    """Uniform seeded sample of at most ``size`` rows out of a stream of (n, D) batches.

    Rows are stored detached, in the dtype and on the device of the first batch (later batches
    are moved there). Memory: ``size`` rows of the data plus a float64 key and an int64 position
    per row (keys and positions on the CPU).
    """

    def __init__(self, size: int, seed: int = 0) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be an int >= 1; got {size!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int; got {type(seed).__name__}")
        self.size = size
        self.seen = 0  # rows offered so far
        self._gen = torch.Generator().manual_seed(seed)
        self._rows: torch.Tensor | None = None  # (capacity, D), first m rows valid
        self._keys = torch.empty(0, dtype=torch.float64)  # (m,)
        self._pos = torch.empty(0, dtype=torch.long)  # (m,) arrival index of each held row

    def __len__(self) -> int:
        return self._keys.numel()

    def _check(self, batch: object) -> torch.Tensor:
        if not isinstance(batch, torch.Tensor):
            raise TypeError(f"a batch must be a torch.Tensor of shape (n, D); got {type(batch)}")
        if batch.dim() != 2 or not batch.is_floating_point():
            raise ValueError(
                f"a batch must be a float tensor of shape (n, D); got {batch.dtype} "
                f"{tuple(batch.shape)} (flatten (B, ..., D) outputs to (-1, D) first)"
            )
        if self._rows is None:
            return batch.detach()
        if batch.shape[1] != self._rows.shape[1]:
            raise ValueError(
                f"batch has D={batch.shape[1]}; earlier batches had D={self._rows.shape[1]}"
            )
        return batch.detach().to(self._rows.device, self._rows.dtype)

    def _append(self, rows: torch.Tensor, keys: torch.Tensor, pos: torch.Tensor) -> None:
        """Add rows while the reservoir is not full; the row buffer grows by doubling."""
        m, c = len(self), rows.shape[0]
        if self._rows is None or m + c > self._rows.shape[0]:
            cap = min(self.size, max(2 * m, m + c))
            grown = rows.new_empty((cap, rows.shape[1]))
            if self._rows is not None:
                grown[:m] = self._rows[:m]
            self._rows = grown
        self._rows[m : m + c] = rows
        self._keys = torch.cat([self._keys, keys])
        self._pos = torch.cat([self._pos, pos])

    def add(self, batch: torch.Tensor) -> None:
        """Offer every row of ``batch`` (n, D) to the sample."""
        batch = self._check(batch)
        n = batch.shape[0]
        keys = torch.rand(n, generator=self._gen, dtype=torch.float64)  # (n,)
        pos = torch.arange(self.seen, self.seen + n)
        self.seen += n
        free = min(self.size - len(self), n)
        if free > 0:
            self._append(batch[:free], keys[:free], pos[:free])
        batch, keys, pos = batch[free:], keys[free:], pos[free:]
        if keys.numel() == 0:
            return
        # Full: only rows whose key beats the largest held key can enter.
        enter = torch.nonzero(keys < self._keys.max()).squeeze(1)  # (c,)
        if enter.numel() == 0:
            return
        # The c rows leaving are the c largest keys of (held + entering); they all lie among the
        # entering rows and the t = min(c, m) largest held ones, so only those t slots change.
        t = min(enter.numel(), len(self))
        slots = torch.topk(self._keys, t).indices  # (t,)
        pool_keys = torch.cat([self._keys[slots], keys[enter]])  # (t + c,)
        win = torch.sort(pool_keys, stable=True).indices[:t]  # the t smallest stay
        pool_pos = torch.cat([self._pos[slots], pos[enter]])
        assert self._rows is not None  # set by _append once the reservoir filled
        dev = self._rows.device
        pool_rows = torch.cat([self._rows[slots.to(dev)], batch[enter.to(dev)]])  # (t + c, D)
        self._rows[slots.to(dev)] = pool_rows[win.to(dev)]
        self._keys[slots] = pool_keys[win]
        self._pos[slots] = pool_pos[win]

    def state_dict(self) -> dict:
        """Everything the sample depends on (rows, keys, positions, rows seen, the generator),
        so that a sampler restored by :meth:`load_state_dict` continues bit for bit."""
        m = len(self)
        rows = self._rows[:m].clone() if self._rows is not None else None
        return {
            "size": self.size,
            "seen": self.seen,
            "generator": self._gen.get_state(),
            "rows": rows,
            "keys": self._keys.clone(),
            "positions": self._pos.clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned (the rows keep their saved device)."""
        self.size, self.seen = int(state["size"]), int(state["seen"])
        self._gen.set_state(state["generator"])
        self._rows = None if state["rows"] is None else state["rows"].clone()
        self._keys = state["keys"].clone()
        self._pos = state["positions"].clone()

    def sample(self) -> torch.Tensor:
        """The sampled rows, (m, D) with ``m = min(size, seen)``, in arrival order."""
        if self._rows is None:
            raise ValueError("the sampler has seen no rows yet")
        order = torch.argsort(self._pos).to(self._rows.device)
        return self._rows[: len(self)][order]
