"""VAR prior: next-scale prediction with a block-causal transformer over multi-scale token ids.

For the tokenizer's scales ``p_1 < ... < p_S`` the sequence has L = sum p_k^2 positions, coarse to
fine and row-major within a scale (the order of ``MultiScaleQuantizer`` indices). Position i of
scale s attends to every position of scales <= s (``attn_mask``), so all p_k^2 tokens of a scale
are predicted at once from the coarser ones. Inputs, per scale:

- scale 1: the class (start) embedding plus ``pos_start``, at each of its p_1^2 positions;
- scale k + 1: ``Linear(D, width)`` of ``area(f_hat after scales 1..k, p_{k+1})``, VAR's
  continuous teacher-forcing input (``MultiScaleQuantizer.teacher_forcing_input`` in training,
  ``next_scale_input`` in sampling: the same functions, so train and test inputs agree);

plus one level embedding per scale and a learned embedding per position. The output is logits
over the K codes at every position.

Class conditioning follows VAR and uses both routes. The class embedding (C + 1 rows, the last one
the null class of classifier-free guidance) is the start input of the first scale, and it drives
AdaLN in every block: ``SiLU -> Linear(width, 6 width)`` gives shift, scale and gate for attention
and MLP, and a last AdaLN before the head. A start token alone conditions the finer scales only
through attention; with AdaLN every position of every scale sees the class directly, which is
what guidance at the fine scales needs. The AdaLN linears start at zero and the gates act as
``1 + gate``, so at init each block is a plain pre-LN block (VAR starts its gates near zero; a
plain start trains faster at the small sizes used here). Labels follow the MaskGIT prior: (B,)
long in [0, C), -1 for the null class, None for all null.

The tokenizer's quantizer is not part of this module: the loss, the eval and the sampler take it
as an argument (frozen, used under ``no_grad``), so a prior checkpoint holds only the prior.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from vqlab.priors.maskgit import uniform


def block_causal_mask(scales: tuple[int, ...]) -> torch.Tensor:
    """(L, L) bool, True where query i may attend key j: level(j) <= level(i), L = sum p^2."""
    level = torch.cat([torch.full((p * p,), k) for k, p in enumerate(scales)])  # (L,)
    return level[None, :] <= level[:, None]


class KVCache:
    """Keys and values of the positions already run, per block, each (B, H, n, W/H)."""

    def __init__(self, depth: int) -> None:
        self.keys: list[torch.Tensor | None] = [None] * depth
        self.values: list[torch.Tensor | None] = [None] * depth

    def extend(self, i: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append block i's new (B, H, n, W/H) keys and values; return all of them so far."""
        if self.keys[i] is not None:
            k = torch.cat([self.keys[i], k], dim=2)
            v = torch.cat([self.values[i], v], dim=2)
        self.keys[i], self.values[i] = k, v
        return k, v


class AdaLNBlock(nn.Module):
    """x + (1 + g1) Attn(LN(x)(1 + s1) + b1), then the same for the MLP; (s, b, g) from cond."""

    def __init__(self, width: int, heads: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads, self.dropout = heads, dropout
        # no affine: AdaLN supplies the scale and shift per class
        self.ln1 = nn.LayerNorm(width, elementwise_affine=False)
        self.ln2 = nn.LayerNorm(width, elementwise_affine=False)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.mlp = nn.Sequential(
            nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width)
        )
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        cond: torch.Tensor,
        mask: torch.Tensor | None,
        cache: KVCache | None = None,
        index: int = 0,
    ) -> torch.Tensor:
        """x (B, n, W), cond (B, W), mask (n, m) bool or None (all visible) -> (B, n, W).

        With ``cache``, the keys and values of block ``index`` are appended to it and the
        queries see the m = cached + n positions.
        """
        b, n, w = x.shape
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(cond)[:, None].chunk(6, dim=-1)
        h = self.ln1(x) * (1.0 + scale1) + shift1
        q, k, v = self.qkv(h).view(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        if cache is not None:
            k, v = cache.extend(index, k, v)  # each (B, H, m, W/H)
        p = self.dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, H, n, W/H)
        x = x + (1.0 + gate1) * self.drop(self.proj(a.transpose(1, 2).reshape(b, n, w)))
        h = self.ln2(x) * (1.0 + scale2) + shift2
        return x + (1.0 + gate2) * self.drop(self.mlp(h))


class VAR(nn.Module):
    """Block-causal next-scale transformer over L = sum p_k^2 ids with K codes and C classes.

    Args:
        codebook_size: K. scales: the tokenizer's side lengths p_1 < ... < p_S.
        latent_dim: D of the tokenizer's quantizer (the teacher-forcing inputs' width).
        num_classes: C (0: unconditional; only the null row exists).
        depth, width, heads, dropout, mlp_ratio: the transformer.
    """

    kind = "var"  # its name in vqlab.registry.PRIORS

    def __init__(
        self,
        codebook_size: int,
        scales: tuple[int, ...],
        latent_dim: int,
        num_classes: int = 0,
        depth: int = 4,
        width: int = 256,
        heads: int = 4,
        dropout: float = 0.1,
        mlp_ratio: int = 4,
    ) -> None:
        super().__init__()
        scales = tuple(int(p) for p in scales)
        if not scales or any(p < 1 for p in scales) or list(scales) != sorted(set(scales)):
            raise ValueError(f"scales must be increasing positive ints; got {scales}")
        if codebook_size < 1 or latent_dim < 1 or num_classes < 0 or depth < 1:
            raise ValueError(
                f"need codebook_size >= 1, latent_dim >= 1, num_classes >= 0, depth >= 1; got "
                f"{codebook_size}, {latent_dim}, {num_classes}, {depth}"
            )
        self.codebook_size, self.scales, self.latent_dim = codebook_size, scales, latent_dim
        self.num_classes, self.depth = num_classes, depth
        # what a checkpoint needs to rebuild the module: VAR(**model.hparams)
        self.hparams = dict(
            codebook_size=codebook_size, scales=scales, latent_dim=latent_dim,
            num_classes=num_classes, depth=depth, width=width, heads=heads, dropout=dropout,
            mlp_ratio=mlp_ratio,
        )  # fmt: skip
        self.seq_len = sum(p * p for p in scales)
        self.offsets = [0]  # start position of each scale in the sequence
        for p in scales:
            self.offsets.append(self.offsets[-1] + p * p)
        self.class_emb = nn.Embedding(num_classes + 1, width)  # row C: the null class
        self.pos_start = nn.Parameter(torch.zeros(1, scales[0] ** 2, width))
        self.pos_emb = nn.Parameter(torch.zeros(1, self.seq_len, width))
        self.level_emb = nn.Embedding(len(scales), width)
        self.word_embed = nn.Linear(latent_dim, width)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            AdaLNBlock(width, heads, mlp_ratio, dropout) for _ in range(depth)
        )
        self.ln_f = nn.LayerNorm(width, elementwise_affine=False)
        self.head_ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.head = nn.Linear(width, codebook_size)  # exactly K outputs: no special id sampled
        # a buffer (not persistent: rebuilt from scales) so it follows .to(device)
        self.register_buffer("attn_mask", block_causal_mask(scales), persistent=False)
        self._init_weights(width)

    def _init_weights(self, width: int) -> None:
        for m in self.modules():
            # GPT-2 style small init: logits start near uniform, so the first loss is ~log K
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        for ada in [b.ada for b in self.blocks] + [self.head_ada]:
            nn.init.zeros_(ada[-1].weight)  # AdaLN starts as the identity modulation
        for p in (self.pos_start, self.pos_emb):
            nn.init.normal_(p, std=1.0 / math.sqrt(3 * width))

    @property
    def null_class(self) -> int:
        """Row of ``class_emb`` that means "no class" (dropped label, unconditional, CFG)."""
        return self.num_classes

    def condition(self, labels: torch.Tensor | None, batch: int) -> torch.Tensor:
        """labels (B,) long in [0, C) or -1, or None (all null) -> class embeddings (B, W)."""
        dev = self.class_emb.weight.device
        if labels is None:
            rows = torch.full((batch,), self.null_class, dtype=torch.long, device=dev)
        elif self.num_classes == 0:
            raise ValueError("labels given to a VAR built with num_classes=0")
        else:
            labels = labels.to(device=dev, dtype=torch.long)
            if labels.shape != (batch,) or bool((labels >= self.num_classes).any()):
                raise ValueError(f"labels must be ({batch},) in [-1, {self.num_classes})")
            rows = torch.where(labels < 0, self.null_class, labels)
        return self.class_emb(rows)

    def embed_scale(self, k: int, x: torch.Tensor | None, cond: torch.Tensor) -> torch.Tensor:
        """Scale k's (0-based) inputs -> (B, p_k^2, W). k = 0: x is None and the start input is
        the class embedding cond (B, W); k > 0: x (B, p_k^2, D), the teacher-forcing input."""
        p = self.scales[k]
        if k == 0:
            h = cond[:, None, :] + self.pos_start  # (B, p_1^2, W)
        else:
            if x is None or x.shape[1:] != (p * p, self.latent_dim):
                got = None if x is None else tuple(x.shape)
                raise ValueError(f"scale {k} needs inputs (B, {p * p}, {self.latent_dim}); {got}")
            h = self.word_embed(x.to(self.word_embed.weight.dtype))
        start, end = self.offsets[k], self.offsets[k + 1]
        return h + self.level_emb.weight[k] + self.pos_emb[:, start:end]

    def run(
        self, h: torch.Tensor, cond: torch.Tensor, cache: KVCache | None = None
    ) -> torch.Tensor:
        """Embedded inputs h (B, n, W), cond (B, W) -> logits (B, n, K).

        Without ``cache``, h is the prefix of the sequence from position 0 and the block-causal
        mask applies. With ``cache``, h is one whole scale right after the cached positions: it
        sees all of them and itself, so no mask is needed (and flash attention stays usable).
        """
        mask = None if cache is not None else self.attn_mask[: h.shape[1], : h.shape[1]]
        h = self.drop(h)
        for i, block in enumerate(self.blocks):
            h = block(h, cond, mask, cache, i)
        shift, scale = self.head_ada(cond)[:, None].chunk(2, dim=-1)
        return self.head(self.ln_f(h) * (1.0 + scale) + shift)

    def sample(self, n: int, settings, prior, **kwargs) -> torch.Tensor:
        """``n`` sequences (n, L) scale by scale with the ``sample.*`` ``settings``
        (:func:`vqlab.priors.var_sampling.var_sample`); ``kwargs``: ``labels``, ``generator``,
        ``progress`` and ``quantizer``, the tokenizer's frozen multi-scale quantizer."""
        from vqlab.registry import PRIORS

        return PRIORS.get(self.kind).sample(self, n, settings, prior, **kwargs)

    def forward(self, x_in: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits. x_in (B, L - p_1^2, D): ``quantizer.teacher_forcing_input(ids)``;
        labels (B,) in [0, C) or -1, or None. Returns logits (B, L, K) over the codes."""
        b = x_in.shape[0]
        if x_in.dim() != 3 or x_in.shape[1] != self.seq_len - self.scales[0] ** 2:
            raise ValueError(
                f"x_in must be (B, {self.seq_len - self.scales[0] ** 2}, {self.latent_dim}); "
                f"got {tuple(x_in.shape)}"
            )
        cond = self.condition(labels, b)
        parts = torch.split(x_in, [p * p for p in self.scales[1:]], dim=1)
        h = [self.embed_scale(0, None, cond)]
        h += [self.embed_scale(k + 1, x, cond) for k, x in enumerate(parts)]
        return self.run(torch.cat(h, dim=1), cond)  # (B, L, K)


def check_quantizer(model: VAR, quantizer: nn.Module) -> None:
    """Refuse a quantizer whose scales, K or D differ from the prior's."""
    got = (tuple(getattr(quantizer, "scales", ())), quantizer.codebook_size, quantizer.dim)
    want = (model.scales, model.codebook_size, model.latent_dim)
    if got != want:
        raise ValueError(f"quantizer (scales, K, D) = {got} does not fit the VAR prior's {want}")


@torch.no_grad()
def teacher_inputs(quantizer: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """ids (B, L) -> (B, L - p_1^2, D): the frozen quantizer's teacher-forcing inputs."""
    return quantizer.teacher_forcing_input(ids.long())


class VARLoss(NamedTuple):
    loss: torch.Tensor  # scalar, with grad
    accuracy: torch.Tensor  # scalar, detached: argmax == target over all L positions


def var_loss(
    model: VAR,
    quantizer: nn.Module,
    ids: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    label_smoothing: float = 0.0,
    class_dropout: float = 0.1,
    generator: torch.Generator | None = None,
) -> VARLoss:
    """VAR training loss on ids (B, L) in [0, K) and labels (B,) (or None / -1 = none).

    Cross-entropy (with ``label_smoothing``) averaged over all B * L positions, as VAR. Labels
    are dropped to the null class with probability ``class_dropout`` (one draw (B,) from
    ``generator``, only for a class-conditional model given labels). A model with
    num_classes=0 ignores ``labels`` (a token file without labels carries -1 everywhere).
    """
    check_quantizer(model, quantizer)
    b = ids.shape[0]
    target = ids.long()
    if model.num_classes == 0:
        labels = None
    if labels is not None and class_dropout > 0:
        drop = uniform((b,), generator=generator, device=ids.device) < class_dropout
        labels = torch.where(drop, -1, labels.to(ids.device).long())
    logits = model(teacher_inputs(quantizer, target), labels)  # (B, L, K)
    loss = F.cross_entropy(logits.flatten(0, 1), target.flatten(), label_smoothing=label_smoothing)
    with torch.no_grad():
        acc = (logits.argmax(-1) == target).float().mean()
    return VARLoss(loss, acc)


@torch.no_grad()
def evaluate_var(
    model: VAR,
    quantizer: nn.Module,
    ids: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    batch_size: int = 256,
) -> dict[str, float]:
    """Held-out teacher-forced metrics on ids (N, L), labels (N,): deterministic (eval mode, no
    smoothing, no class dropout). ``val_loss`` is the mean CE over all N * L positions,
    ``val_accuracy`` the argmax accuracy, ``val_perplexity`` = exp(val_loss)."""
    check_quantizer(model, quantizer)
    n = ids.shape[0]
    if n == 0:
        raise ValueError("evaluate_var got no rows (an empty test split?)")
    dev = model.head.weight.device
    was_training = model.training
    model.eval()
    total_ce, correct = 0.0, 0
    try:
        for i in range(0, n, batch_size):
            x = ids[i : i + batch_size].to(dev).long()
            lab = None if labels is None or model.num_classes == 0 else labels[i : i + batch_size]
            logits = model(teacher_inputs(quantizer, x), lab)
            total_ce += F.cross_entropy(logits.flatten(0, 1), x.flatten(), reduction="sum").item()
            correct += (logits.argmax(-1) == x).sum().item()
    finally:
        model.train(was_training)
    loss = total_ce / ids.numel()
    return {
        "val_loss": loss,
        "val_accuracy": correct / ids.numel(),
        "val_perplexity": math.exp(loss),
    }
