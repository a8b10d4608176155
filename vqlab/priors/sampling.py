"""MaskGIT iterative decoding: start from MASK, reveal the most confident tokens over T steps.

At step t (ratio = (t+1)/T) every masked position gets a token sampled from
softmax(logits / temperature) over the K codes; its confidence is the log-probability of the
*sampled* token plus Gumbel noise x choice_temperature x (1 - ratio); known tokens get +inf.
Of the positions unknown at the start, floor(n0 * gamma(ratio)) stay masked (at least 1 while
more than one is unknown, and each step reveals at least one). The last step re-masks nothing
(the official code returns the buffer from before its last re-mask; a port that returns the
re-masked buffer leaves a MASK in the output).
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from vqlab.priors.maskgit import MaskGIT, uniform
from vqlab.priors.schedules import gamma, get_schedule
from vqlab.registry import PRIORS, PriorEntry


def model_device(model: torch.nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def sample_codes(
    logits: torch.Tensor, temperature: float, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (B, L, K) -> sampled ids (B, L) long and their log-probabilities (B, L).

    Inverse-CDF sampling with one uniform per position: exact, cheaper in random numbers than
    Gumbel-max, and, unlike ``torch.multinomial``, usable with a generator on another device.
    """
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)  # (B, L, K)
    cdf = logp.exp().cumsum(dim=-1)  # (B, L, K)
    u = uniform(cdf.shape[:-1], generator=generator, device=cdf.device) * cdf[..., -1]
    # right=True: the first code whose cdf exceeds u, so a code of probability 0 is never chosen
    ids = torch.searchsorted(cdf, u.unsqueeze(-1), right=True).squeeze(-1)
    ids = ids.clamp_(max=logits.shape[-1] - 1)  # u * total can round up to total
    return ids, logp.gather(-1, ids.unsqueeze(-1)).squeeze(-1)


def _guided_logits(
    model: MaskGIT, ids: torch.Tensor, labels: torch.Tensor | None, cfg: float
) -> torch.Tensor:
    """(B, L, K) logits; with cfg > 0, (1 + cfg) cond - cfg uncond from one doubled batch."""
    k = model.codebook_size
    if cfg == 0.0:
        return model(ids, labels)[..., :k]
    null = torch.full_like(labels, -1)
    both = model(torch.cat([ids, ids]), torch.cat([labels, null]))[..., :k]  # (2B, L, K)
    cond, uncond = both.chunk(2)
    return (1.0 + cfg) * cond - cfg * uncond


def _decode_batch(
    model: MaskGIT,
    ids: torch.Tensor,
    labels: torch.Tensor | None,
    *,
    steps: int,
    temperature: float,
    choice_temperature: float,
    cfg: float,
    schedule: str,
    generator: torch.Generator | None,
    bar: tqdm | None,
) -> torch.Tensor:
    """Decode one batch ids (B, L) long in [0, K] (K = MASK) -> (B, L) in [0, K)."""
    mask_id = model.mask_id
    n0 = (ids == mask_id).sum(dim=1)  # (B,) unknown at the start: what the schedule spreads
    for t in range(steps):
        unknown = ids == mask_id  # (B, L)
        logits = _guided_logits(model, ids, labels, cfg)
        sampled, logp = sample_codes(logits, temperature, generator)
        filled = torch.where(unknown, sampled, ids)
        if bar is not None:
            bar.update(1)
        if t == steps - 1:
            return filled  # the last step reveals everything: no re-mask
        ratio = (t + 1) / steps
        gumbel = -torch.log(-torch.log(_open_uniform(logp.shape, generator, logp.device)))
        noise = choice_temperature * (1.0 - ratio) * gumbel
        conf = torch.where(unknown, logp + noise, math.inf)  # known tokens are never re-masked
        n_unknown = unknown.sum(dim=1)  # (B,)
        keep = torch.floor(n0.double() * gamma(ratio, schedule)).long()
        # at least one stays masked and at least one is revealed; rows with none unknown: 0
        keep = torch.minimum(keep.clamp(min=1), n_unknown - 1).clamp(min=0)
        ranks = conf.argsort(dim=1).argsort(dim=1)  # (B, L): 0 = least confident
        ids = torch.where(ranks < keep[:, None], mask_id, filled)
    return ids  # steps == 0 is refused by the caller, so this is never reached


def _open_uniform(shape, generator, device) -> torch.Tensor:
    """U(0, 1) without the endpoints, so that -log(-log(u)) is finite."""
    eps = torch.finfo(torch.float32).eps
    return uniform(tuple(shape), generator=generator, device=device).clamp(eps, 1.0 - eps)


def check_labels(model: torch.nn.Module, n: int, labels: torch.Tensor | None, cfg: float) -> None:
    """The conditioning checks every sampler makes: (n,) labels for a model with classes, and
    labels whenever guidance is on."""
    if labels is not None and labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    if labels is not None and model.num_classes == 0:
        raise ValueError("labels given, but the model has no classes (num_classes=0)")
    if cfg > 0 and labels is None:
        raise ValueError("cfg > 0 needs labels (guidance is towards a class)")


def _check_args(model, n, labels, init_ids, steps, temperature, cfg, schedule) -> None:
    get_schedule(schedule)  # an unknown name fails before any model call
    if steps < 1 or temperature <= 0 or cfg < 0 or n < 0:
        raise ValueError(
            f"need steps >= 1, temperature > 0, cfg >= 0, n >= 0; got steps={steps}, "
            f"temperature={temperature}, cfg={cfg}, n={n}"
        )
    check_labels(model, n, labels, cfg)
    if init_ids is not None:
        if init_ids.shape != (n, model.seq_len):
            raise ValueError(f"init_ids must be ({n}, {model.seq_len}), got {init_ids.shape}")
        if init_ids.numel() and (init_ids.min() < 0 or init_ids.max() > model.mask_id):
            raise ValueError(f"init_ids must be in [0, {model.mask_id}] ({model.mask_id}=MASK)")


@torch.no_grad()
def maskgit_sample(
    model: MaskGIT,
    n: int,
    *,
    labels: torch.Tensor | None = None,
    init_ids: torch.Tensor | None = None,
    steps: int = 8,
    temperature: float = 1.0,
    choice_temperature: float = 4.5,
    cfg: float = 0.0,
    schedule: str = "cosine",
    generator: torch.Generator | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> torch.Tensor:
    """Sample ``n`` sequences -> LongTensor (n, L) of codes in [0, K), on the model's device.

    labels: (n,) long class ids (or -1 for the null class), None = unconditional (null class).
    init_ids: (n, L) long, known codes kept as they are and ``model.mask_id`` where to sample
    (inpainting); None = all MASK. cfg: constant guidance weight w (not ramped over steps),
    logits = (1 + w) cond - w uncond with the null class as uncond; cfg=0 runs no unconditional
    pass and is bit-identical to plain conditional sampling. The results for a seeded
    ``generator`` depend on ``batch_size`` (draws are made per batch, in order). The model is
    put in eval mode for the call and restored after.
    """
    _check_args(model, n, labels, init_ids, steps, temperature, cfg, schedule)
    dev = model_device(model)
    was_training = model.training
    model.eval()
    out = []
    n_batches = math.ceil(n / batch_size)
    bar = tqdm(total=n_batches * steps, desc="maskgit", disable=not progress)
    try:
        for i in range(0, n, batch_size):
            b = min(batch_size, n - i)
            if init_ids is None:
                ids = torch.full((b, model.seq_len), model.mask_id, dtype=torch.long, device=dev)
            else:
                ids = init_ids[i : i + b].to(dev).long()
            lab = None if labels is None else labels[i : i + b].to(dev).long()
            out.append(
                _decode_batch(
                    model,
                    ids,
                    lab,
                    steps=steps,
                    temperature=temperature,
                    choice_temperature=choice_temperature,
                    cfg=cfg,
                    schedule=schedule,
                    generator=generator,
                    bar=bar if progress else None,
                )
            )
    finally:
        bar.close()
        model.train(was_training)
    if not out:
        return torch.empty((0, model.seq_len), dtype=torch.long, device=dev)
    return torch.cat(out)


def _build_maskgit(prior, tokens, quantizer=None) -> MaskGIT:
    """The MaskGIT of ``prior.*`` for a token file's K, L and classes."""
    size = {"depth": prior.depth, "width": prior.width, "heads": prior.heads}
    return MaskGIT(tokens.codebook_size, tokens.seq_len, tokens.num_classes, dropout=prior.dropout,
                   **size)  # fmt: skip


def _sample_maskgit(model, n, settings, prior, *, quantizer=None, **kwargs) -> torch.Tensor:
    return maskgit_sample(
        model,
        n,
        steps=settings.steps,
        temperature=settings.temperature,
        choice_temperature=settings.choice_temperature,
        cfg=settings.cfg,
        schedule=prior.mask_schedule,
        batch_size=settings.batch_size,
        **kwargs,
    )


PRIORS.register(
    "maskgit",
    PriorEntry(
        build=_build_maskgit,
        sample=_sample_maskgit,
    ),
)
