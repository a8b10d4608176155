"""Quantizers of other libraries (and vqlab's own), seen the way the deferred wrapper needs them.

:class:`~vqlab.quantizers.deferred.DeferredQuantizer` and :func:`init_codebook_` work on three
families, recognised by their attributes (nothing of them is imported unless it is installed):

- **vqlab**: vqlab's codebook kinds (``VectorQuantizer``, ``MultiScaleQuantizer``,
  ``PeerQuantizer``); fitted through their own ``init_from_data`` (k-means with greedy
  k-means++ seeding), exactly as ``train.strategy=deferred`` fits them.
- **vector-quantize-pytorch** (1.32): ``VectorQuantize``; its ``_codebook`` buffers ``embed``,
  ``embed_avg``, ``cluster_size`` and ``initted`` are all written, with its heads axis.
- **nn.Embedding codebook**: the ``VectorQuantizer``/``VectorQuantizer2`` layout of taming,
  LlamaGen and diffusers: an ``embedding`` (``nn.Embedding``, K x D) plus ``n_e`` or
  ``num_embeddings``; channel-first (B, D, H, W) input; a forward returning
  ``(z_q, loss, (perplexity, min_encodings, indices))``. LlamaGen's ``l2_norm`` is honoured.

Each family says how to flatten an input into (n, D) rows of the quantizer's input space (what
the reservoir keeps), how to fit the codebook to such rows, and how to call the quantizer once
without side effects (to learn the shape of its output). Anything else gets
:class:`UnsupportedQuantizer`, a message that lists what is supported.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from vqlab.errors import UserError
from vqlab.quantizers.kmeans import kmeans

SUPPORTED = (
    "vqlab's codebook quantizers (VectorQuantizer, MultiScaleQuantizer, PeerQuantizer); "
    "vector_quantize_pytorch.VectorQuantize; an nn.Embedding-codebook quantizer as in taming, "
    "LlamaGen or diffusers (an `embedding` nn.Embedding plus `n_e` or `num_embeddings`)"
)


class UnsupportedQuantizer(UserError, TypeError):
    """The object is not one of the quantizer families the deferred wrapper knows."""


class Family:
    """How the deferred wrapper reads and writes one kind of quantizer (see the module doc)."""

    name = ""

    def dim(self, q: nn.Module) -> int:
        """D: the channels of the quantizer's input."""
        raise NotImplementedError

    def codebook_size(self, q: nn.Module) -> int:
        raise NotImplementedError

    def rows(self, q: nn.Module, z_e: torch.Tensor) -> torch.Tensor:
        """The input ``z_e`` as (n, D) rows, detached."""
        raise NotImplementedError

    def fit(self, q: nn.Module, x: torch.Tensor, *, iters: int, seed: int) -> None:
        """Fit the codebook to input rows ``x`` (N, D) and write every buffer tied to it."""
        raise NotImplementedError

    def codebook(self, q: nn.Module) -> torch.Tensor:
        """(K, d) the codes the search compares against (heads stacked: (H*K, d))."""
        raise NotImplementedError

    @contextlib.contextmanager
    def quiet(self, q: nn.Module) -> Iterator[None]:
        """A context where ``q(z)`` changes nothing: eval mode and no gradient."""
        was = q.training
        q.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            q.train(was)


class VqlabFamily(Family):
    name = "vqlab"

    def dim(self, q):
        return q.dim

    def codebook_size(self, q):
        return q.codebook_size

    def rows(self, q, z_e):
        return z_e.detach().movedim(q.channel_dim, -1).reshape(-1, q.dim)  # (n, D)

    def fit(self, q, x, *, iters, seed):
        if getattr(q, "scales", None) is not None:  # MultiScaleQuantizer takes (N, D)
            q.init_from_data(x, method="kmeans", iters=iters, seed=seed)
            return
        # (N, D) has D on its last axis, which is axis 1 too: either channel_dim reads it
        q.init_from_data(x, method="kmeans", iters=iters, seed=seed)

    def codebook(self, q):
        return q.codebook


class PeerFamily(Family):
    """vector_quantize_pytorch.VectorQuantize: the codebook is ``_codebook.embed`` (C, K, d),
    C = heads with ``separate_codebook_per_head`` else 1; the input passes ``project_in`` and,
    with ``use_cosine_sim``, an L2 normalisation before the search."""

    name = "vector-quantize-pytorch"

    def dim(self, q):
        return q.dim

    def codebook_size(self, q):
        return q.codebook_size

    def _axis(self, q, z_e: torch.Tensor) -> int:
        channel_first = q.accept_image_fmap or q.accept_3d_fmap or not q.channel_last
        return 1 if channel_first and z_e.dim() > 2 else -1

    def rows(self, q, z_e):
        return z_e.detach().movedim(self._axis(q, z_e), -1).reshape(-1, q.dim)

    @torch.no_grad()
    def fit(self, q, x, *, iters, seed):
        book = q._codebook
        h = q.project_in(x.float())  # (N, H*d)
        heads, d = q.heads, book.embed.shape[-1]
        if q.separate_codebook_per_head:
            groups = h.reshape(-1, heads, d).transpose(0, 1)  # (H, N, d)
        else:
            groups = h.reshape(-1, d).unsqueeze(0)  # (1, N*H, d): the heads share one codebook
        groups = book.transform_input(groups)  # L2 normalisation for cosine codes
        for c in range(groups.shape[0]):
            res = kmeans(groups[c], self.codebook_size(q), iters=iters, seed=seed + c)
            codes = res.centroids
            if book.use_cosine_sim:
                codes = F.normalize(codes, dim=-1)
            # EMA state as vqlab's own init writes it: sums = codes, sizes = 1 (measured on
            # CIFAR-10, K=256, 2 seeds: perplexity 184 and 173 against 169 and 161 when sizes
            # were the k-means counts per call, whose weight slows the first EMA steps;
            # results/plugin-cpu). With dead-code replacement on, a fitted code starts as the
            # peer starts a replaced one (``reset_cluster_size``), not below the threshold.
            fill = max(1.0, float(book.reset_cluster_size)) if book.threshold_ema_dead_code else 1.0
            sizes = torch.full((codes.shape[0],), fill)  # (K,)
            book.embed.data[c] = codes.to(book.embed.dtype)
            book.embed_avg.data[c] = (codes * sizes[:, None]).to(book.embed_avg.dtype)
            book.cluster_size.data[c] = sizes.to(book.cluster_size.dtype)
        book.initted.data.fill_(True)

    def codebook(self, q):
        return q._codebook.embed.reshape(-1, q._codebook.embed.shape[-1])

    @contextlib.contextmanager
    def quiet(self, q):
        # with kmeans_init=True the peer runs its own k-means inside forward, in any mode,
        # until ``initted`` is set: hold it set for the side-effect-free call
        initted = q._codebook.initted.clone()
        q._codebook.initted.fill_(True)
        try:
            with super().quiet(q):
                yield
        finally:
            q._codebook.initted.copy_(initted)


class EmbeddingFamily(Family):
    """The ``nn.Embedding`` codebook of taming's ``VectorQuantizer2``, LlamaGen's and diffusers'
    ``VectorQuantizer``: input (B, D, H, W), codes ``embedding.weight`` (K, D)."""

    name = "nn.Embedding codebook (taming / LlamaGen / diffusers layout)"

    def dim(self, q):
        return q.embedding.embedding_dim

    def codebook_size(self, q):
        return q.embedding.num_embeddings

    def rows(self, q, z_e):
        if z_e.dim() != 4:
            raise ValueError(
                f"an nn.Embedding-codebook quantizer takes (B, D, H, W) input; got "
                f"{tuple(z_e.shape)}"
            )
        return z_e.detach().movedim(1, -1).reshape(-1, self.dim(q))  # (B*H*W, D)

    @torch.no_grad()
    def fit(self, q, x, *, iters, seed):
        normalize = bool(getattr(q, "l2_norm", False))  # LlamaGen's cosine codes
        x = F.normalize(x.float(), dim=1) if normalize else x.float()
        codes = kmeans(x, self.codebook_size(q), iters=iters, seed=seed).centroids
        if normalize:
            codes = F.normalize(codes, dim=1)
        q.embedding.weight.data.copy_(codes.to(q.embedding.weight.dtype))

    def codebook(self, q):
        w = q.embedding.weight
        return F.normalize(w, dim=1) if getattr(q, "l2_norm", False) else w


VQLAB_WITHOUT_CODEBOOK = ("FSQ", "LFQ")


def family_of(q: object) -> Family:
    """The :class:`Family` of ``q``, or :class:`UnsupportedQuantizer` naming what is supported."""
    from vqlab.quantizers.multiscale import MultiScaleQuantizer
    from vqlab.quantizers.peer import PeerQuantizer
    from vqlab.quantizers.vq import VectorQuantizer

    kind = type(q).__name__
    if isinstance(q, (VectorQuantizer, MultiScaleQuantizer, PeerQuantizer)):
        return VqlabFamily()
    if kind in VQLAB_WITHOUT_CODEBOOK and type(q).__module__.startswith("vqlab."):
        raise UnsupportedQuantizer(
            f"{kind} has no codebook to fit (its codes are a fixed grid), so deferred "
            f"quantization does not apply; supported: {SUPPORTED}"
        )
    if type(q).__module__.startswith("vector_quantize_pytorch") and kind == "VectorQuantize":
        return PeerFamily()
    embedding = getattr(q, "embedding", None)
    if (
        isinstance(q, nn.Module)
        and isinstance(embedding, nn.Embedding)
        and (hasattr(q, "n_e") or hasattr(q, "num_embeddings"))
    ):
        return EmbeddingFamily()
    raise UnsupportedQuantizer(
        f"cannot defer a {type(q).__module__}.{kind}; supported: {SUPPORTED}"
    )
