"""VAR sampling: next-scale prediction, one whole scale of tokens per transformer step.

For scale k = 1..S: run the transformer on scale k's inputs (with a KV cache of the coarser
scales' keys and values, or on the whole prefix again without it), draw the scale's p_k^2
tokens, and extend the running reconstruction exactly as the quantizer's forward does:
``f_hat = f_hat + quantizer.contribution(ids_k, k)`` (bicubic upsampling and phi_k), then
``quantizer.next_scale_input(f_hat, k + 1)`` (area downsampling) is the next scale's input. These
are the functions ``teacher_forcing_input`` uses in training, in the same order of additions, so
the inputs a sample sees are those training showed the model. :func:`var_logits_stepwise` runs
the same loop with given ids in place of the draws (a test checks it against the teacher-forced
logits).

Each draw: logits / temperature, then top-k (keep the k largest; 0 = off) and top-p (keep the
smallest set of codes, in order of probability, whose mass is >= p; 0 = off), then inverse-CDF
sampling with one uniform per token from ``generator`` (the MaskGIT sampler's draw), so a code
that was filtered out is never drawn. Classifier-free guidance at scale k (0-based) of S:
``(1 + w_k) cond - w_k uncond``, uncond the null class, with ``w_k = cfg * k / (S - 1)`` ramped
linearly from 0 at the first scale to cfg at the last as VAR does (``w = cfg`` when S = 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from vqlab.priors.sampling import check_labels, model_device, sample_codes
from vqlab.priors.var import VAR, KVCache, check_quantizer
from vqlab.registry import PRIORS, PriorEntry

# scale k (0-based), its logits (B', p_k^2, K) -> its ids (B, p_k^2)
Pick = Callable[[int, torch.Tensor], torch.Tensor]


def cfg_weight(k: int, num_scales: int, cfg: float) -> float:
    """Guidance weight of scale k (0-based) of ``num_scales``: ``cfg * k / (S - 1)``."""
    return cfg if num_scales == 1 else cfg * k / (num_scales - 1)


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """(..., K) -> (..., K) with -inf outside the top-k codes and outside the nucleus.

    top_k: keep codes whose logit is >= the k-th largest (ties kept); 0 or >= K: off. top_p in
    (0, 1): keep the most probable codes until their mass reaches p (the one that crosses p
    included, so the most probable code is always kept); 0 or >= 1: off.
    """
    k = logits.shape[-1]
    if 0 < top_k < k:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]  # (..., 1)
        logits = logits.masked_fill(logits < kth, -math.inf)
    if 0.0 < top_p < 1.0:
        probs, order = logits.float().softmax(dim=-1).sort(dim=-1, descending=True)
        before = probs.cumsum(dim=-1) - probs  # mass of the codes strictly more probable
        drop = torch.zeros_like(before, dtype=torch.bool).scatter(-1, order, before >= top_p)
        logits = logits.masked_fill(drop, -math.inf)
    return logits


def _scale_loop(
    model: VAR,
    quantizer: nn.Module,
    labels: torch.Tensor | None,
    batch: int,
    pick: Pick,
    *,
    use_cache: bool,
    guided: bool,
    bar: tqdm | None = None,
) -> torch.Tensor:
    """Run the S scales of one batch, asking ``pick`` for each scale's ids (B, p_k^2); returns
    all of them, (B, L).

    With ``guided`` the transformer runs on a doubled batch (rows B.. are the null class) and
    ``pick`` gets (2B, p_k^2, K) logits; the reconstruction is built once for the B rows.
    """
    if guided:
        labels = torch.cat([labels, torch.full_like(labels, -1)])
    cond = model.condition(labels, 2 * batch if guided else batch)  # (B', W)
    cache = KVCache(model.depth) if use_cache else None
    prefix: list[torch.Tensor] = []  # embedded inputs of the scales so far (no cache)
    x, f_hat, picked = None, None, []
    for k, p in enumerate(model.scales):
        h = model.embed_scale(k, x, cond)  # (B', p^2, W)
        if cache is not None:
            logits = model.run(h, cond, cache)
        else:
            prefix.append(h)
            logits = model.run(torch.cat(prefix, dim=1), cond)[:, -p * p :]
        ids = pick(k, logits)  # (B, p^2)
        picked.append(ids)
        if bar is not None:
            bar.update(1)
        if k + 1 == len(model.scales):
            break
        with torch.autocast(device_type=ids.device.type, enabled=False):
            c = quantizer.contribution(ids.reshape(-1, p, p), k)  # (B, D, h, h)
            f_hat = c if f_hat is None else f_hat + c  # the order of quantizer's _cumulate
            nxt = quantizer.next_scale_input(f_hat, k + 1)  # (B, D, p', p')
        x = nxt.flatten(2).transpose(1, 2)  # (B, p'^2, D), row-major as the ids
        if guided:
            x = torch.cat([x, x])
    return torch.cat(picked, dim=1)


@torch.no_grad()
def var_logits_stepwise(
    model: VAR,
    quantizer: nn.Module,
    ids: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    use_cache: bool = True,
) -> torch.Tensor:
    """ids (B, L) in [0, K) -> logits (B, L, K), scale by scale through the sampler's loop with
    the given ids in place of the draws. Equals ``model(teacher_forcing_input(ids), labels)``
    to float tolerance (in eval mode): the check that sampling builds the inputs training saw."""
    check_quantizer(model, quantizer)
    ids = ids.long()
    quantizer.split_indices(ids)  # shape and range check
    out: list[torch.Tensor] = []
    offsets = model.offsets

    def given(k: int, logits: torch.Tensor) -> torch.Tensor:
        out.append(logits)
        return ids[:, offsets[k] : offsets[k + 1]]

    _scale_loop(model, quantizer, labels, ids.shape[0], given, use_cache=use_cache, guided=False)
    return torch.cat(out, dim=1)


def _draw(
    model: VAR,
    batch: int,
    *,
    cfg: float,
    top_k: int,
    top_p: float,
    temperature: float,
    generator: torch.Generator | None,
) -> Pick:
    """The sampler's ``pick``: guidance at w_k, then temperature, top-k, top-p, one draw."""

    def pick(k: int, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if cfg > 0:
            w = cfg_weight(k, len(model.scales), cfg)
            cond, uncond = logits[:batch], logits[batch:]
            logits = (1.0 + w) * cond - w * uncond
        logits = filter_logits(logits / temperature, top_k, top_p)
        return sample_codes(logits, 1.0, generator)[0]  # (B, p^2)

    return pick


def _check_args(model, quantizer, n, labels, cfg, top_k, top_p, temperature) -> None:
    check_quantizer(model, quantizer)
    if n < 0 or cfg < 0 or top_k < 0 or not 0.0 <= top_p <= 1.0 or temperature <= 0:
        raise ValueError(
            f"need n >= 0, cfg >= 0, top_k >= 0, top_p in [0, 1], temperature > 0; got n={n}, "
            f"cfg={cfg}, top_k={top_k}, top_p={top_p}, temperature={temperature}"
        )
    check_labels(model, n, labels, cfg)


@torch.no_grad()
def var_sample(
    model: VAR,
    quantizer: nn.Module,
    n: int,
    *,
    labels: torch.Tensor | None = None,
    cfg: float = 0.0,
    top_k: int = 0,
    top_p: float = 0.0,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    batch_size: int = 256,
    use_cache: bool = True,
    progress: bool = False,
) -> torch.Tensor:
    """Sample ``n`` sequences -> LongTensor (n, L) of codes in [0, K), on the model's device.

    quantizer: the tokenizer's ``MultiScaleQuantizer`` (frozen), on the model's device.
    labels: (n,) long class ids (or -1 for the null class), None = unconditional (null class).
    cfg: guidance weight w, ramped over the scales (module docstring); cfg=0 runs no
    unconditional pass and is plain conditional sampling. top_k, top_p, temperature: see the
    module docstring. Draws are one uniform per token, scale by scale, batch by batch, so a
    seeded ``generator`` gives results that depend on ``batch_size`` but not on ``use_cache``
    (up to float rounding of the logits). The model is put in eval mode and restored after.
    """
    _check_args(model, quantizer, n, labels, cfg, top_k, top_p, temperature)
    dev = model_device(model)
    was_training = model.training
    model.eval()
    out: list[torch.Tensor] = []
    steps = math.ceil(n / batch_size) * len(model.scales)
    bar = tqdm(total=steps, desc="var", disable=not progress)
    try:
        for i in range(0, n, batch_size):
            b = min(batch_size, n - i)
            lab = None if labels is None else labels[i : i + b].to(dev).long()
            draw = _draw(
                model, b, cfg=cfg, top_k=top_k, top_p=top_p, temperature=temperature,
                generator=generator,
            )  # fmt: skip
            run = {"use_cache": use_cache, "guided": cfg > 0, "bar": bar}
            out.append(_scale_loop(model, quantizer, lab, b, draw, **run))  # (b, L)
    finally:
        bar.close()
        model.train(was_training)
    if not out:
        return torch.empty((0, model.seq_len), dtype=torch.long, device=dev)
    return torch.cat(out)


def _build_var(prior, tokens, quantizer) -> VAR:
    """The VAR of ``prior.*`` for a token file's K, scales and classes, over the code dimension
    of the tokenizer's ``quantizer``."""
    size = {"depth": prior.depth, "width": prior.width, "heads": prior.heads}
    return VAR(tokens.codebook_size, tokens.scales, quantizer.dim, tokens.num_classes,
               dropout=prior.dropout, **size)  # fmt: skip


def _sample_var(model, n, settings, prior, *, quantizer, **kwargs) -> torch.Tensor:
    return var_sample(
        model,
        quantizer,
        n,
        cfg=settings.cfg,
        top_k=settings.top_k,
        top_p=settings.top_p,
        temperature=settings.temperature,
        batch_size=settings.batch_size,
        **kwargs,
    )


PRIORS.register(
    "var",
    PriorEntry(
        build=_build_var,
        sample=_sample_var,
        needs_quantizer=True,
    ),
)
