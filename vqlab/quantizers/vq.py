"""VectorQuantizer: nearest-code quantization with a straight-through (or rotated) gradient.

Glossary: ``z_e`` encoder output, ``z_q`` its quantized value, ``indices`` the chosen codes,
``K`` = ``codebook_size``, ``D`` = ``dim``.

Losses (the VQ-VAE objective with beta on the right term):
- commitment ``beta * ||z_e - sg(z_q)||^2`` pulls the encoder to its code;
- codebook ``||sg(z_e) - z_q||^2`` moves the codes, only when ``update="grad"``.
With ``update="ema"`` the codes follow the exponential moving average of their assigned encoder
outputs instead (:mod:`vqlab.quantizers.ema`), and the codebook is a buffer with no gradient.
Both mean over elements (positions x D), as ``F.mse_loss`` does.

Options (all off by default; each changes one step of the pipeline
``z_e -> in-projection -> L2 normalisation -> nearest code -> estimator -> out-projection``):
- ``code_dim=d`` (factorized codes, as in ViT-VQGAN): a learned ``Linear(D, d)`` before the search
  and ``Linear(d, D)`` after it; the codebook, the losses, EMA and restarts live in d dims.
  ``init_from_data`` fits the projections by PCA before it fits the codes.
- ``normalize`` (cosine codes): the projected ``z_e`` and the codes are L2-normalised, so the
  nearest code is the one of highest cosine similarity. EMA averages unit vectors and the
  codebook is re-normalised after every update; gradient-trained codes are stored raw
  (``codebook_raw``) and normalised on read. Losses are then squared chordal distances.
- ``estimator="rotation"`` (Fifty et al., arXiv 2410.06424): the gradient reaches ``z_e`` through
  a rotation and rescaling instead of the straight-through copy
  (:mod:`vqlab.quantizers.rotation`); the forward value is unchanged.
- ``simvq`` (arXiv 2411.02038): the codes are ``C W`` with ``C`` a frozen (K, d) buffer and ``W``
  a learned (d, d) map (``codebook_map``), trained by the codebook loss, so it needs
  ``update="grad"``; dead-code restart is refused (a row of ``C W`` is not a free vector).
``codebook`` is always the effective (K, d) codebook the search uses, derived codebooks included.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vqlab.quantizers.codebook import (  # noqa: F401  (VQOutput, INIT_METHODS, fit_codes: re-exported)
    INIT_METHODS,
    VQOutput,
    check_indices,
    ema_step,
    fit_codes,
    flatten,
    register_codebook,
    register_statistics,
    reset_statistics,
    restart_dead_codes,
    stored_codebook,
    unflatten,
)
from vqlab.quantizers.collective import all_reduce_sum, world_size
from vqlab.quantizers.distance import DEFAULT_MAX_BYTES, nearest_code
from vqlab.quantizers.ema import batch_statistics
from vqlab.quantizers.rotation import ESTIMATORS
from vqlab.registry import QUANTIZERS, QuantizerEntry
from vqlab.validation import (
    check_init_args,
    check_quantizer_args,
)

UPDATES = ("ema", "grad")
SEARCHES = ("exact", "fast")  # nearest_code precisions


class VectorQuantizer(nn.Module):
    """Quantize ``(..., D)`` (or channel-first ``(B, D, H, W)`` with ``channel_dim=1``) inputs.

    Args:
        dim: dimension D of the encoder outputs (and of the quantized output).
        codebook_size: number of codes K.
        update: ``"ema"`` (codebook is a buffer moved by EMA) or ``"grad"`` (a Parameter trained by
            the codebook loss).
        beta: weight of the commitment loss.
        decay, eps: EMA decay and Laplace smoothing (``update="ema"``).
        dead_code_threshold: codes whose EMA usage (expected assignments per step) falls below
            this are re-seeded from the current batch's encoder outputs; 0 turns it off.
        channel_dim: the axis of D in the input (-1, or 1 for ``(B, D, H, W)``).
        max_bytes: bound on the distance tile of the nearest-code search.
        estimator: gradient through the quantizer, ``"ste"`` (straight-through) or
            ``"rotation"`` (the rotation trick).
        normalize: L2-normalise the search vectors and the codes (cosine-similarity search).
        code_dim: d, the dimension of the codes behind learned projections D -> d -> D; 0 means
            no projection (d = D).
        simvq: codes ``C W``, a frozen random ``C`` through a learned linear map ``W``
            (needs ``update="grad"`` and ``dead_code_threshold=0``).
        search: precision of the nearest-code search, ``"exact"`` (fp32) or ``"fast"`` (on
            CUDA: bf16 tensor-core scoring, certified per row and redone in fp32 where the
            certificate fails, so the codes are the same; on the CPU both are the fp32 search).
            See :func:`vqlab.quantizers.distance.nearest_code`.
    """

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
        max_bytes: int = DEFAULT_MAX_BYTES,
        estimator: str = "ste",
        normalize: bool = False,
        code_dim: int = 0,
        simvq: bool = False,
        search: str = "exact",
    ) -> None:
        super().__init__()
        if search not in SEARCHES:
            raise ValueError(f"search={search!r} is not valid; choose one of {list(SEARCHES)}")
        if update not in UPDATES:
            raise ValueError(f"update={update!r} is not valid; choose one of {list(UPDATES)}")
        check_quantizer_args(
            dim=dim,
            codebook_size=codebook_size,
            beta=beta,
            decay=decay,
            eps=eps,
            dead_code_threshold=dead_code_threshold,
            channel_dim=channel_dim,
            max_bytes=max_bytes,
        )
        _check_options(update, dead_code_threshold, estimator, code_dim, simvq)
        self.dim, self.codebook_size, self.update = dim, codebook_size, update
        self.beta, self.decay, self.eps = beta, decay, eps
        self.dead_code_threshold = dead_code_threshold
        self.channel_dim, self.max_bytes = channel_dim, max_bytes
        self.estimator, self.normalize, self.simvq = estimator, normalize, simvq
        self.search = search
        self.code_dim = code_dim or dim  # d: where the codes live and the search runs
        self.project_in = nn.Linear(dim, self.code_dim) if code_dim else None
        self.project_out = nn.Linear(self.code_dim, dim) if code_dim else None
        initial = torch.randn(codebook_size, self.code_dim)  # (K, d)
        if normalize:
            initial = F.normalize(initial, dim=1)
        if simvq:
            self.register_buffer("codebook_base", initial)  # C, frozen
            self.codebook_map = nn.Linear(self.code_dim, self.code_dim, bias=False)  # W
            nn.init.eye_(self.codebook_map.weight)  # start at codebook == C
        elif update == "grad" and normalize:
            # the optimizer moves the raw vectors off the sphere; `codebook` normalises on read
            self.codebook_raw = nn.Parameter(initial)
        else:
            register_codebook(self, initial, update)
        # EMA of assignments per step: the EMA cluster size, and the usage the restart reads.
        register_statistics(self, codebook_size)
        self.register_buffer("restarts", torch.tensor(0, dtype=torch.long))

    # --------------------------------------------------------------- codebook
    @property
    def codebook(self) -> torch.Tensor:
        """(K, d): the effective codebook that the search compares against and ``lookup`` reads.

        The stored Parameter (``update="grad"``) or buffer (``"ema"``) when codes are free
        vectors; computed, with autograd, when they are derived: ``C W`` for SimVQ, and the
        normalised ``codebook_raw`` for gradient-trained cosine codes (normalised too with SimVQ).
        """
        stored = stored_codebook(self)
        if stored is not None:
            return stored
        codes = self.codebook_map(self.codebook_base) if self.simvq else self.codebook_raw
        return F.normalize(codes, dim=1) if self.normalize else codes

    def _code_store(self) -> torch.Tensor:
        """The tensor that holds the free codes, for in-place writes (restart, init)."""
        if self.simvq:
            raise RuntimeError("SimVQ codes are rows of C W and cannot be written one by one")
        return self.codebook_raw if "codebook_raw" in self._parameters else self.codebook

    @torch.no_grad()
    def _set_codes(self, codes: torch.Tensor) -> None:
        """Make the effective codebook equal ``codes`` (K, d), normalised first for cosine codes."""
        if self.normalize:
            codes = F.normalize(codes, dim=1)
        if self.simvq:
            # C <- codes and W <- I, so C W is exactly the given codes and W learns from there
            self.codebook_base.copy_(codes)
            nn.init.eye_(self.codebook_map.weight)
        else:
            self._code_store().copy_(codes)

    def _to_code_space(self, z: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (N, d): in-projection, then L2 normalisation, each when switched on."""
        h = self.project_in(z) if self.project_in is not None else z
        return F.normalize(h, dim=1) if self.normalize else h

    def _from_code_space(self, h: torch.Tensor) -> torch.Tensor:
        """(N, d) -> (N, D): the out-projection when ``code_dim`` is set."""
        return self.project_out(h) if self.project_out is not None else h

    def to_code_space(self, z_e: torch.Tensor) -> torch.Tensor:
        """Encoder outputs (..., D) (or channel-first) -> (N, d), flattened over positions.

        These are the vectors the search compares with ``codebook`` (the flattened input when
        neither ``code_dim`` nor ``normalize`` is on); diagnostics that set embeddings against
        the codebook need them in this space.
        """
        flat, _ = self._flatten(z_e)
        with torch.autocast(device_type=flat.device.type, enabled=False):
            return self._to_code_space(flat.float())

    # ------------------------------------------------------------------ shapes
    def _flatten(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Size]:
        return flatten(z_e, self.dim, self.channel_dim, self.ema_counts.device)

    def _unflatten(self, flat: torch.Tensor, lead: torch.Size) -> torch.Tensor:
        return unflatten(flat, lead, self.dim, self.channel_dim)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes of ``indices`` (any shape) -> ``(*indices.shape, D)``, or channel-first.

        What ``forward`` outputs in eval mode: the code, through the out-projection when
        ``code_dim`` is set.
        """
        check_indices(indices, self.codebook_size)
        with torch.autocast(device_type=indices.device.type, enabled=False):
            flat = F.embedding(indices.reshape(-1), self.codebook)  # (N, d)
            flat = self._from_code_space(flat)  # (N, D)
        return self._unflatten(flat, indices.shape)

    # ----------------------------------------------------------------- forward
    def forward(self, z_e: torch.Tensor) -> VQOutput:
        """z_e: (..., D) -> VQOutput. Runs in fp32 even under autocast."""
        flat, lead = self._flatten(z_e)
        if flat.shape[0] == 0:
            return self._empty_output(z_e, lead)
        with torch.autocast(device_type=flat.device.type, enabled=False):
            z = self._to_code_space(flat.float())  # (N, d)
            codebook = self.codebook  # (K, d); read once, since derived codebooks are computed
            indices = nearest_code(
                z.detach(), codebook.detach(), max_bytes=self.max_bytes, precision=self.search
            )[0]
            z_q = F.embedding(indices, codebook)  # (N, d)
            commitment = F.mse_loss(z, z_q.detach())
            losses = {"commitment": commitment}
            loss = self.beta * commitment
            if self.update == "grad":
                losses["codebook"] = F.mse_loss(z_q, z.detach())
                loss = loss + losses["codebook"]
            if self.training:
                self._update_statistics(z.detach(), indices)
                if self.normalize and self.update == "ema":
                    # a mean of unit vectors is shorter than 1: put the codes back on the sphere
                    self.codebook.copy_(F.normalize(self.codebook, dim=1))
            # the value is exactly z_q (the estimator adds only x - sg(x) = 0), so
            # quantized == lookup(indices) bit for bit; the gradient to z depends on the estimator
            out = self._from_code_space(ESTIMATORS[self.estimator](z, z_q))  # (N, D)
        quantized = self._unflatten(out.to(z_e.dtype), lead)
        return VQOutput(quantized, indices.reshape(lead), loss, losses)

    def _empty_output(self, z_e: torch.Tensor, lead: torch.Size) -> VQOutput:
        """An input with no positions (N = 0): empty ``quantized`` and ``indices``, zero losses.

        The zero loss is still connected to ``z_e`` and to every parameter, so ``backward`` and
        DDP's gradient reduction run as for any batch. In one process the statistics are left
        alone (an empty batch says nothing about the codes); under data parallelism a rank with
        an empty shard still joins the statistics collectives, contributing zero counts.
        """
        zero = z_e.float().sum() * 0.0
        for p in self.parameters():
            zero = zero + p.float().sum() * 0.0
        losses = {"commitment": zero}
        if self.update == "grad":
            losses["codebook"] = zero
        if self.training and world_size() > 1:
            with torch.no_grad():
                z = z_e.new_zeros(0, self.code_dim, dtype=torch.float32)
                self._update_statistics(z, torch.zeros(0, dtype=torch.long, device=z.device))
        indices = torch.zeros(lead, dtype=torch.long, device=z_e.device)
        return VQOutput(z_e.clone(), indices, zero, losses)

    @torch.no_grad()
    def _update_statistics(self, z: torch.Tensor, indices: torch.Tensor) -> None:
        counts, sums = batch_statistics(z, indices, self.codebook_size)
        # Data parallel hook (no-op in one process): the statistics of the whole global batch,
        # summed over ranks *before* the update, so every replica makes the same update.
        if self.update == "ema":
            counts, sums = all_reduce_sum(counts, sums)
        else:
            (counts,) = all_reduce_sum(counts)
        ema_step(self, counts, sums)
        if self.dead_code_threshold > 0:
            # codebook_raw for gradient-trained cosine codes (SimVQ refuses the restart)
            store = self._code_store()
            self.restarts += restart_dead_codes(self, z, store, self.dead_code_threshold)

    # ------------------------------------------------------------------- init
    @torch.no_grad()
    def init_from_data(
        self, z_e: torch.Tensor, *, method: str = "kmeans", iters: int = 20, seed: int = 0
    ) -> None:
        """Initialise the codebook from encoder outputs ``z_e`` (..., D) (or channel-first).

        method: ``kmeans`` (k-means++ seeding then ``iters`` Lloyd steps), ``kmeans++`` (seeding
        only), ``random_normal`` (per-dim mean/std of the data), ``random_uniform`` (per-dim
        bounding box of the data), ``sample`` (distinct random rows), ``gmm`` (the means of a
        diagonal Gaussian mixture, :mod:`vqlab.quantizers.gmm`) or ``none`` (keep the codebook
        the layer was built with; only ``initialized`` is set). Needs at least K rows.
        Resets the EMA statistics and sets ``initialized``.

        The codes are fitted in the search space: after the in-projection and normalisation, and
        re-normalised for cosine codes. With ``code_dim`` (d <= D) the projections are fitted
        first, by PCA (:meth:`_fit_projections`). For SimVQ the frozen ``C`` becomes the fitted
        codes and ``W`` the identity, so ``codebook`` equals them.
        """
        flat, _ = self._flatten(z_e)
        flat = flat.float()  # (N, D)
        k = self.codebook_size
        check_init_args(
            method,
            rows=flat.shape[0],
            codebook_size=k,
            iters=iters,
            seed=seed,
            methods=INIT_METHODS,
        )
        if method == "none":  # the layer keeps the codebook (and projections) it was built with
            self.initialized.fill_(True)
            return
        if self.project_in is not None and self.code_dim <= self.dim:
            self._fit_projections(flat)
        flat = self._to_code_space(flat)  # (N, d): cluster where the search runs
        codes = fit_codes(flat, k, method, iters=iters, seed=seed)
        self._set_codes(codes)
        reset_statistics(self)

    @torch.no_grad()
    def _fit_projections(self, z: torch.Tensor) -> None:
        """PCA of ``z`` (N, D): ``project_in`` <- the top-d principal axes, centred on the mean;
        ``project_out`` <- their transpose plus the mean.

        ``project_out(project_in(z))`` is then the rank-d PCA reconstruction of ``z``. Why: in
        deferred quantization the quantizer (projections included) is bypassed while the decoder
        learns on raw ``z_e``; random projections at the switch hand the decoder unrelated
        inputs, and on the synthetic mixture that cost most of the codes.
        """
        mean = z.mean(0)  # (D,)
        centred = z - mean  # (N, D)
        cov = (centred.T @ centred).double() / z.shape[0]  # (D, D); fp64 for a clean eigh
        vecs = torch.linalg.eigh(cov).eigenvectors  # (D, D), columns by increasing variance
        axes = vecs[:, -self.code_dim :].flip(1).T.to(z.dtype)  # (d, D), by decreasing variance
        self.project_in.weight.copy_(axes)
        self.project_in.bias.copy_(-(axes @ mean))
        self.project_out.weight.copy_(axes.T)
        self.project_out.bias.copy_(mean)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, codebook_size={self.codebook_size}, update={self.update!r}, "
            f"beta={self.beta}, decay={self.decay}, dead_code_threshold={self.dead_code_threshold}"
            f", estimator={self.estimator!r}, normalize={self.normalize}, "
            f"code_dim={self.code_dim}, simvq={self.simvq}"
        )


def _check_options(
    update: str, dead_code_threshold: float, estimator: str, code_dim: int, simvq: bool
) -> None:
    """Refuse option values and combinations that have no defined meaning."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator={estimator!r} is not valid; choose one of {list(ESTIMATORS)}")
    if code_dim < 0:
        raise ValueError(f"code_dim must be >= 0 (0 = no projection); got {code_dim}")
    conflict = simvq_conflict(update, dead_code_threshold) if simvq else None
    if conflict is not None:
        raise ValueError(f"simvq=True {conflict}")


def simvq_conflict(update: str, dead_code_threshold: float, prefix: str = "") -> str | None:
    """Why SimVQ cannot run with these options (the end of a sentence), or None if it can.

    The one statement of SimVQ's rules, used by the layer and by the config (``prefix="vq."``,
    which names values as config keys do: ``vq.update=grad``, not ``update='grad'``).
    """
    if update != "grad":
        grad, got = ("grad", update) if prefix else ("'grad'", repr(update))
        return (
            f"needs {prefix}update={grad}, not {got}: SimVQ codes are C W with W learned by the "
            "codebook loss, so there is no free code for an EMA update to move"
        )
    if dead_code_threshold > 0:
        return (
            f"cannot be combined with {prefix}dead_code_threshold={dead_code_threshold}: a SimVQ "
            "code is a row of C W, not a free vector to re-seed"
        )
    return None


def _build(vq, model, input_shape: tuple[int, ...], channel_dim: int) -> nn.Module:
    """``vq.kind=single``: vqlab's layer, or the peer library's in its place (``vq.impl``)."""
    layer, extra = VectorQuantizer, {"search": vq.search}
    if vq.impl == "vector_quantize_pytorch":
        from vqlab.quantizers.peer import PeerQuantizer as layer

        extra = {}
    return layer(
        model.latent_dim,
        vq.codebook_size,
        update=vq.update,
        beta=vq.beta,
        decay=vq.decay,
        eps=vq.eps,
        dead_code_threshold=vq.dead_code_threshold,
        channel_dim=channel_dim,
        estimator=vq.estimator,
        normalize=vq.normalize,
        code_dim=vq.code_dim,
        simvq=vq.simvq,
        **extra,
    )


QUANTIZERS.register(
    "single",
    QuantizerEntry(
        build=_build,
        options=("impl", "estimator", "normalize", "code_dim", "simvq", "dead_code_threshold"),
        title="single-scale layer",
    ),
)
