"""A taming-style VQ-VAE loop: an nn.Embedding codebook, beta on the commitment term.

    python examples/taming_vqvae.py --config configs/synthetic.yaml            # standard
    python examples/taming_vqvae.py --config configs/synthetic.yaml --deferred # deferred

The loop is plain PyTorch and the quantizer is the layout of taming's ``VectorQuantizer2``
(and LlamaGen's, diffusers'): it never imports vqlab's engine. Three lines (marked
``# plug-in``) turn the standard run into a deferred one: the import and the wrap. Its switch
is ``train.pretrain_steps`` and its sample ``vq.init_samples`` of the config, as ``vqlab train
--set train.strategy=deferred`` would use.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from common import batches, clock, measure, parse_args, plugin_options, report, setup
from torch import nn

from vqlab import DeferredQuantizer  # plug-in


class VectorQuantizer(nn.Module):
    """taming's layout: ``n_e`` codes of ``e_dim`` in ``embedding``, input (B, D, H, W),
    ``forward -> (z_q, loss, (perplexity, min_encodings, indices))``."""

    def __init__(self, n_e: int, e_dim: int, beta: float = 0.25) -> None:
        super().__init__()
        self.n_e, self.e_dim, self.beta = n_e, e_dim, beta
        self.embedding = nn.Embedding(n_e, e_dim)
        self.embedding.weight.data.uniform_(-1.0 / n_e, 1.0 / n_e)

    def forward(self, z: torch.Tensor):
        z = z.permute(0, 2, 3, 1).contiguous()  # (B, H, W, D)
        flat = z.reshape(-1, self.e_dim)
        book = self.embedding.weight
        d = flat.pow(2).sum(1, keepdim=True) + book.pow(2).sum(1) - 2 * flat @ book.T
        idx = d.argmin(1)  # (B*H*W,)
        z_q = self.embedding(idx).view(z.shape)
        # beta weighs the commitment term (taming's legacy=True put it on the codebook term)
        loss = self.beta * F.mse_loss(z_q.detach(), z) + F.mse_loss(z_q, z.detach())
        z_q = (z + (z_q - z).detach()).permute(0, 3, 1, 2).contiguous()
        return z_q, loss, (None, None, idx)


def as_map(z: torch.Tensor) -> torch.Tensor:
    """(B, D) vectors of an MLP encoder as (B, D, 1, 1) maps; conv maps unchanged."""
    return z[:, :, None, None] if z.dim() == 2 else z


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv, __doc__.splitlines()[0])
    config, data, encoder, decoder = setup(args)
    vq, tc = config.vq, config.train
    quantizer = VectorQuantizer(vq.codebook_size, config.model.latent_dim, beta=vq.beta)
    if args.deferred:  # plug-in
        quantizer = DeferredQuantizer(quantizer, **plugin_options(config, args))  # plug-in
    model = nn.ModuleList([encoder, quantizer, decoder])
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    t0 = clock()
    for idx in batches(data.train_x.shape[0], tc.batch_size, tc.steps, config.seed):
        x = data.train_x[idx]
        z = encoder(x)
        z_q, vq_loss, _ = quantizer(as_map(z))
        loss = F.mse_loss(decoder(z_q.reshape(z.shape)), x) + vq_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()

    def indices_of(z):
        return quantizer(as_map(z))[2][2]

    def decode(z):
        return decoder(quantizer(as_map(z))[0].reshape(z.shape))

    metrics = measure(config, data, encoder, indices_of, decode, clock() - t0)
    metrics.update(loop="taming", strategy="deferred-plugin" if args.deferred else "standard")
    report(metrics, args.out)
    return metrics


if __name__ == "__main__":
    main(sys.argv[1:])
