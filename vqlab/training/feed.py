"""What the training loop feeds on: seeded batches, and the sample the codebook init clusters.

Both are part of a run's reproducible stream: :class:`BatchSampler` state goes into every
checkpoint, and :func:`init_codebook` draws from its own seeded generator, so neither disturbs
the other (see :mod:`vqlab.training.engine` for what makes a resumed run bit-identical).
"""

from __future__ import annotations

import torch

from vqlab.config import RunConfig
from vqlab.data.dataset import Dataset
from vqlab.models.autoencoder import VQAutoencoder
from vqlab.training.distributed import Dist, broadcast_module, gather_rows, on_main, shard
from vqlab.training.evaluate import encode_all, encode_latents
from vqlab.training.guard import NonFiniteError, is_finite


class BatchSampler:
    """Seeded epochs of shuffled indices; ``position`` is the data position within the epoch."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size = n, min(batch_size, n)
        self.gen = torch.Generator().manual_seed(seed)
        self.perm = torch.randperm(n, generator=self.gen)
        self.position = 0

    def next(self) -> torch.Tensor:
        if self.position + self.batch_size > self.n:
            self.perm = torch.randperm(self.n, generator=self.gen)
            self.position = 0
        idx = self.perm[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return idx

    # A checkpoint saves ``gen.get_state()``, ``perm`` and ``position``: with all three the
    # resumed sampler yields the same batches as the uninterrupted one.


def init_codebook(
    model: VQAutoencoder, data: Dataset, config: RunConfig, device, dist: Dist | None = None
) -> dict:
    """k-means (or another ``vq.init``) on a seeded sample of the current encoder's outputs.

    ``vq.init_samples`` counts encoder output vectors, whatever the positions per sample: enough
    random samples are encoded to cover it (all of them if the set is small), then exactly that
    many vectors are drawn, so both strategies cluster samples of the same size.

    Under DDP (``dist``) each rank encodes its slice of the sample, the slices are gathered, rank 0
    clusters the whole sample and every rank receives its quantizer state: one codebook.
    """
    dist = dist or Dist(0, 1, 0, torch.device(device))
    gen = torch.Generator().manual_seed(config.seed + 17)
    n_data = data.train_x.shape[0]
    positions = encode_all(model, data.train_x[:1], device).shape[0]
    need = min(-(-config.vq.init_samples // positions), n_data)  # ceil division
    rows = torch.randperm(n_data, generator=gen)[:need]
    z = gather_rows(
        encode_all(model, data.train_x[shard(rows, dist)], device), dist
    )  # (need*pos, D)
    if not bool(is_finite(z)):
        raise NonFiniteError("encoder output in the codebook-init sample")
    if z.shape[0] > config.vq.init_samples:
        keep = torch.randperm(z.shape[0], generator=gen)[: config.vq.init_samples]
        z = z[keep.to(z.device)]
    vq = config.vq
    q = model.quantizer
    if hasattr(q, "init_from_latents") and vq.ms_init != "finest":
        # the latents of the encoded images themselves: the sample is drawn across scales
        z_e = gather_rows(encode_latents(model, data.train_x[shard(rows, dist)], device), dist)
        how, seed = vq.ms_init, config.seed

        def init() -> None:
            q.init_from_latents(z_e, how=how, method=vq.init, iters=vq.kmeans_iters, seed=seed)

        on_main(init, dist)
        broadcast_module(q, dist)
        return {"init_samples": int(z_e.shape[0] * positions), "init_method": f"{vq.init} ({how})"}
    init = q.init_from_data
    on_main(lambda: init(z, method=vq.init, iters=vq.kmeans_iters, seed=config.seed), dist)
    broadcast_module(model.quantizer, dist)
    return {"init_samples": int(z.shape[0]), "init_method": config.vq.init}
