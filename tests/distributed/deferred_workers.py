"""Bodies of the 2-process gloo tests of DeferredQuantizer (spawned by ``ddp_workers.spawn``).

Each rank trains a tiny conv autoencoder under DDP with the default
``find_unused_parameters=False``, on its own data, and writes what the test compares.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
from embedding_vq_path import EmbeddingVQ
from safetensors.torch import save_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from vqlab import DeferredQuantizer

SWITCH = 4


class Toy(nn.Module):
    def __init__(self, quantizer: nn.Module) -> None:
        super().__init__()
        self.enc, self.dec = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 3, 1)
        self.quantize = DeferredQuantizer(quantizer, switch_at=SWITCH, init_samples=96,
                                          kmeans_iters=3)  # fmt: skip

    def forward(self, x):
        z = self.enc(x)
        if isinstance(self.quantize.quantizer, EmbeddingVQ):
            z_q, loss, _ = self.quantize(z)
        else:  # vector-quantize-pytorch, accept_image_fmap=True
            z_q, _, loss = self.quantize(z)
        return ((self.dec(z_q) - x) ** 2).mean() + loss


def _run(rank: int, out: Path, name: str, quantizer: nn.Module) -> None:
    torch.manual_seed(0)  # the same initial model on every rank, as DDP expects
    model = Toy(quantizer)
    ddp = DDP(model)  # find_unused_parameters=False: the strict check
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(100 + rank)  # each rank its own shard
    seen = {}

    deferred, real_switch = model.quantize, model.quantize.switch

    def spy_switch(**kwargs):  # the codebook as the switch left it, before the peer's EMA
        real_switch(**kwargs)
        seen["fit"] = deferred.family.codebook(deferred.quantizer).detach().clone()

    deferred.switch = spy_switch
    for step in range(SWITCH + 3):
        if step == SWITCH:
            seen["sample"] = model.quantize.reservoir.sample().clone()
        loss = ddp(torch.randn(4, 3, 3, 3, generator=gen) + rank)
        opt.zero_grad()
        loss.backward()
        opt.step()
    final = model.quantize.family.codebook(model.quantize.quantizer).detach().contiguous()
    save_file(
        {"fit": seen["fit"], "sample": seen["sample"], "final": final},
        str(out / f"{name}.rank{rank}.safetensors"),
    )
    dist.barrier()


def scenario_deferred(rank: int, world: int, out: Path) -> None:
    import vector_quantize_pytorch as vqp

    _run(rank, out, "embedding", EmbeddingVQ(8, 4))
    _run(rank, out, "peer", vqp.VectorQuantize(dim=4, codebook_size=8, accept_image_fmap=True))
