"""The peer library's quantizer (vector-quantize-pytorch) behind vqlab's quantizer interface.

``vq.impl=vector_quantize_pytorch`` puts ``vector_quantize_pytorch.VectorQuantize`` where
:class:`~vqlab.quantizers.vq.VectorQuantizer` would sit, in the same model, data, schedule,
init sample and evaluation, so that a comparison with the peer is measured in one harness rather
than quoted. It is an optional dependency (``pip install 'vqlab[peer]'``, pinned 1.32.0).

The vq.* settings map onto the peer's arguments:

============================  ==============================================================
vqlab                         vector-quantize-pytorch
============================  ==============================================================
``beta``                      ``commitment_weight``
``decay``, ``eps``            ``decay``, ``eps``
``dead_code_threshold``       ``threshold_ema_dead_code``
``normalize``                 ``use_cosine_sim``
``code_dim``                  ``codebook_dim`` (its own projections; no PCA fit)
``estimator=rotation|ste``    ``rotation_trick=True|False``
``update=ema|grad``           ``ema_update=True, learnable_codebook=False`` | the reverse
============================  ==============================================================

``init_from_data`` writes vqlab's fitted codes (k-means etc., :func:`fit_codes`) into the
peer's EMA buffers; ``init=none`` keeps the peer's own initial codebook (kaiming-uniform), which
with ``decay=0.8, beta=1, estimator=rotation`` is the peer's out-of-the-box configuration.
SimVQ has no equivalent switch on this class and is refused.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vqlab.errors import UserError
from vqlab.quantizers.codebook import INIT_METHODS, VQOutput, fit_codes
from vqlab.quantizers.distance import nearest_code
from vqlab.validation import check_init_args, check_quantizer_input

PEER_PACKAGE = "vector-quantize-pytorch"
PEER_VERSION = "1.32.0"
EVAL_MAX_BYTES = 256 * 2**20  # one (rows, K) fp32 distance block outside training


class MissingDependency(UserError, ImportError):
    """An optional dependency a requested feature needs is not installed."""


def load_peer():
    """The peer module, or a :class:`MissingDependency` that says how to install it."""
    try:
        import vector_quantize_pytorch
    except ImportError as err:
        raise MissingDependency(
            f"vq.impl=vector_quantize_pytorch needs the optional peer library: pip install "
            f"'{PEER_PACKAGE}=={PEER_VERSION}' (or vqlab[peer])"
        ) from err
    return vector_quantize_pytorch


class PeerQuantizer(nn.Module):
    """``vector_quantize_pytorch.VectorQuantize`` with vqlab's quantizer interface: inputs
    ``(..., D)`` or channel-first, :class:`VQOutput`, ``codebook``, ``to_code_space``,
    ``init_from_data``."""

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        *,
        update: str = "ema",
        beta: float = 0.25,
        decay: float = 0.99,
        eps: float = 1e-5,
        dead_code_threshold: float = 0.0,
        channel_dim: int = -1,
        estimator: str = "ste",
        normalize: bool = False,
        code_dim: int = 0,
        simvq: bool = False,
    ) -> None:
        super().__init__()
        if simvq:
            raise ValueError(
                "vq.impl=vector_quantize_pytorch has no SimVQ switch; use vq.simvq=false"
            )
        if update not in ("ema", "grad"):
            raise ValueError(f"update={update!r} is not valid; choose one of ['ema', 'grad']")
        peer = load_peer()
        self.dim, self.codebook_size, self.channel_dim = dim, codebook_size, channel_dim
        self.update, self.normalize = update, normalize
        self.code_dim = code_dim or dim
        self.layer = peer.VectorQuantize(
            dim=dim,
            codebook_size=codebook_size,
            codebook_dim=code_dim or None,
            decay=decay,
            eps=eps,
            commitment_weight=beta,
            threshold_ema_dead_code=dead_code_threshold,
            use_cosine_sim=normalize,
            rotation_trick=estimator == "rotation",
            ema_update=update == "ema",
            learnable_codebook=update == "grad",
            kmeans_init=False,  # vqlab's schedule initialises through init_from_data
        )
        self.register_buffer("initialized", torch.tensor(False))
        self.eval_max_bytes = EVAL_MAX_BYTES

    @property
    def codebook(self) -> torch.Tensor:
        """(K, d): the codebook the peer searches."""
        return self.layer.codebook

    def _flatten(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Size]:
        check_quantizer_input(
            z_e, dim=self.dim, channel_dim=self.channel_dim, device=self.initialized.device
        )
        z = z_e.movedim(self.channel_dim, -1)
        return z.reshape(-1, self.dim), z.shape[:-1]

    def to_code_space(self, z_e: torch.Tensor) -> torch.Tensor:
        """(N, d): the peer's in-projection (and L2 normalisation for cosine codes)."""
        flat, _ = self._flatten(z_e)
        h = self.layer.project_in(flat.float())
        return F.normalize(h, dim=-1) if self.normalize else h

    def forward(self, z_e: torch.Tensor) -> VQOutput:
        flat, lead = self._flatten(z_e)
        if self.training:
            # one call: the peer's EMA update and dead-code restart see the whole batch
            found = self._call(flat)
        elif self._plain_euclidean():
            found = self._search(flat)
        else:
            found = self._call_chunked(flat)
        return self._output(z_e, lead, *found)

    def forward_peer(self, z_e: torch.Tensor) -> VQOutput:
        """The peer's own forward in either mode (outside training in row chunks)."""
        flat, lead = self._flatten(z_e)
        found = self._call(flat) if self.training else self._call_chunked(flat)
        return self._output(z_e, lead, *found)

    def _output(self, z_e, lead, quantized, indices, loss) -> VQOutput:
        out = quantized.reshape(*lead, self.dim).movedim(-1, self.channel_dim)
        return VQOutput(out.to(z_e.dtype), indices.reshape(lead), loss, {"commitment": loss})

    def _call(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        quantized, indices, loss = self.layer(flat.reshape(1, -1, self.dim))  # it wants (B,N,D)
        return quantized.reshape(-1, self.dim), indices.reshape(-1), loss.sum().reshape(())

    def _plain_euclidean(self) -> bool:
        """Euclidean codes with no projection: outside training (where its Gumbel sampling is
        off) the peer's answer is then the nearest code by squared distance, which vqlab's
        search finds without the peer's dense (N, K) distances, square roots and one-hots."""
        layer = self.layer
        return (
            not self.normalize
            and isinstance(layer.project_in, nn.Identity)
            and isinstance(layer.project_out, nn.Identity)
        )

    def _search(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        book = self.codebook.float()
        idx = nearest_code(flat.float(), book).indices
        return book[idx], idx, flat.new_zeros((), dtype=torch.float32)  # no loss at eval

    def _call_chunked(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Outside training, rows in chunks of at most ``eval_max_bytes`` of (rows, K) fp32
        distances. The peer builds several dense (N, K) tensors per call (distances, one-hot),
        so a whole test set at K = 16384 (640k rows) would need ~40 GB each. In eval mode it
        updates nothing, so the chunks give the same codes; the loss is their row-weighted mean."""
        rows = max(1, self.eval_max_bytes // (4 * self.codebook_size))
        if flat.shape[0] <= rows:
            return self._call(flat)
        parts = [self._call(flat[i : i + rows]) for i in range(0, flat.shape[0], rows)]
        weights = [p[0].shape[0] / flat.shape[0] for p in parts]
        loss = sum(w * p[2] for w, p in zip(weights, parts))
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), loss

    @torch.no_grad()
    def init_from_data(
        self, z_e: torch.Tensor, *, method: str = "kmeans", iters: int = 20, seed: int = 0
    ) -> None:
        """Fit the codes to ``z_e`` in the peer's search space and write them into its buffers
        (``embed``, ``embed_avg`` and unit ``cluster_size``); ``none`` keeps its own init."""
        flat, _ = self._flatten(z_e)
        check_init_args(
            method,
            rows=flat.shape[0],
            codebook_size=self.codebook_size,
            iters=iters,
            seed=seed,
            methods=INIT_METHODS,
        )
        if method != "none":
            codes = fit_codes(self.to_code_space(z_e), self.codebook_size, method, iters=iters,
                              seed=seed)  # fmt: skip
            if self.normalize:
                codes = F.normalize(codes, dim=1)
            book = self.layer._codebook
            book.embed.data.copy_(codes[None])
            book.embed_avg.data.copy_(codes[None])
            book.cluster_size.data.fill_(1.0)
            book.initted.data.fill_(True)
        self.initialized.fill_(True)
