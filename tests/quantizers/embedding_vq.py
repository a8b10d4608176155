"""A small re-implementation of the nn.Embedding-codebook quantizer layout that taming's
``VectorQuantizer2``, LlamaGen's and diffusers' ``VectorQuantizer`` share (written here from
the layout, not copied): ``n_e``/``e_dim``/``beta``, an ``embedding`` of K x D, channel-first
input, and ``(z_q, loss, (perplexity, min_encodings, indices))`` from ``forward``.
"""

import torch
import torch.nn.functional as F
from torch import nn


class EmbeddingVQ(nn.Module):
    def __init__(self, n_e: int, e_dim: int, beta: float = 0.25, sane_index_shape: bool = False):
        super().__init__()
        self.n_e, self.e_dim, self.beta = n_e, e_dim, beta
        self.sane_index_shape = sane_index_shape
        self.embedding = nn.Embedding(n_e, e_dim)
        self.embedding.weight.data.uniform_(-1.0 / n_e, 1.0 / n_e)

    def forward(self, z: torch.Tensor):
        b, _, h, w = z.shape
        z = z.permute(0, 2, 3, 1).contiguous()  # (B, H, W, D)
        flat = z.reshape(-1, self.e_dim)
        book = self.embedding.weight
        d = flat.pow(2).sum(1, keepdim=True) + book.pow(2).sum(1) - 2 * flat @ book.T
        idx = d.argmin(1)  # (B*H*W,)
        z_q = self.embedding(idx).view(z.shape)
        # beta on the commitment term (taming's legacy=False)
        loss = self.beta * F.mse_loss(z_q.detach(), z) + F.mse_loss(z_q, z.detach())
        z_q = (z + (z_q - z).detach()).permute(0, 3, 1, 2).contiguous()
        if self.sane_index_shape:
            idx = idx.reshape(b, h, w)
        return z_q, loss, (None, None, idx)
